"""The `finetune` command end to end: run dir layout, resolved config, TensorBoard, multirun."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import finetune, tiny_args


def test_single_run_writes_every_artifact_and_prints_a_summary(tiny_bert, sentiment_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = finetune(*tiny_args(tiny_bert, sentiment_dir), "method=lora", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "bert + lora on local: completed" in result.stdout
    assert "test        accuracy" in result.stdout

    resolved = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert resolved["method"]["name"] == "lora" and resolved["model"]["path"] == str(tiny_bert)
    assert "method=lora" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    record = json.loads((run_dir / "results.json").read_text())
    assert record["status"] == "completed" and "method=lora" in record["overrides"]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "model" / "adapter_model.safetensors").exists()
    log = (run_dir / "finetune.log").read_text()
    assert log.count("Epoch 1: validation") == 1
    # off a terminal: progress as plain lines, no progress-bar frames
    assert "\r" not in result.stderr + result.stdout + log
    assert "train: 10/10 steps (100%)" in log


@pytest.mark.slow
def test_multirun_gives_each_method_its_own_run_dir(tiny_bert, sentiment_dir, tmp_path):
    sweep = tmp_path / "sweep"
    result = finetune(
        "-m", *tiny_args(tiny_bert, sentiment_dir), "method=full,head_only", "train.epochs=1",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    records = {json.loads(p.read_text())["method"]: json.loads(p.read_text()) for p in sweep.glob("*/results.json")}
    assert set(records) == {"full", "head_only"}
    assert all(r["status"] == "completed" for r in records.values())
    assert records["head_only"]["params"]["trainable"] < records["full"]["params"]["trainable"]
