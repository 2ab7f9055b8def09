"""Every model family x every method on tiny random models: train, evaluate, save, reload, same predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.errors import UserError
from finetune.runner import execute

from conftest import FAMILIES, MODERN_FAMILIES, NETWORK_METHODS, skip_if_known_upstream_break, split_metrics

REFUSED = {
    ("albert", "prefix_tuning"): "ALBERT's attention takes no past key/values",
    ("distilbert", "prefix_tuning"): "DistilBERT's attention takes no past key/values",
    ("modernbert", "prefix_tuning"): "ModernBERT's attention takes no past key/values",
}


@pytest.mark.parametrize("family,method", [(f, m) for f in FAMILIES + MODERN_FAMILIES for m in NETWORK_METHODS
                                           if (f, m) not in REFUSED])
def test_family_method_trains_saves_and_reloads(family_plan, family, method):
    with skip_if_known_upstream_break():
        plan = family_plan(family, method)
    results = execute(plan)

    assert results.status == "completed"
    params = results.params
    assert params["total"] > 0
    if method == "none":
        assert params["trainable"] == 0
    elif method == "full":
        assert params["trainable"] == params["total"]
    else:
        assert 0 < params["trainable"] < params["total"]
    if method != "none":
        assert results.training["optimizer_steps"] == 2
    if method in ("head_only", "none"):  # every family's frozen network runs once per split (feature cache)
        assert set(results.frozen_features) == {"validation", "test"} | ({"train"} if method == "head_only" else set())

    reloaded = split_metrics(plan)
    assert reloaded["accuracy"] == results.metrics["test"]["accuracy"]
    assert reloaded["loss"] == pytest.approx(results.metrics["test"]["loss"], abs=1e-4)
    saved_config = json.loads((Path(plan.run.output_dir) / "model" / "config.json").read_text())
    assert saved_config["id2label"] == {"0": "negative", "1": "positive"}


@pytest.mark.parametrize("family,method", sorted(REFUSED))
def test_methods_a_family_cannot_take_are_refused_before_loading(family_plan, family, method):
    with pytest.raises(UserError, match=f"^method: {method} does not apply to model={family}: {REFUSED[family, method]}"):
        family_plan(family, method)


def test_flan_t5_prompt_tuning_classifies_text_to_text(family_plan):
    plan = family_plan("flan_t5", "prompt_tuning")
    results = execute(plan)
    adapter = json.loads((Path(plan.run.output_dir) / "model" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_2_SEQ_LM"
    assert set(results.metrics["test"]) == {"accuracy", "macro_precision", "macro_recall", "macro_f1", "loss"}


def test_albert_last_layers_trains_the_shared_layer_whatever_num_layers(family_plan):
    one = execute(family_plan("albert", "last_layers", "method.num_layers=1", "train.max_steps=1")).params
    five = execute(family_plan("albert", "last_layers", "method.num_layers=5", "train.max_steps=1")).params
    head = execute(family_plan("albert", "head_only", "train.max_steps=1")).params
    assert one == five and one["trainable"] > head["trainable"]


def test_gpt_neo_pads_with_end_of_text_and_pools_the_last_real_token(family_plan, tiny_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finetune.loading import load_trained

    plan = family_plan("gpt_neo", "full", "train.max_steps=1")
    execute(plan)
    model_dir = Path(plan.run.output_dir) / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_trained(model_dir, AutoModelForSequenceClassification)
    assert tokenizer.pad_token == "<|endoftext|>" and model.config.pad_token_id == 50256
    import torch

    alone = tokenizer(["a good film"], return_tensors="pt")
    padded = tokenizer(["a good film", "a much longer and quite boring film"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.allclose(model(**alone).logits[0], model(**padded).logits[0], atol=1e-5)
