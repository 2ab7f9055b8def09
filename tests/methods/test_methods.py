"""The method contract: one YAML and one registered class each; variants keep their names; the
loop hooks (LoRA+'s parameter groups, AdaLoRA's allocator) reach the engine without it naming them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.errors import UserError
from finetune.methods import METHODS
from finetune.report import collect
from finetune.runner import execute

from conftest import skip_if_known_upstream_break, finetune, tiny_args


@pytest.mark.parametrize("kind", sorted(set(METHODS) - {"peft"}))  # peft's YAMLs are named after their types
def test_every_registered_kind_has_a_yaml_of_its_own_name(compose_plan, kind):
    with skip_if_known_upstream_break():  # prefix_tuning on MiniLM's head with transformers 5.24 (finetune.compat)
        plan = compose_plan(f"method={kind}")
    assert (plan.run.method.name, plan.run.method.kind) == (kind, kind)


def test_an_unknown_kind_is_a_one_line_error(compose_plan):
    with pytest.raises(UserError, match="^method.kind: no method of kind 'bitfit'; known: adalora, full, "):
        compose_plan("method=lora", "method.kind=bitfit")


def test_dora_is_lora_with_use_dora_and_keeps_its_name(tiny_plan):
    plan = tiny_plan("method=dora", "train.max_steps=2")
    results = execute(plan)
    adapter = json.loads((Path(plan.run.output_dir) / "model" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["use_dora"] is True
    assert results.method == "dora" and results.config["method"]["kind"] == "lora"


def test_lora_plus_trains_the_b_matrices_at_a_multiple_of_the_learning_rate(tiny_plan, tiny_bert):
    from transformers import AutoModelForSequenceClassification


    plan = tiny_plan("method=lora_plus", "method.loraplus_lr_ratio=8", "train.lr=1e-3")
    method = plan.method
    task = plan.kind.build(plan.run, None, ("0", "1"))
    model = method.prepare(AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2),
                           plan.run.model, task, total_steps=4)
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    groups = method.parameter_groups(model, plan.run.train)
    rate = {names[id(parameter)]: group["lr"] for group in groups for parameter in group["params"]}
    assert {rate[name] for name in rate if "lora_B" in name} == {8e-3}
    assert {rate[name] for name in rate if "lora_A" in name} == {1e-3}
    assert set(rate) == {name for name, parameter in model.named_parameters() if parameter.requires_grad}


def test_adalora_prunes_ranks_to_its_budget_during_training(tiny_plan):
    plan = tiny_plan("method=adalora", "method.init_r=6", "method.target_r=2", "train.epochs=2")
    results = execute(plan)
    adapter = json.loads((Path(plan.run.output_dir) / "model" / "adapter_config.json").read_text())
    kept = [sum(mask) for mask in adapter["rank_pattern"].values()]
    assert results.status == "completed" and kept
    assert sum(kept) == 2 * len(kept)  # the budget: target_r per matrix on average, from init_r = 6
    assert max(kept) <= 6


def test_a_variant_keeps_its_name_in_results_run_dirs_and_the_report(tiny_bert, sentiment_dir, tmp_path):
    sweep = tmp_path / "sweep"
    result = finetune("-m", *tiny_args(tiny_bert, sentiment_dir), "method=lora,lora_alpha32", "train.max_steps=1",
                      "dataset.max_train_samples=16", "dataset.max_eval_samples=16", f"hydra.sweep.dir={sweep}",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(path.name for path in sweep.iterdir() if path.is_dir() and not path.name.startswith(".")) == [
        "000_bert_lora_local", "001_bert_lora_alpha32_local"]
    assert {row["method"] for row in collect([sweep])[0]} == {"lora", "lora_alpha32"}


def test_head_only_is_refused_where_the_task_generates_text(compose_plan, tiny_model, article_dir):
    with pytest.raises(UserError, match="^method: head_only trains a new classification head; a task that generates"):
        compose_plan("model=flan_t5", "method=head_only", "dataset=cnn_dailymail", f"dataset.path={article_dir}")


def test_a_method_is_one_registered_class_the_engine_runs_without_naming_it(tiny_plan):
    import dataclasses

    from finetune.methods import Method, MethodSpec, register
    from finetune.plan import plan as plan_of

    @dataclasses.dataclass(frozen=True)
    class BitFitSpec(MethodSpec):
        kind: str = "bitfit"

    calls: list[tuple] = []

    class BitFit(Method):  # the docs' example, with the loop's hook recorded
        spec_class = BitFitSpec

        def prepare(self, model, family, task, total_steps):
            calls.append(("prepare", total_steps))
            for name, parameter in model.named_parameters():
                parameter.requires_grad_(name.endswith("bias") or name.split(".")[0] in family.head)
            return model

        def after_optimizer_step(self, model, step):
            calls.append(("after_optimizer_step", step))

    register(BitFit)
    try:
        bitfit = plan_of(dataclasses.replace(tiny_plan("train.max_steps=2", "train.grad_accum=2").run,
                                             method=BitFitSpec(name="bitfit")))
        results = execute(bitfit)
    finally:
        del METHODS["bitfit"]
    assert results.status == "completed" and results.method == "bitfit"
    assert 0 < results.params["trainable"] < results.params["total"] / 10
    assert calls == [("prepare", 2), ("after_optimizer_step", 1), ("after_optimizer_step", 2)]


def test_target_modules_that_match_nothing_name_the_models_linear_layers(tiny_plan):
    with pytest.raises(UserError, match=r"^method.target_modules: no module of BertForSequenceClassification is named "
                                        r"\['nonexistent'\]; its linear layers: .*query"):
        execute(tiny_plan("method=lora", "method.target_modules=[nonexistent]", "train.max_steps=1"))
