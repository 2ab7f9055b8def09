"""A used run dir: nothing finished is destroyed. Another config is refused before anything is
written, a completed run is reported instead of retrained, a live run is left alone, a failed,
interrupted or dead one resumes, and restart=true replaces a run without keeping stale files."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from finetune.rundir import RunLock

from conftest import finetune, tiny_args


LORA = ("method=lora", "train.epochs=1", "dataset.max_train_samples=32", "dataset.max_eval_samples=16")


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under the dir with the hash of its bytes."""
    return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(directory.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def completed_lora(tiny_bert, sentiment_dir, tmp_path_factory) -> Path:
    """A completed LoRA run dir, made once and copied by each test."""
    run_dir = tmp_path_factory.mktemp("completed") / "run"
    result = finetune(*tiny_args(tiny_bert, sentiment_dir), *LORA, f"hydra.run.dir={run_dir}", cwd=run_dir.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


@pytest.fixture
def used_dir(completed_lora, tmp_path):
    """used_dir(status): a copy of the completed run whose results.json says `status`."""
    def make(status: str) -> Path:
        run_dir = tmp_path / "run"
        shutil.copytree(completed_lora, run_dir)
        record = json.loads((run_dir / "results.json").read_text())
        (run_dir / "results.json").write_text(json.dumps({**record, "status": status}))
        return run_dir

    return make


@pytest.mark.parametrize("status", ["completed", "failed", "interrupted", "running"])
def test_another_config_in_a_used_dir_is_refused_and_nothing_is_written(used_dir, tiny_bert, sentiment_dir, status):
    run_dir = used_dir(status)
    before = snapshot(run_dir)

    result = finetune(*tiny_args(tiny_bert, sentiment_dir), "method=full", f"hydra.run.dir={run_dir}", cwd=run_dir.parent)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"finetune: error: hydra.run.dir: {run_dir} holds a {status} run of another config (bert + lora on local, "
        f"config_hash {json.loads((run_dir / 'results.json').read_text())['config_hash']}); choose another run dir, "
        "or add restart=true to replace it"]
    assert snapshot(run_dir) == before


def test_the_same_config_on_a_completed_run_reports_it_and_trains_nothing(used_dir, tiny_bert, sentiment_dir):
    run_dir = used_dir("completed")
    before = snapshot(run_dir)

    result = finetune(*tiny_args(tiny_bert, sentiment_dir), *LORA, "train.log_every_steps=3",  # bookkeeping only
                      f"hydra.run.dir={run_dir}", cwd=run_dir.parent)

    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{run_dir}: completed before with the same config; nothing was run" in result.stdout
    assert "bert + lora on local: completed" in result.stdout and "test        accuracy" in result.stdout
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("status", ["failed", "interrupted", "running"])  # running: its process died
def test_the_same_config_on_an_unfinished_run_resumes_from_its_checkpoint(used_dir, tiny_bert, sentiment_dir, status):
    run_dir = used_dir(status)
    result = finetune(*tiny_args(tiny_bert, sentiment_dir), *LORA, f"hydra.run.dir={run_dir}", cwd=run_dir.parent)

    assert result.returncode == 0, result.stderr[-2000:]
    assert "Resuming from" in (run_dir / "finetune.log").read_text()
    assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"


def test_a_run_dir_in_use_by_a_live_process_is_left_alone(used_dir, tiny_bert, sentiment_dir):
    run_dir = used_dir("running")
    with RunLock(run_dir):  # this test process plays the live run
        before = snapshot(run_dir)
        result = finetune(*tiny_args(tiny_bert, sentiment_dir), *LORA, f"hydra.run.dir={run_dir}", cwd=run_dir.parent)
        after = snapshot(run_dir)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"finetune: error: hydra.run.dir: {run_dir} is in use by another finetune process; "
        "wait for it, or choose another run dir"]
    assert after == before


def test_restart_replaces_a_run_and_keeps_nothing_stale(used_dir, tiny_bert, sentiment_dir):
    run_dir = used_dir("completed")
    (run_dir / "checkpoints" / "step-99999999").mkdir()
    (run_dir / "samples_test.jsonl").write_text("{}\n")

    result = finetune(*tiny_args(tiny_bert, sentiment_dir), "method=full", "train.epochs=1", "restart=true",
                      f"hydra.run.dir={run_dir}", cwd=run_dir.parent)

    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "completed" and record["method"] == "full"
    assert not (run_dir / "checkpoints" / "step-99999999").exists() and not (run_dir / "samples_test.jsonl").exists()
    assert not (run_dir / "model" / "adapter_config.json").exists()  # the LoRA run's adapter is gone
    assert "Resuming" not in result.stdout + (run_dir / "finetune.log").read_text()


def test_a_refused_sweep_job_leaves_the_run_it_found_untouched(completed_lora, tiny_bert, sentiment_dir, tmp_path):
    sweep = tmp_path / "sweep"
    job_dir = sweep / "0_bert_lora_local"
    shutil.copytree(completed_lora, job_dir)
    before = {name: digest for name, digest in snapshot(job_dir).items() if not name.startswith(".hydra")}

    result = finetune("-m", *tiny_args(tiny_bert, sentiment_dir), *LORA, "train.lr=1e-3",  # another config
                      f"hydra.sweep.dir={sweep}", cwd=tmp_path)

    assert result.returncode == 1
    assert "holds a completed run of another config" in result.stderr
    after = {name: digest for name, digest in snapshot(job_dir).items() if not name.startswith(".hydra")}
    assert {k: v for k, v in after.items() if k != "finetune.log"} == {k: v for k, v in before.items() if k != "finetune.log"}
