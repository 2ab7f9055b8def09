"""Checkpoints and resume: a crashed, killed or preempted run continues to the same result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from finetune.files import write_json_atomic
from finetune.checkpoint import Checkpoints
from finetune.errors import RunError, UserError
from finetune.runner import execute

from conftest import SimulatedCrash, crash_after_checkpoint, start_and_wait_for_checkpoint


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


def cli(tiny_bert: Path, data: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "finetune", "model=bert", f"model.path={tiny_bert}", "model.max_length=32",
            "dataset=local", f"dataset.path={data}", "hardware=cpu", "train.batch_size=8", "train.lr=1e-3",
            "train.epochs=1", "train.save_every_steps=20", f"hydra.run.dir={run_dir}"]


@pytest.fixture(scope="module")
def uninterrupted(tiny_bert, longer_data, tmp_path_factory) -> dict:
    """results.json of the run the killed ones must end up equal to (one process start for both signals)."""
    reference_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert subprocess.run(cli(tiny_bert, longer_data, reference_dir), capture_output=True).returncode == 0
    return json.loads((reference_dir / "results.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_killed_preempted_or_ctrl_c_process_resumes_to_the_uninterrupted_result(tiny_bert, longer_data,
                                                                                  uninterrupted, tmp_path, kill):
    reference, run_dir = uninterrupted, tmp_path / "run"

    process = start_and_wait_for_checkpoint(cli(tiny_bert, longer_data, run_dir), run_dir)
    process.send_signal(kill)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == (-9 if kill == signal.SIGKILL else 128 + kill), stderr[-2000:]
    stopped = json.loads((run_dir / "results.json").read_text())
    assert stopped["status"] == ("running" if kill == signal.SIGKILL else "interrupted")
    if kill != signal.SIGKILL:  # one line, no traceback
        assert "Traceback" not in stderr
        assert stderr.strip().splitlines()[-1].startswith(f"finetune: interrupted: stopped by {kill.name} at step ")
    stopped_at = Checkpoints.step(Checkpoints(run_dir / "checkpoints", 2).latest())
    assert 0 < stopped_at < reference["training"]["optimizer_steps"]

    rerun = subprocess.run(cli(tiny_bert, longer_data, run_dir), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"Resuming from {run_dir / 'checkpoints'}" in (run_dir / "finetune.log").read_text()
    resumed = json.loads((run_dir / "results.json").read_text())
    assert resumed["status"] == "completed"
    assert resumed["metrics"] == reference["metrics"]


def test_a_signal_outside_the_training_loop_stops_at_once_and_records_interrupted(tiny_plan, monkeypatch):
    import finetune.runner
    from finetune.errors import Interrupted

    real_load = finetune.runner.load_splits

    def ctrl_c_while_loading(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # delivered at once, to this (the main) thread
        return real_load(*args, **kwargs)

    monkeypatch.setattr(finetune.runner, "load_splits", ctrl_c_while_loading)
    plan = tiny_plan("train.epochs=1")
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted) as stopped:
        execute(plan)
    assert stopped.value.exit_code == 130 and "stopped by SIGINT outside the training loop" in str(stopped.value)
    assert json.loads((Path(plan.run.output_dir) / "results.json").read_text())["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is handler  # put back as it was


def test_a_full_disk_while_saving_is_one_line_and_a_failed_record(tiny_plan, tmp_path, monkeypatch):
    import errno

    from finetune.checkpoint import Checkpoints

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "checkpoints"))

    monkeypatch.setattr(Checkpoints, "save", disk_full)
    plan = tiny_plan("train.epochs=1")
    with pytest.raises(RunError) as failed:
        execute(plan)
    assert str(failed.value).startswith(f"cannot write {tmp_path / 'run' / 'checkpoints'} (No space left on device); "
                                        "free space or fix the permissions, then run the same command again")
    assert json.loads((Path(plan.run.output_dir) / "results.json").read_text())["status"] == "failed"
