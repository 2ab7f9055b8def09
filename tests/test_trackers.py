"""The logger group: CSV files read back with the csv module, W&B's offline files, several trackers
at once, a resumed run continuing its tracker runs, and a failing tracker costing one warning."""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from pathlib import Path

import pytest

from finetune.errors import UserError
from finetune.runner import execute
from finetune.trackers.csv_files import CsvFiles

from conftest import SimulatedCrash, crash_after_checkpoint


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_logger_csv_records_params_curves_test_metrics_and_the_end(tiny_plan):
    plan = tiny_plan("logger=csv", "train.epochs=2", "train.log_every_steps=1")
    outcome = execute(plan)
    folder = Path(plan.run.output_dir) / "csv"
    params = {row["key"]: row for row in rows(folder / "params.csv")}
    assert params["train.lr"]["value"] == str(plan.run.train.lr) and params["model.name"]["value"] == "bert"
    record = json.loads((Path(plan.run.output_dir) / "results.json").read_text())
    assert params["provenance.machine.cpu"]["value"] == record["provenance"]["machine"]["cpu"]
    assert params["provenance.command"]["value"] == record["provenance"]["command"]
    metrics = rows(folder / "metrics.csv")
    losses = [row for row in metrics if row["name"] == "train/loss"]
    assert [int(row["step"]) for row in losses] == list(range(1, outcome.training["optimizer_steps"] + 1))
    assert len([row for row in metrics if row["name"] == "validation/accuracy"]) == 2
    test = [float(row["value"]) for row in metrics if row["name"] == "final_test/accuracy"]
    assert test == [pytest.approx(outcome.metrics["test"]["accuracy"])]
    summary = {row["key"]: row["value"] for row in rows(folder / "summary.csv")}
    assert summary["status"] == "completed" and float(summary["peak_memory_mb"]) == pytest.approx(outcome.peak_memory_mb)
    assert summary["artifacts.results"] == str(Path(plan.run.output_dir) / "results.json")
    assert summary["provenance.data.files.train.digest"] == record["provenance"]["data"]["files"]["train"]["digest"]
    assert summary["provenance.weights.files.model.safetensors"].startswith("sha256:")
    assert (Path(plan.run.output_dir) / "tensorboard").is_dir()  # logger=csv keeps TensorBoard


def test_a_resumed_run_logs_each_step_once(tiny_plan, tmp_path, monkeypatch):
    settings = ("logger=csv", "train.epochs=2", "train.save_every_steps=3", "train.log_every_steps=1")
    with crash_after_checkpoint(monkeypatch, 6), pytest.raises(SimulatedCrash):
        execute(tiny_plan(*settings, output_dir=tmp_path))
    resumed = execute(tiny_plan(*settings, output_dir=tmp_path))
    logged = Counter((row["step"], row["name"]) for row in rows(tmp_path / "csv" / "metrics.csv"))
    assert logged and max(logged.values()) == 1
    steps = resumed.training["optimizer_steps"]
    assert {int(step) for step, name in logged if name == "train/loss"} == set(range(1, steps + 1))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("train/loss")] == list(range(1, steps + 1))  # each step once


def test_a_run_that_died_before_its_first_checkpoint_logs_each_step_once_when_rerun(tiny_plan, tmp_path, monkeypatch):
    from finetune.checkpoint import Checkpoints

    settings = ("logger=csv", "train.epochs=1", "train.log_every_steps=1")

    def die(*args, **kwargs):
        raise SimulatedCrash("before the first checkpoint")

    with monkeypatch.context() as patch:
        patch.setattr(Checkpoints, "save", die)
        with pytest.raises(SimulatedCrash):
            execute(tiny_plan(*settings, output_dir=tmp_path))
    execute(tiny_plan(*settings, output_dir=tmp_path))
    logged = Counter((row["step"], row["name"]) for row in rows(tmp_path / "csv" / "metrics.csv"))
    assert logged and max(logged.values()) == 1


def test_a_failing_tracker_costs_one_warning_and_the_run_completes(tiny_plan, monkeypatch, caplog):
    calls = []

    def broken(self, prefix, values, step):
        calls.append(step)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(CsvFiles, "log", broken)
    plan = tiny_plan("logger=csv", "train.log_every_steps=1")
    with caplog.at_level(logging.WARNING, logger="finetune.trackers"):
        execute(plan)
    warnings = [record.getMessage() for record in caplog.records if record.name == "finetune.trackers"]
    assert len(calls) == 1 and len(warnings) == 1 and "logger csv failed (OSError" in warnings[0]
    assert json.loads((Path(plan.run.output_dir) / "results.json").read_text())["status"] == "completed"
    assert (Path(plan.run.output_dir) / "tensorboard").is_dir()


