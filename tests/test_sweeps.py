"""Sweeps that resume: completed runs are skipped, missing ones re-run, a failing job stops nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.report import collect
from finetune.sweep_names import SWEPT_KEYS_VARIABLE, swept_keys, swept_label

from conftest import finetune, run_in_process, tiny_args



def statuses(sweep: Path) -> dict[str, str]:
    return {path.parent.name: json.loads(path.read_text())["status"] for path in sweep.glob("*/results.json")}


@pytest.mark.slow
def test_the_same_sweep_again_skips_completed_runs_and_reruns_missing_ones(tiny_bert, sentiment_dir, tmp_path):
    sweep = tmp_path / "sweep"
    command = ["-m", *tiny_args(tiny_bert, sentiment_dir), "method=full,lora", "train.seed=1,2",
               "dataset.max_train_samples=32", "dataset.max_eval_samples=16", f"hydra.sweep.dir={sweep}"]

    first = finetune(*command, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert list(statuses(sweep).values()) == ["completed"] * 4
    assert "4 runs: 4 completed" in first.stdout
    finished = {name: json.loads((sweep / name / "results.json").read_text())["finished_at"] for name in statuses(sweep)}

    again = finetune(*command, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "4 runs: 4 skipped (skipped: completed before with the same config)" in again.stdout
    unchanged = {name: json.loads((sweep / name / "results.json").read_text())["finished_at"] for name in finished}
    assert unchanged == finished  # nothing ran again

    rerun = sorted(finished)[1]
    shutil.rmtree(sweep / rerun)  # a missing job runs again
    third = finetune(*command, cwd=tmp_path)
    assert "4 runs: 1 completed, 3 skipped" in third.stdout
    after = {name: json.loads((sweep / name / "results.json").read_text())["finished_at"] for name in finished}
    assert [name for name in finished if after[name] != finished[name]] == [rerun]


@pytest.mark.slow
def test_a_failing_job_is_recorded_and_the_parallel_sweep_goes_on(tiny_bert, sentiment_dir, tmp_path):
    sweep = tmp_path / "sweep"
    result = finetune(
        "-m", *tiny_args(tiny_bert, sentiment_dir), "method=full", "train.lr=1e-3,1e30", "train.log_every_steps=1",
        "dataset.max_train_samples=32", "dataset.max_eval_samples=16", "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "2 runs: 1 completed, 1 failed" in result.stdout
    assert "NaN or infinite" in result.stdout  # the failed job's error, in the sweep summary
    records = {json.loads(p.read_text())["config"]["train"]["lr"]: json.loads(p.read_text()) for p in sweep.glob("*/results.json")}
    assert records[1e-3]["status"] == "completed" and records[1e-3]["metrics"]["test"]["accuracy"] >= 0
    assert records[1e30]["status"] == "failed" and "NaN or infinite" in records[1e30]["error"]
    rows = {row["status"] for row in collect([sweep])[0]}
    assert rows == {"completed", "failed"}


def test_a_refused_combination_fails_its_job_only_with_a_complete_record_and_is_retried(tiny_bert, sentiment_dir,
                                                                                         tmp_path):
    from dataclasses import fields

    from finetune.record import RunRecord

    sweep = tmp_path / "sweep"
    command = ("-m", *tiny_args(tiny_bert, sentiment_dir), "method=none", "dataset.max_eval_samples=16",
               "train.epochs=1,0", f"hydra.sweep.dir={sweep}")
    result = run_in_process(*command)
    assert result.returncode == 1
    assert "finetune: job 1 failed: train.epochs: must be > 0, got 0" in result.stderr
    assert "finetune: job 1/2 (000_bert_none_local_epochs=1)" in result.stderr  # where the sweep is
    assert re.search(r"finetune: job 2/2 \(001_bert_none_local_epochs=0\), 1 started in \d+ s, ~\d+ s left", result.stderr)
    assert sorted(statuses(sweep).values()) == ["completed", "failed"]
    refused = json.loads((sweep / "001_bert_none_local_epochs=0" / "results.json").read_text())
    assert set(refused) == {item.name for item in fields(RunRecord)}  # every field, as results.json promises
    assert (refused["model"], refused["method"], refused["dataset"], refused["config"]["train"]["epochs"]) ==\
        ("bert", "none", "local", 0)
    row = next(row for row in collect([sweep])[0] if row["status"] == "failed")
    assert (row["model"], row["method"], row["dataset"]) == ("bert", "none", "local")  # not a blank report row

    again = run_in_process(*command)  # the refused job is tried again, not taken for another config's run
    assert "2 runs: 1 failed, 1 skipped" in again.stdout and "another config" not in again.stderr


def test_a_refused_job_writes_nothing_into_the_dir_it_refused_and_says_how_to_redo_it(tiny_bert, sentiment_dir,
                                                                                    tmp_path):
    sweep = tmp_path / "sweep"
    job = sweep / "000_bert_none_local"
    (job / "checkpoints" / "step-00000002").mkdir(parents=True)  # a run that died before its results.json
    (job / "model").mkdir()
    command = ("-m", *tiny_args(tiny_bert, sentiment_dir), "method=none", "dataset.max_eval_samples=16",
               f"hydra.sweep.dir={sweep}")
    result = run_in_process(*command)
    assert result.returncode == 1
    assert f"hydra.sweep.dir: {job} holds checkpoints, model but no results.json; delete {job} to run this job "\
           "again" in result.stderr
    assert not (job / "results.json").exists()
    shutil.rmtree(job)
    assert run_in_process(*command).returncode == 0 and statuses(sweep) == {job.name: "completed"}


@pytest.mark.slow
def test_two_sweeps_into_one_dir_train_each_run_once_and_both_exit_0_with_true_counts(tiny_bert, sentiment_dir,
                                                                                    tmp_path):
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "finetune", "-m", *tiny_args(tiny_bert, sentiment_dir), "method=full",
               "train.lr=1e-3,2e-3,3e-3", "train.max_steps=30", "train.batch_size=8", "dataset.max_eval_samples=16",
               f"hydra.sweep.dir={sweep}"]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    outputs = [process.communicate(timeout=600) for process in (first, second)]
    for process, (stdout, stderr) in zip((first, second), outputs):
        assert process.returncode == 0, stderr[-2000:]
        summary = next(line for line in stdout.splitlines() if line.startswith(f"sweep {sweep}"))
        assert "3 runs:" in summary and "failed" not in summary, summary
    assert list(statuses(sweep).values()) == ["completed"] * 3
    for log in sweep.glob("*/finetune.log"):  # both processes log a job to its dir; one of them trained it
        assert log.read_text().count("] - Training: ") == 1, log
    assert not (sweep / ".jobs").exists()  # no notes left for a later sweep to misread


def test_tiny_runs_go_under_outputs_smoke_whatever_the_order_of_the_groups(monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from finetune.plan import CONF_DIR

    monkeypatch.setenv("FINETUNE_TINY_MODELS", "/tiny")
    dirs = {}
    for order in (("+smoke=tiny", "+experiment=method_study"), ("+experiment=method_study", "+smoke=tiny"),
                  ("+experiment=method_study",)):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            config = compose(config_name="config", overrides=list(order), return_hydra_config=True)
            HydraConfig.instance().set_config(config)
            dirs[order] = config.hydra.sweep.dir
    assert set(dirs.values()) == {"outputs/smoke/experiments/method_study/full", "outputs/experiments/method_study/full"}
    assert dirs[("+smoke=tiny", "+experiment=method_study")] == dirs[("+experiment=method_study", "+smoke=tiny")]


def test_swept_keys_come_from_the_command_line_and_the_sweeper_params_with_group_choices_left_out():
    overrides = ["model=bert", "method=full,lora", "train.lr=1e-4,1e-3", "dataset.path=/data/rt",
                 "train.warmup_ratio=tag(log, interval(0.01, 0.1))"]
    keys = swept_keys(overrides, {"train.seed": "1,2,3"})
    assert keys == ["train.lr", "train.warmup_ratio", "train.seed"]


def test_a_sweep_job_is_labelled_by_its_swept_values_in_a_path_safe_form(monkeypatch):
    monkeypatch.setenv(SWEPT_KEYS_VARIABLE, "train.lr,train.seed,method.r,model.path")
    assert swept_label(["method=lora", "train.lr=0.001", "train.seed=2", "method.r=8", "model.path=/m/tiny-bert"])\
        == "_lr=0.001,seed=2,r=8,path=_m_tiny-bert"
    monkeypatch.setenv(SWEPT_KEYS_VARIABLE, "train.lr,optimizer.lr")  # same last part: the whole key
    assert swept_label(["train.lr=0.1", "optimizer.lr=0.2"]) == "_train.lr=0.1,optimizer.lr=0.2"
    monkeypatch.setenv(SWEPT_KEYS_VARIABLE, "")
    assert swept_label(["train.lr=0.1"]) == ""


def tensorboard_experiment(logdir: Path):
    """The experiment TensorBoard's HParams tab shows for the runs under logdir."""
    from tensorboard import context
    from tensorboard.backend.event_processing.data_provider import MultiplexerDataProvider
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
    from tensorboard.plugins.base_plugin import TBContext
    from tensorboard.plugins.hparams.backend_context import Context

    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    backend = Context(TBContext(logdir=str(logdir), multiplexer=multiplexer,
                                data_provider=MultiplexerDataProvider(multiplexer, str(logdir))))
    request = context.RequestContext()
    return backend.experiment_from_metadata(request, "", True, backend.hparams_metadata(request, ""),
                                            backend.hparams_from_data_provider(request, "", 1000))


