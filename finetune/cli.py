"""The `finetune` command: Hydra composes the config, `execute` runs it, bad input exits 2."""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from finetune.environment import COMMAND_VARIABLE, remember_command
from finetune.errors import (EXIT_BAD_INPUT, USER_ERRORS, AlreadyComplete, Escalated, Interrupted, RunDirInUse,
                             RunError, one_line)
from finetune.logs import quiet_libraries
from finetune.placement import placed_on_gpu
from finetune.plan import CONF_DIR, Plan, build_plan, register_configs
from finetune.record import RunRecord
from finetune.rundir import Action, RunLock, checked_before, clear_run_dir, is_main_process, plan_run_dir
from finetune.sweeps import ELSEWHERE, announce_job, failed_jobs, mark_job, record_failure

log = logging.getLogger(__name__)
logging.getLogger("alembic").setLevel(logging.WARNING)  # optuna's storage layer lists its plugins at import


COMPANIONS = {
    "finetune-study OVERRIDES... study.methods=[...]": "a fair method comparison: equal searches, replicates, one report",
    "finetune-report DIR...": "a comparison table (markdown, CSV) and plots of every results.json under the dirs",
    "finetune-predict RUN_DIR TEXT...": "predictions of a trained run (or --file texts.txt/.jsonl/.csv)",
    "finetune-eval RUN_DIR OVERRIDES...": "score a trained run on other data (dataset=sst2 dataset.path=DIR)",
    "finetune-export RUN_DIR OUT_DIR": "a self-contained Hugging Face model (--merge folds LoRA, AdaLoRA, IA3 in)",
}


def help_text() -> str:
    """`finetune --help`: what it does, the config groups and their options, the companion commands."""
    groups = sorted(path for path in CONF_DIR.iterdir() if path.is_dir())
    options = "\n".join(f"  {group.name}: {', '.join(sorted(p.stem for p in group.glob('*.yaml')))}" for group in groups)
    companions = "\n".join(f"  {command:<36} {what}" for command, what in COMPANIONS.items())
    return f"""finetune: fine-tune a transformer model with one of several methods and compare methods.
One run: a trained model, metrics, TensorBoard logs and results.json in its run dir.

Usage:
  finetune [GROUP=OPTION] [KEY=VALUE]...      one run (defaults: model=minilm method=full dataset=rotten_tomatoes)
  finetune -m method=full,lora train.lr=1e-4,5e-4   a sweep: every combination, one run dir each
  finetune --cfg job [OVERRIDES]...           print the composed config without running

Config groups (GROUP=OPTION; +experiment=NAME and +smoke=tiny are added with a +):
{options}

Keys: model.*, dataset.*, method.*, train.*, generation.*, hardware.*, logger.*, restart (see --cfg job and the README).

Companion commands:
{companions}
"""


register_configs()
# hydra/sweeper=optuna and its sampler and pruner groups; Hydra's plugin scan misses a namespace
# package that an editable install maps in, so finetune imports its plugin itself
Plugins.instance().register(importlib.import_module("hydra_plugins.finetune_optuna.optuna_sweeper").OptunaSweeper)
if not OmegaConf.has_resolver("finetune_help"):
    OmegaConf.register_new_resolver("finetune_help", help_text)
_job_started = threading.Event()  # set once Hydra has made the run dir and called the job
_sweep_started = threading.Event()  # set once a multirun has called its first job in this process


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
def _app(config: DictConfig) -> float | None:
    # only a reference to a module-level function: the joblib launcher pickles this one by value
    return run_job(config)


