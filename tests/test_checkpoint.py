"""Checkpoints: a run that crashed after one resumes to identical metrics; a checkpoint of another config is refused; results are written whole or not at all."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from safetensors.torch import load_file

from finetune.files import write_json_atomic
from finetune.checkpoint import Checkpoints
from finetune.errors import UserError
from finetune.runner import execute

from conftest import SimulatedCrash, crash_after_checkpoint


@pytest.mark.parametrize(
    "settings,crash_step",
    [
        # mid-way through epoch 2 (5 optimizer steps an epoch)
        (("train.epochs=2", "train.save_every_steps=3", "train.grad_accum=2", "method=lora"), 6),
        # right after the last step (max_steps, mid-epoch), before that epoch was evaluated
        (("train.epochs=2", "train.max_steps=7", "train.save_every_steps=7", "train.grad_accum=2"), 7),
        # mid-way through epoch 1 of 2: the epoch after the resumed one must get its own batch order
        (("train.epochs=2", "train.save_every_steps=3"), 6),
        # on cached frozen features: the crashed and the resumed run read the set the reference computed
        (("train.epochs=2", "train.save_every_steps=3", "method=last_layers", "method.num_layers=1"), 6),
    ],
)
def test_a_run_that_crashed_after_a_checkpoint_resumes_to_identical_metrics(tiny_plan, tmp_path, monkeypatch,
                                                                           settings, crash_step):
    reference = execute(tiny_plan(*settings, output_dir=tmp_path / "reference"))

    crashed_dir = tmp_path / "crashed"
    with crash_after_checkpoint(monkeypatch, crash_step), pytest.raises(SimulatedCrash):
        execute(tiny_plan(*settings, output_dir=crashed_dir))
    assert json.loads((crashed_dir / "results.json").read_text())["status"] == "failed"

    resumed = execute(tiny_plan(*settings, output_dir=crashed_dir))
    assert resumed.training["resumed_from_step"] == crash_step
    assert resumed.metrics == reference.metrics  # bitwise on the CPU
    # every epoch, not only the best one the metrics come from: epochs after the resumed one see the same batches
    assert resumed.training["validation_curve"] == reference.training["validation_curve"]
    for key in ("optimizer_steps", "epochs_run", "best_epoch"):
        assert resumed.training[key] == reference.training[key]
    assert len(list((crashed_dir / "checkpoints").glob("step-*"))) == 2  # train.keep_checkpoints


def test_adalora_resumes_exactly_because_its_allocator_state_is_checkpointed(tiny_plan, tmp_path, monkeypatch):
    from finetune.methods.adapters import AdaLora

    # 10 optimizer steps, a checkpoint after each; ranks are pruned from step 2 to 8; the crash comes at step 6
    settings = ("method=adalora", "train.epochs=2", "train.save_every_steps=1", "train.keep_checkpoints=20",
                "train.grad_accum=2")

    def step_7(output: Path) -> tuple[dict, dict]:
        """The trainable weights and the allocator state one step after the crash."""
        checkpoint = output / "checkpoints" / "step-00000007"
        return load_file(str(checkpoint / "trainable.safetensors")), Checkpoints.method_state(checkpoint)

    def crash_at_step_6_and_resume(output: Path) -> None:
        with crash_after_checkpoint(monkeypatch, 6), pytest.raises(SimulatedCrash):
            execute(tiny_plan(*settings, output_dir=output))
        execute(tiny_plan(*settings, output_dir=output))

    execute(tiny_plan(*settings, output_dir=tmp_path / "reference"))
    weights, allocator = step_7(tmp_path / "reference")
    assert any(key.startswith("exp_avg_ipt/") for key in allocator)  # mid-budgeting: the smoothed scores
    final = Checkpoints.method_state(Checkpoints(tmp_path / "reference" / "checkpoints", keep=20).latest())
    assert final and all(key.startswith("rank_pattern/") for key in final)  # scores are reset once ranks are final

    crash_at_step_6_and_resume(tmp_path / "resumed")
    resumed_weights, resumed_allocator = step_7(tmp_path / "resumed")
    assert all(resumed_weights[key].equal(weights[key]) for key in weights)  # bitwise on the CPU
    assert resumed_allocator.keys() == allocator.keys()
    assert all(resumed_allocator[key].equal(allocator[key]) for key in allocator)

    monkeypatch.setattr(AdaLora, "load_state_dict", lambda self, state, model: None)  # the allocator starts afresh
    crash_at_step_6_and_resume(tmp_path / "forgetful")
    _, forgetful_allocator = step_7(tmp_path / "forgetful")
    assert not all(forgetful_allocator[key].equal(allocator[key]) for key in allocator)


def test_resuming_with_another_config_is_refused(tiny_plan, tmp_path):
    execute(tiny_plan("train.epochs=1", output_dir=tmp_path))
    with pytest.raises(UserError, match="its checkpoints belong to another config"):
        execute(tiny_plan("train.epochs=1", "train.lr=1e-4", output_dir=tmp_path))


def test_a_crash_while_writing_results_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"status": "running"})

    def disk_full(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        write_json_atomic(path, {"status": "completed", "metrics": {"test": {"accuracy": 1.0}}})
    assert json.loads(path.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
