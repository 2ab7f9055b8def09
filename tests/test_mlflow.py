"""logger=mlflow against a real MLflow tracking server on 127.0.0.1 (sqlite in tmp_path): a sweep's
runs in one experiment named after the sweep, read back through MlflowClient; a killed and resumed
run is one MLflow run; a server that is down does not fail a run; the default store is local."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient  # the dev extra installs it

from finetune.runner import execute

from conftest import SimulatedCrash, crash_after_checkpoint, finetune, tiny_args


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with a sqlite backend, for this module's tests."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    server_log = (root / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=server_log)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield uri
    process.terminate()
    process.wait(timeout=30)
    server_log.close()


def metric_steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return [metric.step for metric in client.get_metric_history(run_id, key)]


def test_a_sweep_logs_each_run_to_the_server_in_the_sweeps_experiment(server, tiny_bert, sentiment_dir, tmp_path):
    sweep = tmp_path / "sweep"
    result = finetune("-m", *tiny_args(tiny_bert, sentiment_dir), "logger=mlflow", f"logger.tracking_uri={server}",
                      "train.seed=1,2", "train.epochs=1", "dataset.max_train_samples=32", "dataset.max_eval_samples=16",
                      f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    client = MlflowClient(tracking_uri=server)
    experiment = client.get_experiment_by_name("sweep")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2 and {run.info.status for run in runs} == {"FINISHED"}
    for run in runs:
        record = json.loads((Path(run.data.tags["finetune.run_dir"]) / "results.json").read_text())
        assert run.data.params["train.seed"] == str(record["config"]["train"]["seed"])
        assert run.data.tags["swept.train.seed"] == run.data.params["train.seed"]  # the swept key, tagged
        assert run.data.tags["finetune.status"] == "completed"
        assert run.data.tags["provenance.machine.cpu"] == record["provenance"]["machine"]["cpu"]
        assert run.data.tags["provenance.weights.source"] == record["provenance"]["weights"]["source"]
        assert run.data.metrics["final_test/accuracy"] == pytest.approx(record["metrics"]["test"]["accuracy"])
        assert run.data.metrics["summary/peak_memory_mb"] == pytest.approx(record["peak_memory_mb"])
        assert len(metric_steps(client, run.info.run_id, "train/loss")) >= 1
        assert "train/lr" in run.data.metrics and "validation/accuracy" in run.data.metrics


def test_a_killed_and_resumed_run_is_one_mlflow_run(server, tiny_plan, tmp_path, monkeypatch):
    settings = ("logger=mlflow", f"logger.tracking_uri={server}", "logger.experiment=resumed",
                "train.save_every_steps=3", "train.log_every_steps=1")
    with crash_after_checkpoint(monkeypatch, 6), pytest.raises(SimulatedCrash):
        execute(tiny_plan(*settings, output_dir=tmp_path))
    client = MlflowClient(tracking_uri=server)
    [crashed] = client.search_runs([client.get_experiment_by_name("resumed").experiment_id])
    assert crashed.info.status == "FAILED"
    resumed = execute(tiny_plan(*settings, output_dir=tmp_path))
    [run] = client.search_runs([client.get_experiment_by_name("resumed").experiment_id])
    assert run.info.run_id == crashed.info.run_id and run.info.status == "FINISHED"
    steps = metric_steps(client, run.info.run_id, "train/loss")
    assert set(steps) == set(range(1, resumed.training["optimizer_steps"] + 1))


def test_a_server_that_is_down_costs_one_warning_and_the_run_completes(tiny_plan, tmp_path, caplog):
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    plan = tiny_plan("logger=mlflow", f"logger.tracking_uri={down}", "train.epochs=1", output_dir=tmp_path / "run")
    started = time.monotonic()
    outcome = execute(plan)
    assert time.monotonic() - started < 120
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "completed"
    warnings = [record.getMessage() for record in caplog.records if record.name == "finetune.trackers"]
    assert len(warnings) == 1 and "logger mlflow could not start" in warnings[0]
    assert outcome.metrics["test"]


def test_the_default_store_is_a_sqlite_file_under_outputs(tiny_plan, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    plan = tiny_plan("logger=mlflow", "train.epochs=1", output_dir=tmp_path / "outputs" / "runs" / "one")
    execute(plan)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("finetune").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "one"


def test_telemetry_is_off_unless_the_user_turned_it_on(tiny_plan, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    execute(tiny_plan("logger=mlflow", "train.max_steps=1", output_dir=tmp_path / "outputs" / "runs" / "one"))
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"


@pytest.mark.slow
def test_processes_that_first_open_one_default_store_together_all_get_it(tmp_path):
    """Parallel sweep jobs opening a fresh outputs/mlflow.db: its tables are built once, under a lock."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = ("import sys; from finetune.trackers.mlflow_runs import sqlite_lock; from mlflow.tracking import MlflowClient\n"
              "with sqlite_lock(sys.argv[1]):\n    client = MlflowClient(tracking_uri=sys.argv[1])\n"
              "    client.get_experiment_by_name('finetune')\n"
              "client.create_run(client.get_experiment_by_name('Default').experiment_id)\n")
    workers = [subprocess.Popen([sys.executable, "-c", script, uri], stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}) for _ in range(4)]
    errors = [worker.communicate(timeout=300)[1] for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * 4, errors
    assert len(MlflowClient(tracking_uri=uri).search_runs(["0"])) == 4
