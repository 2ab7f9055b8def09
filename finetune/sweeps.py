"""Multirun bookkeeping: skip runs already completed with the same config, record jobs that fail
without stopping the sweep, and sum the sweep up at its end (a Hydra callback)."""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from finetune.files import write_json_atomic
from finetune.record import RunRecord
from finetune.errors import one_line

log = logging.getLogger(__name__)

JOB_MARKS = ".jobs"  # in the sweep dir: <job dir>.skipped / <job dir>.failed for this invocation's jobs
failed_jobs: list[str] = []  # filled at the end of a multirun; the CLI exits 1 when it is not empty


def mark_job(sweep_dir: Path, run_dir: Path, outcome: str, detail: str = "") -> None:
    """Note, beside the run and not in it, that this sweep skipped the job (done before) or saw it fail."""
    marks = sweep_dir / JOB_MARKS
    marks.mkdir(parents=True, exist_ok=True)
    (marks / f"{run_dir.name}.{outcome}").write_text(detail)


def record_failure(sweep_dir: Path, output_dir: Path, overrides: list[str], error: BaseException) -> None:
    """A failed job, for the sweep summary; and its results.json if it failed before its run started
    (e.g. a refused combination). A results.json already there is left alone: the run wrote its own
    failure, or the dir holds another run, which a refused job must not overwrite."""
    mark_job(sweep_dir, output_dir, "failed", one_line(error))
    path = output_dir / "results.json"
    if path.exists():
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"overrides": overrides, "status": "failed", "error": one_line(error),
                             "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


class SweepSummary(Callback):
    """At the end of a multirun: how many jobs ran, were skipped as done before, or failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        shutil.rmtree(Path(config.hydra.sweep.dir) / JOB_MARKS, ignore_errors=True)
        failed_jobs.clear()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        marks = {path.stem: (path.suffix[1:], path.read_text()) for path in (sweep_dir / JOB_MARKS).glob("*")}
        counts: Counter[str] = Counter()
        for path in sorted(sweep_dir.glob("*/results.json")):
            record = RunRecord.read(path)
            status, error = marks.get(path.parent.name, (record.status, record.error))
            counts[status] += 1
            if status == "failed":
                failed_jobs.append(f"{path.parent.name}: {error}")
        parts = [f"{number} {status}" for status, number in sorted(counts.items())]
        print(f"\nsweep {sweep_dir}: {sum(counts.values())} runs: {', '.join(parts)}"
              + (" (skipped: completed before with the same config)" if counts["skipped"] else ""))
        for line in failed_jobs:
            print(f"  failed  {line}")
