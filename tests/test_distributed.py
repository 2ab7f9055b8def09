"""Data parallel runs under `accelerate launch`: two CPU processes (gloo) give the metrics of one."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import start_and_wait_for_checkpoint


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_two() -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), "-m", "finetune"]


def overrides(model: Path, data: Path, run_dir: Path) -> list[str]:
    # 160 training rows in global batches of 16; validation and test (48 rows) end in a short batch
    return ["model=bert", f"model.path={model}", "model.max_length=32", "dataset=local", f"dataset.path={data}",
            "hardware=cpu", "train.batch_size=16", "train.eval_batch_size=32", "train.lr=2e-3", "train.epochs=4",
            "train.early_stopping_patience=null", f"hydra.run.dir={run_dir}"]


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tiny_bert_without_dropout, sentiment_dir, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.run([sys.executable, "-m", "finetune", *overrides(tiny_bert_without_dropout, sentiment_dir, one)],
                            capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-2000:]
    double = subprocess.run([*launch_two(), *overrides(tiny_bert_without_dropout, sentiment_dir, two)],
                            capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]

    reference, parallel = (json.loads((plan / "results.json").read_text()) for plan in (one, two))
    assert parallel["status"] == "completed"
    assert parallel["training"]["optimizer_steps"] == reference["training"]["optimizer_steps"] == 40
    for split in ("validation", "test"):
        assert parallel["metrics"][split]["accuracy"] == reference["metrics"][split]["accuracy"]
        assert parallel["metrics"][split]["loss"] == pytest.approx(reference["metrics"][split]["loss"], rel=1e-3)
    assert reference["metrics"]["test"]["accuracy"] > 0.8  # it learned, so equality says something
    assert (two / "model" / "model.safetensors").is_file()
    assert (two / "finetune.log").read_text().count("Epoch 1: validation") == 1  # the main process logs alone


@pytest.mark.slow
def test_sigterm_stops_both_processes_at_one_step_and_the_rerun_resumes(tiny_bert, longer_data, tmp_path):
    run_dir = tmp_path / "run"
    settings = ["model=bert", f"model.path={tiny_bert}", "model.max_length=32", "dataset=local",
                f"dataset.path={longer_data}", "hardware=cpu", "train.batch_size=8", "train.epochs=1",
                "train.save_every_steps=20", f"hydra.run.dir={run_dir}"]
    process = start_and_wait_for_checkpoint([*launch_two(), *settings], run_dir)
    process.send_signal(signal.SIGTERM)  # the launcher passes it on to both processes
    _, stderr = process.communicate(timeout=120)
    stops = re.findall(r"stopped by SIGTERM at step (\d+)", stderr)
    assert len(stops) == 2 and stops[0] == stops[1], stderr[-3000:]  # both processes, the same step
    assert json.loads((run_dir / "results.json").read_text())["status"] == "interrupted"

    rerun = subprocess.run([*launch_two(), *settings], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"
    assert "Resuming from" in (run_dir / "finetune.log").read_text()


def test_a_global_batch_that_does_not_split_evenly_is_refused(tiny_plan, monkeypatch):
    from accelerate import Accelerator

    from finetune.errors import UserError
    from finetune.hardware import agree_on_processes

    monkeypatch.setenv("WORLD_SIZE", "2")  # as accelerate launch sets it for each of two processes
    with pytest.raises(UserError, match=r"train.batch_size=15: must be a multiple of the 2 processes"):
        tiny_plan("train.batch_size=15")
    with pytest.raises(UserError, match=r"method=svm_tfidf: runs outside the training loop, in one process"):
        tiny_plan("method=svm_tfidf")
    monkeypatch.delenv("WORLD_SIZE")
    plan = tiny_plan()
    assert agree_on_processes(plan.run, Accelerator(cpu=True)) == plan.run
