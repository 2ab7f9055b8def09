"""What stops a run cleanly (finetune.guards): kill -9, SIGTERM and Ctrl-C on a real process, then the same command resumes to the uninterrupted result; a signal outside the loop; a full disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.checkpoint import Checkpoints
from finetune.errors import RunError
from finetune.runner import execute

from conftest import start_and_wait_for_checkpoint


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