def test_a_tracker_that_is_not_installed_is_one_line_naming_its_extra(tiny_plan, monkeypatch):
    real = __import__("importlib.util").util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *args: None if name == "mlflow" else real(name, *args))
    with pytest.raises(UserError, match=r'^logger.mlflow: mlflow is not installed; install its extra: '
                                        r'pip install -c constraints.txt -e "\.\[mlflow\]"$'):
        tiny_plan("logger=mlflow")
    with pytest.raises(UserError, match=r"^logger: switches every tracker off; keep at least one of tensorboard, csv"):
        tiny_plan("logger.tensorboard=false")
    with pytest.raises(UserError, match=r"^logger.tracking_uri: holds a password, which results.json"):
        tiny_plan("logger.tracking_uri=postgresql://me:secret@db/mlflow")


def test_logger_options_combine(tiny_plan):
    assert tiny_plan("logger=[csv,mlflow]").run.logger.backends == ["tensorboard", "csv", "mlflow"]
    assert tiny_plan("logger=csv", "logger.tensorboard=false").run.logger.backends == ["csv"]


def test_logger_wandb_runs_offline_and_a_resumed_run_is_one_wandb_run(tiny_plan, tmp_path, monkeypatch):
    for variable in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc: not logged in
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / "wandb"))
    settings = ("logger=wandb", "train.epochs=2", "train.save_every_steps=3", "train.log_every_steps=1")
    run_dir = tmp_path / "run"
    with crash_after_checkpoint(monkeypatch, 6), pytest.raises(SimulatedCrash):
        execute(tiny_plan(*settings, output_dir=run_dir))
    plan = tiny_plan(*settings, output_dir=run_dir)
    outcome = execute(plan)
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    saved = json.loads((run_dir / "trackers.json").read_text())["wandb"]["id"]
    assert len(runs) == 2 and all(path.name.endswith(f"-{saved}") for path in runs)  # one W&B run, synced as one
    first, resumed = (list(wandb_records(next(path.glob("run-*.wandb")))) for path in runs)
    summary = {key: value for record in resumed if record.WhichOneof("record_type") == "summary"
               for key, value in items(record.summary.update).items()}
    assert summary["status"] == "completed" and summary["final_test/accuracy"] == outcome.metrics["test"]["accuracy"]
    [run] = [record.run for record in first if record.WhichOneof("record_type") == "run"]
    assert run.run_id == saved and items(run.config.update)["train.lr"] == plan.run.train.lr  # a number, charted
    assert "provenance.machine.cpu" in items(run.config.update)
    steps = [[items(record.history.item)["step"] for record in records if record.WhichOneof("record_type") == "history"]
             for records in (first, resumed)]
    assert max(steps[0]) >= 6 and min(steps[1]) == 7  # the resumed part continues from the checkpoint's step


def items(update) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in update}


def wandb_records(path: Path):
    """The records of an offline W&B run's transaction log (`run-<id>.wandb`): a 7-byte header, then
    LevelDB-style records in 32 KiB blocks (crc32, length, type: full, first, middle, last)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, offset, pending = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while offset + 7 <= len(data):
        room = 32768 - offset % 32768
        _crc, length, kind = struct.unpack("<IHB", data[offset:offset + 7]) if room >= 7 else (0, 0, 0)
        if kind == 0:  # the padding at a block's end
            offset += room
            continue
        pending += data[offset + 7:offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_logger_many_records_one_run_in_every_tracker(tiny_plan, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from finetune.cli import format_summary
    from finetune.record import RunRecord

    for variable in ("WANDB_MODE", "WANDB_API_KEY", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    run_dir = tmp_path / "outputs" / "runs" / "many"
    plan = tiny_plan("logger=many", "train.epochs=1", output_dir=run_dir)
    assert plan.run.logger.backends == ["tensorboard", "csv", "mlflow", "wandb"]
    execute(plan)
    assert (run_dir / "tensorboard").is_dir() and rows(run_dir / "csv" / "metrics.csv")
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("finetune").experiment_id])
    assert run.info.status == "FINISHED"
    summary = format_summary(RunRecord.from_dict(json.loads((run_dir / "results.json").read_text())), run_dir)
    assert f"mlflow      run {run.info.run_id}  (mlflow ui --backend-store-uri sqlite:///" in summary
    assert f"wandb       offline; upload with: wandb sync {run_dir / 'wandb'}/offline-run-*" in summary
    assert "(results.json, model/, tensorboard/, csv/, wandb/)" in summary


def test_wandb_is_offline_unless_logged_in_and_never_asked_online_without_a_login(tmp_path, monkeypatch):
    from finetune.trackers.wandb_runs import wandb_mode

    for variable in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DISABLED"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert wandb_mode(None) == "offline" and wandb_mode("disabled") == "disabled"
    with pytest.raises(UserError, match=r"^logger.mode: online needs a W&B login"):
        wandb_mode("online")
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(UserError, match=r"^logger.mode: online needs a W&B login"):
        wandb_mode(None)
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / ".netrc").write_text("machine api.wandb.ai login user password key\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_mode(None) is None  # logged in: W&B's own settings (`wandb offline`) decide
    monkeypatch.setenv("WANDB_DISABLED", "true")
    assert wandb_mode(None) == "disabled"
