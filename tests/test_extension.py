"""Extension points stay extension points: only a task kind's module names the kind, and only a
method's module names the method (finetune.compat's list of known upstream breaks aside); and
what docs/extending.md says a new method, task kind or family takes is all it takes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from finetune.methods import METHODS
from finetune.tasks import TASK_KINDS

from conftest import tiny_overrides

SOURCE = Path(__file__).parent.parent / "finetune"


def _naming(names: list[str], outside: str, allowed: tuple[str, ...] = (), default: str = "^$") -> list[str]:
    """Lines of modules outside `outside` (and `allowed`) that quote one of `names`, except the
    line matching `default` (a schema's default value)."""
    quoted = re.compile("|".join(f"[\"']{re.escape(name)}[\"']" for name in names))
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE).as_posix()
        if relative.startswith(outside) or relative in allowed:
            continue
        found += [f"{relative}:{number}" for number, line in enumerate(path.read_text().splitlines(), 1)
                  if quoted.search(line) and not re.search(default, line)]
    return found


def test_no_module_outside_finetune_tasks_switches_on_a_task_kind():
    assert {"classification", "multilabel", "summarization", "image_classification"} <= set(TASK_KINDS)
    assert _naming(sorted(TASK_KINDS), "tasks/", default=r'^    task: str = "classification"') == []


def test_no_module_outside_finetune_methods_names_a_method():
    # "none" is also just a word (a label set's empty target), "peft" the library's name
    named = sorted(set(METHODS) - {"none", "peft"})
    assert _naming(named, "methods/", allowed=("compat.py",)) == []


METHOD_YAML = """# @package _global_
defaults:
  - /schema/method/bitfit@method
  - _self_
method:
  name: bitfit
train:
  lr: 1e-3
"""
FAMILY_YAML = """defaults:
  - bert
  - _self_
name: tinybert
hub_id: prajjwal1/bert-tiny
"""


@pytest.fixture
def more_conf(tmp_path):
    """A config folder of a user's own, searched after conf/ (hydra.searchpath), holding a method
    YAML and a family YAML: the files docs/extending.md names."""
    (tmp_path / "conf" / "method").mkdir(parents=True)
    (tmp_path / "conf" / "model").mkdir()
    (tmp_path / "conf" / "method" / "bitfit.yaml").write_text(METHOD_YAML)
    (tmp_path / "conf" / "model" / "tinybert.yaml").write_text(FAMILY_YAML)
    return f"hydra.searchpath=[file://{tmp_path / 'conf'}]"


def test_a_new_method_is_a_yaml_and_one_registered_class(more_conf, compose_plan, tiny_bert, sentiment_dir):
    import dataclasses

    from finetune.methods import METHODS, Method, MethodSpec, register
    from finetune.plan import register_configs
    from finetune.runner import execute

    @dataclasses.dataclass(frozen=True)
    class BitFitSpec(MethodSpec):
        kind: str = "bitfit"

    @register
    class BitFit(Method):  # docs/extending.md's example
        spec_class = BitFitSpec

        def prepare(self, model, family, task, total_steps):
            for name, parameter in model.named_parameters():
                parameter.requires_grad_(name.endswith("bias") or name.split(".")[0] in family.head)
            return model

    try:
        register_configs()  # what importing the method's module before the CLI composes does
        plan = compose_plan(more_conf, "method=bitfit", *tiny_overrides(tiny_bert, sentiment_dir), "train.max_steps=2")
        results = execute(plan)
    finally:
        del METHODS["bitfit"]
    assert results.status == "completed" and results.method == "bitfit"
    assert 0 < results.params["trainable"] < results.params["total"] / 10


def test_a_new_family_is_one_yaml(more_conf, compose_plan, tiny_bert, sentiment_dir):
    from finetune.runner import execute

    plan = compose_plan(more_conf, "model=tinybert", *tiny_overrides(tiny_bert, sentiment_dir)[1:], "train.max_steps=1")
    assert plan.run.model.name == "tinybert" and plan.run.model.layers == "bert.encoder.layer"
    assert execute(plan).status == "completed"


def test_a_new_task_kind_is_one_registered_module(compose_plan, tiny_bert, sentiment_dir):
    from finetune.runner import execute
    from finetune.tasks import register_task
    from finetune.tasks.classification import Classification

    @register_task
    class Sentiment(Classification):  # a module in finetune/tasks/ is imported and registered the same way
        name = "sentiment"

    try:
        plan = compose_plan(*tiny_overrides(tiny_bert, sentiment_dir), "dataset.task=sentiment", "train.max_steps=1")
        results = execute(plan)
    finally:
        del TASK_KINDS["sentiment"]
    assert plan.kind is not TASK_KINDS["classification"] and results.status == "completed"
    assert results.task == "sentiment" and "accuracy" in results.metrics["test"]