def run_job(config: DictConfig) -> float | None:
    """A Hydra job; in a multirun, a failure is recorded and the sweep goes on.

    A failed job returns None, not NaN: the Optuna sweeper records a trial whose value is not a
    number as failed and goes on, but ends the whole study over a NaN.
    """
    _job_started.set()
    hydra_config = HydraConfig.get()
    if hydra_config.mode != RunMode.MULTIRUN:
        try:
            return _job(config)[0]
        except (*USER_ERRORS, RunError) as error:
            raise Escalated(error) from error
    _sweep_started.set()
    sweep_dir, run_dir, number = Path(hydra_config.sweep.dir), Path(hydra_config.runtime.output_dir), hydra_config.job.num
    announce_job(number, run_dir)
    try:  # parallel jobs (joblib launcher) share the GPUs through lock files in the sweep dir
        score, outcome = _job(config, sweep_dir / ".gpu_slots", number)
        mark_job(sweep_dir, run_dir, outcome)
        return score
    except RunDirInUse as error:  # another process trains this job; the summary waits for it
        mark_job(sweep_dir, run_dir, ELSEWHERE)
        print(f"finetune: job {number}: {one_line(error)}; counted when that process finishes it", file=sys.stderr)
        return None
    except Exception as error:  # one failed job must not stop the sweep; its results.json says why
        record_failure(sweep_dir, run_dir, config, error)
        log.error("Job %s failed", number, exc_info=not isinstance(error, (*USER_ERRORS, RunError)))
        print(f"finetune: job {number} failed: {one_line(error)}", file=sys.stderr)
        return None


def _job(config: DictConfig, gpu_slots: Path | None = None, job_number: int = 0) -> tuple[float | None, str]:
    """One run: its validation main metric, the value Hydra sweepers (Optuna) optimise, and whether
    it was `completed` now or `skipped` (completed before)."""
    checked = checked_before(config.output_dir) if HydraConfig.get().mode != RunMode.MULTIRUN else None
    plan, state = checked if checked else (build_plan(config), None)
    run_dir = Path(plan.run.output_dir)
    if not is_main_process():  # the main process owns the run dir; this one follows its lead
        return _train(plan, gpu_slots, job_number)
    state = state or plan_run_dir(plan, in_sweep=HydraConfig.get().mode == RunMode.MULTIRUN)
    if state.action is Action.COMPLETE:
        print(completed_message(state.record, run_dir))
        return state.record.score("validation"), "skipped"
    with RunLock(run_dir):
        if state.action is Action.RESTART:
            clear_run_dir(run_dir)
        return _train(plan, gpu_slots, job_number)


def _train(plan: Plan, gpu_slots: Path | None, job_number: int) -> tuple[float | None, str]:
    from finetune.runner import execute  # torch and the training stack load only for a valid run

    quiet_libraries()
    with placed_on_gpu(plan.run.hardware, gpu_slots, job_number):
        record = execute(plan)
    print(format_summary(record, Path(plan.run.output_dir)))
    return record.score("validation"), record.status


def completed_message(record: RunRecord, run_dir: Path) -> str:
    """What `finetune` says instead of training again over a completed run."""
    return (f"{run_dir}: completed before with the same config; nothing was run "
            f"(add restart=true to delete it and train again)" + format_summary(record, run_dir))


