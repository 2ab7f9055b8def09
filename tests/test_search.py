"""finetune's Optuna sweeper (hydra/sweeper=optuna, finetune.search): failed trials are recorded and
the search goes on under every sampler, pruned trials are `pruned`, a killed search resumes to the
same total, and two workers fill one study."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import run_in_process, tiny_args
from finetune.report import collect
from finetune.report import main as report_main
from finetune.trace import searches, trial_number


def study_of(sweep: Path, name: str | None = None) -> optuna.Study:
    from finetune.trial import storage

    return optuna.load_study(study_name=name or sweep.name, storage=storage(str(sweep / "optuna.journal")))


def search(sweep: Path, tiny_bert: Path, sentiment_dir: Path, *extra: str) -> list[str]:
    fixed = [arg for arg in tiny_args(tiny_bert, sentiment_dir) if not arg.startswith("train.lr=")]
    return ["-m", *fixed, "method=full", "dataset.max_train_samples=32", "dataset.max_eval_samples=16",
            "hydra/sweeper=optuna", f"hydra.sweep.dir={sweep}", *extra]


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid", "cmaes"])
def test_a_search_with_a_failing_trial_completes_under_every_sampler(tiny_bert, sentiment_dir, tmp_path, sampler):
    sweep = tmp_path / "search"
    result = run_in_process(*search(sweep, tiny_bert, sentiment_dir, f"hydra/sweeper/sampler={sampler}",
                                    "hydra.sweeper.sampler.seed=0", "hydra.sweeper.n_trials=4", "train.max_steps=2",
                                    "train.lr=choice(2e-3,1e30)"), env={"HF_HUB_OFFLINE": "1"})
    trials = study_of(sweep).trials
    states = {trial.params["train.lr"]: trial.state.name for trial in trials}
    assert states == {2e-3: "COMPLETE", 1e30: "FAIL"}, states  # each value tried, whichever the sampler's order
    assert len(trials) == (2 if sampler == "grid" else 4)  # a grid has two points
    failed = next(trial for trial in trials if trial.state.name == "FAIL")
    assert "NaN or infinite" in failed.user_attrs["error"]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"train.lr": 2e-3} and result.returncode == 1  # a failed job, as in any sweep
    complete = sum(trial.state.name == "COMPLETE" for trial in trials)
    assert f"{len(trials)} runs: {complete} completed, {len(trials) - complete} failed" in result.stdout
    completed = next(json.loads(path.read_text()) for path in sweep.glob("*/results.json")
                     if json.loads(path.read_text())["status"] == "completed")
    assert best["best_value"] == completed["metrics"]["validation"]["accuracy"]


def test_a_pruned_trial_is_recorded_as_pruned_and_not_trained_again(tiny_bert, sentiment_dir, tmp_path):
    sweep = tmp_path / "search"
    command = search(sweep, tiny_bert, sentiment_dir, "hydra/sweeper/sampler=grid", "hydra/sweeper/pruner=threshold",
                     "hydra.sweeper.pruner.lower=0.99", "hydra.sweeper.n_trials=2", "train.epochs=3",
                     "train.early_stopping_patience=null", "train.lr=choice(1e-3,2e-3)")
    first = run_in_process(*command)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "2 runs: 2 pruned" in first.stdout
    assert [trial.state.name for trial in study_of(sweep).trials] == ["PRUNED", "PRUNED"]
    records = [json.loads(path.read_text()) for path in sorted(sweep.glob("*/results.json"))]
    assert [record["status"] for record in records] == ["pruned", "pruned"]
    assert all(record["training"]["optimizer_steps"] == 2 for record in records)  # stopped after epoch 1 of 3
    assert all(record["training"]["validation_curve"] for record in records)  # its curves are kept
    assert all(list((path.parent / "checkpoints").glob("step-*")) for path in sweep.glob("*/results.json"))
    finished = [record["finished_at"] for record in records]
    report_main([str(sweep)])
    assert "| pruned |" in (sweep / "report.md").read_text()
    assert [row["status"] for row in csv.DictReader(open(sweep / "runs.csv"))] == ["pruned", "pruned"]
    rows = collect([sweep])[0]
    assert [[trial_number(row) for row in trials] for trials in searches(rows).values()] == [[0, 1]]
    assert (sweep / "search_trace.png").stat().st_size > 0
    again = run_in_process(*command)
    assert again.returncode == 0 and len(study_of(sweep).trials) == 2
    assert [json.loads(path.read_text())["finished_at"] for path in sorted(sweep.glob("*/results.json"))] == finished


def test_unknown_sampler_arguments_and_a_grid_over_an_interval_are_one_line(tiny_bert, sentiment_dir, tmp_path):
    unknown = run_in_process(*search(tmp_path / "a", tiny_bert, sentiment_dir, "+hydra.sweeper.sampler.n_startup=3",
                                     "train.lr=choice(1e-3,2e-3)"))
    assert unknown.returncode == 2
    assert "hydra.sweeper.sampler.n_startup: not an argument of optuna's TPESampler; allowed: " in unknown.stderr
    grid = run_in_process(*search(tmp_path / "b", tiny_bert, sentiment_dir, "hydra/sweeper/sampler=grid",
                                  "train.lr=interval(1e-4,1e-3)"))
    assert grid.returncode == 2
    assert "hydra.sweeper.params.train.lr: the grid sampler takes choices and ranges, not an interval" in grid.stderr


def process(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "finetune", *command], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.slow
def test_a_killed_search_resumes_to_the_same_total_and_keeps_finished_trials(tiny_bert, longer_data, tmp_path):
    sweep = tmp_path / "search"
    command = search(sweep, tiny_bert, longer_data, "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=1",
                     "hydra.sweeper.n_trials=3", "dataset.max_train_samples=800", "train.batch_size=8",
                     "train.epochs=1", "train.save_every_steps=5", "train.lr=interval(1e-4,1e-3)")
    killed = process(command)
    deadline = time.time() + 240
    while not list(sweep.glob("001_*/checkpoints/step-*")):  # trial 1 has a checkpoint and trains on
        assert killed.poll() is None and time.time() < deadline, killed.stderr.read()[-2000:]
        time.sleep(0.1)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    first = json.loads(next(sweep.glob("000_*/results.json")).read_text())
    assert first["status"] == "completed"
    assert json.loads(next(sweep.glob("001_*/results.json")).read_text())["status"] == "running"

    resumed = subprocess.run([sys.executable, "-m", "finetune", *command], capture_output=True, text=True,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Trial(s) 1, stopped by a kill, run again" in resumed.stdout + resumed.stderr
    trials = study_of(sweep).trials
    assert [(trial.number, trial.state.name) for trial in trials] == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "COMPLETE")]
    assert json.loads(next(sweep.glob("000_*/results.json")).read_text())["finished_at"] == first["finished_at"]
    second = json.loads(next(sweep.glob("001_*/results.json")).read_text())
    assert second["training"]["resumed_from_step"] >= 5  # the killed trial went on from its checkpoint
    assert trials[1].value == second["metrics"]["validation"]["accuracy"]
    assert len(list(sweep.glob("*/results.json"))) == 3


@pytest.mark.slow
def test_two_workers_fill_one_study_without_duplicating_trials(tiny_bert, sentiment_dir, tmp_path):
    sweep = tmp_path / "search"
    command = search(sweep, tiny_bert, sentiment_dir, "hydra/sweeper/sampler=random", "hydra.sweeper.n_trials=4",
                     "train.max_steps=8", "train.lr=interval(1e-4,1e-3)")
    workers = [process(command), process(command)]
    for worker in workers:
        _, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr[-2000:]
    study = study_of(sweep)
    counted = [trial for trial in study.trials if f"not_counted_{trial.number}" not in study.user_attrs]
    assert [trial.state.name for trial in counted] == ["COMPLETE"] * 4
    assert len({trial.number for trial in counted}) == 4
    assert len({trial.user_attrs["owner"]["pid"] for trial in counted}) == 2  # both workers ran trials
    runs = sorted(path.parent.name for path in sweep.glob("*/results.json"))
    assert [int(run[:3]) for run in runs] == sorted(trial.number for trial in counted)  # none trained twice
