"""The training loop (finetune.engine) on a tiny random BERT: it learns, keeps the best epoch, stops early, counts its steps, logs its curves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from finetune.runner import execute

from conftest import split_metrics
from finetune.errors import RunError


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


def test_accumulating_more_batches_than_an_epoch_has_is_said(tiny_plan, caplog):
    execute(tiny_plan("train.grad_accum=100", "train.epochs=1"))  # 10 batches an epoch
    assert "train.grad_accum=100 is more than the 10 batches of an epoch" in caplog.text


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_the_last_good_checkpoint(tiny_plan, tmp_path):
    plan = tiny_plan("train.lr=1e30", "train.max_grad_norm=0", "train.warmup_ratio=0", "train.save_every_steps=1",
                   output_dir=tmp_path)
    with pytest.raises(RunError, match=r"NaN or infinite at step (\d+); the last good checkpoint is .*step-0+\d+"):
        execute(plan)
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["status"] == "failed" and "NaN or infinite" in record["error"]


def test_skip_nonfinite_skips_such_batches_instead_of_stopping(tiny_plan, monkeypatch):
    from transformers import BertForSequenceClassification

    real_forward = BertForSequenceClassification.forward
    calls = {"n": 0}

    def sometimes_nan(self, *args, **kwargs):
        output = real_forward(self, *args, **kwargs)
        calls["n"] += 1
        if self.training and calls["n"] in (2, 5):
            output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(BertForSequenceClassification, "forward", sometimes_nan)
    results = execute(tiny_plan("train.skip_nonfinite=true", "train.epochs=1"))
    assert results.status == "completed" and results.training["skipped_batches"] == 2
    assert results.metrics["test"]["loss"] == results.metrics["test"]["loss"]  # not NaN


@pytest.mark.parametrize("family,method", [("bert", "full"), ("bert", "lora"), ("llama", "loha")])
def test_gradient_checkpointing_recomputes_the_blocks_and_trains_to_the_same_loss(family_plan, family, method, monkeypatch):
    import transformers.modeling_utils as modeling

    recomputed = []
    real_checkpoint = modeling.checkpoint  # torch.utils.checkpoint's, as transformers imported it
    monkeypatch.setattr(modeling, "checkpoint", lambda *args, **kwargs: recomputed.append(1) or real_checkpoint(*args, **kwargs))
    settings = ("train.epochs=2", "train.log_every_steps=1")
    plain = execute(family_plan(family, method, *settings))
    assert not recomputed
    checkpointed = execute(family_plan(family, method, *settings, "train.gradient_checkpointing=true"))
    assert recomputed  # the blocks ran through torch.utils.checkpoint
    assert len(plain.training["train_loss"]) == 4  # every step (2 an epoch), dropout on: the same masks recomputed
    losses = [loss for _, loss in plain.training["train_loss"]]
    assert [loss for _, loss in checkpointed.training["train_loss"]] == pytest.approx(losses, rel=1e-4)
    assert checkpointed.metrics["test"]["loss"] == pytest.approx(plain.metrics["test"]["loss"], rel=1e-4)