def main() -> None:
    """Console entry point: one line and exit code 2 for bad input, unless HYDRA_FULL_ERROR=1."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `finetune --help | head` ends quietly, as other tools do
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us instead of Hydra's exit(1)
    _job_started.clear()
    _sweep_started.clear()
    command = os.environ.get(COMMAND_VARIABLE)
    remember_command()
    try:
        _run(wants_traceback=previous == "1")
    finally:  # as it was: tests and notebooks call main() more than once in one process
        _restore("HYDRA_FULL_ERROR", previous)
        _restore(COMMAND_VARIABLE, command)


def _restore(variable: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(variable, None)
    else:
        os.environ[variable] = value


def _run(wants_traceback: bool) -> None:
    """`main` once HYDRA_FULL_ERROR is set: each kind of error to its line and exit code."""
    try:
        _app()
    except AlreadyComplete as done:
        print(completed_message(done.record, done.run_dir))
    except Escalated as escalated:
        _fail(escalated.error, wants_traceback)
    except (*USER_ERRORS, RunError) as error:
        _fail(error, wants_traceback)
    except OSError as error:
        if wants_traceback or _job_started.is_set():
            raise
        # Hydra creates the run dir (and its log file) before the job starts
        print(f"finetune: error: hydra.run.dir: cannot write the run directory "
              f"'{error.filename}' ({error.strerror})", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except ValueError as error:
        if _sweep_started.is_set() and not wants_traceback:
            # raised by the sweeper after its jobs ran, e.g. Optuna's "No trials are completed yet"
            print(f"finetune: the sweep stopped: {one_line(error)} (each run's results.json says how it ended)",
                  file=sys.stderr)
            sys.exit(1)
        if wants_traceback or _job_started.is_set():
            raise
        # Hydra's command-line checks, e.g. `-m` together with `--cfg job`
        print(f"finetune: error: {error} (see finetune --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except Interrupted as error:
        print(f"finetune: interrupted: {error}", file=sys.stderr)
        sys.exit(error.exit_code)  # 128 + the signal's number, as if the signal had ended the process
    except KeyboardInterrupt:  # Ctrl-C before a run started: nothing to keep
        print("finetune: interrupted: stopped by SIGINT before the run started", file=sys.stderr)
        sys.exit(130)
    if failed_jobs:
        sys.exit(1)


def _fail(error: BaseException, wants_traceback: bool) -> NoReturn:
    """Bad input: one line, exit 2; a run that could not finish: one line, exit 1."""
    if wants_traceback:
        raise error
    if isinstance(error, RunError):
        print(f"finetune: run failed: {error}", file=sys.stderr)
        sys.exit(1)
    print(f"finetune: error: {one_line(error)}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def format_summary(record: RunRecord, run_dir: Path) -> str:
    """The few lines a researcher reads at the end of a run."""
    params = record.params
    lines = [f"\n{record.model} + {record.method} on {record.dataset}: {record.status}"]
    for split, metrics in record.metrics.items():
        # the loss and per-label F1 stay in results.json
        shown = "  ".join(f"{name} {value:.4f}" for name, value in metrics.items()
                          if name != "loss" and not name.startswith("f1_"))
        lines.append(f"  {split:<11} {shown}")
    if params.get("total"):  # a pruned trial stopped before its counts were recorded
        lines.append(f"  trainable   {params['trainable']:,} of {params['total']:,} parameters "
                     f"({100 * params['trainable'] / params['total']:.2f}%)")
    if record.train_seconds and record.peak_memory_mb is not None:
        lines.append(
            f"  training    {record.train_seconds:.1f} s, {record.train_samples_per_second:.1f} samples/s, "
            f"peak memory {record.peak_memory_mb:,.0f} MB, {record.precision or 'fp32'} on {record.device or 'cpu'}"
        )
    written = [name for name in ("results.json", "model/", "tensorboard/", "csv/", "wandb/")
               if (run_dir / name.rstrip("/")).exists()]
    lines.append(f"  artifacts   {run_dir}  ({', '.join(written)})")
    lines += tracker_lines(run_dir)
    return "\n".join(lines)


def tracker_lines(run_dir: Path) -> list[str]:
    """Where the run's MLflow run is, and how to upload an offline W&B run."""
    try:
        ids = json.loads((run_dir / "trackers.json").read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(ids, dict):
        return []
    lines = []
    if isinstance(ids.get("mlflow"), dict):
        uri = ids["mlflow"].get("tracking_uri", "")
        shown = f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite:") else uri
        lines.append(f"  mlflow      run {ids['mlflow'].get('run_id')}  ({shown})")
    if "wandb" in ids and any((run_dir / "wandb").glob("offline-run-*")):
        lines.append(f"  wandb       offline; upload with: wandb sync {run_dir / 'wandb'}/offline-run-*")
    return lines
