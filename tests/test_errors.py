"""Bad input on the command line: one line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def finetune(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "finetune", *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "args,expected",
    [
        (["model=bret"], "model=bret: no such option; choose one of albert, bert, distilbert, flan_t5, flan_t5_small, gpt_neo, minilm"),
        (["train.lrr=1"], "train.lrr: unknown key; TrainSpec allows epochs, lr,"),
        (["method=lora", "method.rank=4"], "method.rank: unknown key; LoraSpec allows name, r, alpha"),
        (["train.lr=fast"], "train.lr: Value 'fast' of type 'str' could not be converted to Float"),
        (["train.batch_size=0"], "train.batch_size: must be > 0, got 0"),
        (["dataset=local"], "dataset.path: data set 'local' needs dataset.path=DIR"),
        (["dataset=local", "dataset.path=/no/such/dir"], "dataset.path: '/no/such/dir' is not a directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, expected, tmp_path):
    result = finetune(*args, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"finetune: error: {expected}"), lines[-1]
    assert "Traceback" not in result.stderr


def test_an_output_directory_that_cannot_be_written_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = finetune(f"hydra.run.dir={blocker / 'run'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"finetune: error: hydra.run.dir: cannot write the run directory '{blocker / 'run'}' (Not a directory)"
    )


def test_a_method_the_family_cannot_take_is_refused_before_loading(tmp_path):
    result = finetune("model=albert", "method=prefix_tuning", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert "method: prefix_tuning does not apply to model=albert" in result.stderr
    assert not (tmp_path / "results.json").exists()


def test_hydra_full_error_shows_the_traceback(tmp_path):
    result = finetune("train.lrr=1", f"hydra.run.dir={tmp_path}", env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_a_failed_run_is_recorded_as_failed(tmp_path):
    result = finetune("dataset=local", "dataset.path=/no/such/dir", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    import json

    record = json.loads((tmp_path / "results.json").read_text())
    assert record["status"] == "failed"
    assert "is not a directory" in record["error"]
