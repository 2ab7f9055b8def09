"""Multirun bookkeeping: skip runs already completed with the same config, record jobs that fail
without stopping the sweep, say how far the sweep is, and sum it up at its end (a Hydra callback).

Each invocation notes its jobs' outcomes in its own folder of the sweep dir
(`.jobs/<invocation>/<job dir>.<outcome>`), which the joblib launcher's worker processes find through
the environment; so two `finetune -m` into one sweep dir each count their own jobs. A job whose run
dir another live process trains in is left to that process (`elsewhere`), and the summary waits
for it, then counts how that run ended.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from finetune.errors import one_line
from finetune.files import write_json_atomic
from finetune.progress import duration
from finetune.record import RunRecord
from finetune.rundir import RESULT_FILES, RunLock

log = logging.getLogger(__name__)

JOB_MARKS = ".jobs"
INVOCATION_VARIABLE = "FINETUNE_SWEEP_INVOCATION"  # this invocation's folder under .jobs
STARTED_VARIABLE = "FINETUNE_SWEEP_STARTED"  # time.time() at the sweep's start
PLANNED_VARIABLE = "FINETUNE_SWEEP_JOBS"  # the number of jobs, where the sweeper says it in advance
ELSEWHERE = "elsewhere"
DONE = ("completed", "skipped", "pruned", "completed in another process", "pruned in another process")  # any other outcome makes the sweep exit 1
POLL_S = 2.0
failed_jobs: list[str] = []  # filled at the end of a multirun; the CLI exits 1 when it is not empty


def _marks(sweep_dir: Path) -> Path:
    return sweep_dir / JOB_MARKS / os.environ.get(INVOCATION_VARIABLE, "current")


def mark_job(sweep_dir: Path, run_dir: Path, outcome: str, detail: str = "") -> None:
    """Note, beside the run and not in it, how this invocation's job ended: completed, skipped (done
    before), failed, or elsewhere (another process trains it)."""
    marks = _marks(sweep_dir)
    marks.mkdir(parents=True, exist_ok=True)
    for old in marks.glob(f"{run_dir.name}.*"):
        old.unlink()
    (marks / f"{run_dir.name}.{outcome}").write_text(detail)


def record_failure(sweep_dir: Path, output_dir: Path, config: DictConfig, error: BaseException) -> None:
    """A failed job, for the sweep summary, and its results.json if the job failed before its run
    started (a refused combination, a bad value): every field, the names and the config as far as
    they resolve. A dir that holds anything a run wrote is left alone: the run wrote its own
    failure, or the dir holds a run the job refused to touch."""
    mark_job(sweep_dir, output_dir, "failed", one_line(error))
    if any((output_dir / name).exists() for name in RESULT_FILES):
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    record = RunRecord(
        status="failed", model=_select(config, "model.name"), method=_select(config, "method.name"),
        dataset=_select(config, "dataset.name"), task=_select(config, "dataset.task"),
        overrides=list(config.hydra.overrides.task) if "hydra" in config else [], config=_plain(config),
        error=one_line(error), finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    write_json_atomic(output_dir / "results.json", asdict(record))


def _select(config: DictConfig, key: str) -> str:
    try:
        value = OmegaConf.select(config, key, default="")
    except Exception:  # an interpolation that itself fails (e.g. +smoke=tiny without its models)
        return ""
    return "" if value is None else str(value)


def _plain(config: DictConfig) -> dict[str, Any]:
    """The job's config without Hydra's part, resolved where it resolves."""
    plain = {key: config[key] for key in config if key != "hydra"} if isinstance(config, DictConfig) else {}
    try:
        return OmegaConf.to_container(OmegaConf.create(plain), resolve=True)
    except Exception:
        return OmegaConf.to_container(OmegaConf.create(plain), resolve=False)


def planned_jobs(config: DictConfig) -> int | None:
    """How many jobs the sweep will launch: Optuna's n_trials, or the product of the basic sweeper's
    choices and ranges; None where that is not known in advance."""
    sweeper = config.hydra.sweeper
    if "n_trials" in sweeper:
        return int(sweeper.n_trials)
    overrides = list(config.hydra.overrides.task) + [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    count = 1
    try:
        for override in OverridesParser.create().parse_overrides(overrides):
            if override.is_sweep_override():
                count *= len(list(override.sweep_iterator()))
    except Exception:  # glob() and intervals enumerate only inside Hydra
        return None
    return count


def announce_job(number: int, run_dir: Path) -> None:
    """One line a job on stderr: which of how many, and about how long the sweep has left."""
    planned = int(os.environ.get(PLANNED_VARIABLE) or 0) or None
    started = float(os.environ.get(STARTED_VARIABLE) or time.time())
    elapsed = time.time() - started
    line = f"finetune: job {number + 1}" + (f"/{planned}" if planned else "") + f" ({run_dir.name})"
    if number:
        line += f", {number} started in {duration(elapsed)}"
        if planned and planned > number:
            line += f", ~{duration(elapsed / number * (planned - number))} left"
    print(line, file=sys.stderr, flush=True)


class SweepSummary(Callback):
    """At the start of a multirun: a folder for this invocation's notes, the sweep's size and start.
    At its end: how many of its jobs ran, were skipped as done before, or failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ[INVOCATION_VARIABLE] = f"{os.getpid()}-{time.time_ns()}"
        os.environ[STARTED_VARIABLE] = str(time.time())
        os.environ[PLANNED_VARIABLE] = str(planned_jobs(config) or "")
        failed_jobs.clear()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        marks_dir = _marks(sweep_dir)
        marks = {path.stem: (path.suffix[1:], path.read_text()) for path in sorted(marks_dir.glob("*"))}
        counts: Counter[str] = Counter()
        for name, (outcome, detail) in marks.items():
            if outcome == ELSEWHERE:
                outcome, detail = _wait_for_other_process(sweep_dir / name)
            counts[outcome] += 1
            if outcome not in DONE:
                failed_jobs.append(f"{outcome}  {name}: {detail}")
        shutil.rmtree(marks_dir, ignore_errors=True)
        if marks_dir.parent.is_dir() and not any(marks_dir.parent.iterdir()):
            marks_dir.parent.rmdir()
        parts = [f"{number} {status}" for status, number in sorted(counts.items())]
        print(f"\nsweep {sweep_dir}: {sum(counts.values())} runs: {', '.join(parts)}"
              + (" (skipped: completed before with the same config)" if counts["skipped"] else ""))
        for line in failed_jobs:
            print(f"  {line}")


def _wait_for_other_process(run_dir: Path) -> tuple[str, str]:
    """Wait until no process holds the run dir's lock; then (`<status> in another process`, its error)."""
    if RunLock.held(run_dir):
        log.info("Waiting for %s: another finetune process trains it", run_dir)
        while RunLock.held(run_dir):
            time.sleep(POLL_S)
    try:
        record = RunRecord.read(run_dir / "results.json")
    except (OSError, ValueError):
        return "failed in another process", "no readable results.json"
    status = record.status if record.status in ("completed", "pruned", "failed", "interrupted") else "unfinished"
    return f"{status} in another process", record.error