def test_sweep_runs_are_told_apart_by_dir_name_and_tensorboard_marks_the_swept_key(tiny_bert, sentiment_dir, tmp_path):
    sweep = tmp_path / "sweep"
    result = finetune("-m", *tiny_args(tiny_bert, sentiment_dir), "method=full", "train.lr=1e-3,2e-3",
                      "train.max_steps=1", "dataset.max_train_samples=16", "dataset.max_eval_samples=16",
                      f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(statuses(sweep)) == ["000_bert_full_local_lr=0.001", "001_bert_full_local_lr=0.002"]
    differs = {info.name: info.differs for info in tensorboard_experiment(sweep).hparam_infos}
    assert differs["train.lr"] and not differs["train.seed"] and not differs["method.name"]
    runs = {str(path.parent.relative_to(sweep)) for path in sweep.rglob("events.out.tfevents.*")}
    assert runs == {"000_bert_full_local_lr=0.001/tensorboard", "001_bert_full_local_lr=0.002/tensorboard"}  # once each


EXPERIMENTS = sorted(path.stem for path in (Path(__file__).parents[1] / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_and_its_smoke_variant_compose_into_valid_runs(compose_plan, experiment, monkeypatch):
    from hydra import compose, initialize_config_dir

    from finetune.plan import CONF_DIR

    monkeypatch.setenv("FINETUNE_TINY_MODELS", "/tiny")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        sweep = compose(config_name="config", overrides=[f"+experiment={experiment}"], return_hydra_config=True)
    choices = {key: str(value).split(",") for key, value in sweep.hydra.sweeper.params.items()}
    assert sweep.hydra.sweep.dir.startswith(f"outputs/experiments/{experiment}")  # fixed, so a rerun resumes
    for model in choices.get("model", [None]):
        for method in choices.get("method", [None]):
            picked = [f"{group}={value}" for group, value in (("model", model), ("method", method)) if value]
            for dataset in choices.get("dataset", [None]):
                extra = [f"dataset={dataset}"] if dataset else []
                plan = compose_plan(f"+experiment={experiment}", *picked, *extra, "+smoke=tiny", "dataset.path=/data")
                assert plan.run.model.path == f"/tiny/{plan.run.model.name}" and plan.run.train.max_steps == 2


@pytest.mark.slow
def test_a_smoke_experiment_runs_on_tiny_models(tiny_model, tmp_path):
    models = tmp_path / "tiny"
    models.mkdir()
    (models / "distilbert").symlink_to(tiny_model("distilbert"))
    result = finetune("-m", "+experiment=features_vs_finetuning", "+smoke=tiny", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                      cwd=tmp_path, env={"FINETUNE_TINY_MODELS": str(models)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 runs: 2 completed" in result.stdout
    assert {row["method"] for row in collect([tmp_path / "sweep"])[0]} == {"svm_embeddings", "full"}


@pytest.mark.slow
def test_the_replicates_preset_gives_one_report_row_per_configuration(tiny_bert, sentiment_dir, tmp_path, capsys):
    sweep = tmp_path / "study"
    result = finetune("-m", "+experiment=replicates", *tiny_args(tiny_bert, sentiment_dir), "method=full,head_only",
                      "train.epochs=2", "dataset.max_train_samples=32", "dataset.max_eval_samples=16",
                      f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "6 runs: 6 completed" in result.stdout

    from finetune.report import main as report

    report([str(sweep)])
    printed = capsys.readouterr().out
    assert "6 runs in 2 configurations" in printed
    assert printed.count("| completed | 3 | accuracy |") == 2
    assert (sweep / "local_learning_curves.png").is_file()
