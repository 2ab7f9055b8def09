"""Multirun bookkeeping: skip runs already completed with the same config, record jobs that fail
without stopping the sweep, and sum the sweep up at its end (a Hydra callback)."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from finetune.artifacts import write_json_atomic
from finetune.errors import one_line

log = logging.getLogger(__name__)

SKIPPED_DIR = ".skipped"  # in the sweep dir: one empty file per job this sweep skipped as done before
failed_jobs: list[str] = []  # filled at the end of a multirun; the CLI exits 1 when it is not empty


def mark_skipped(sweep_dir: Path, run_dir: Path) -> None:
    """Note, beside the run and not in it, that this sweep found the run done and did not repeat it."""
    marks = sweep_dir / SKIPPED_DIR
    marks.mkdir(parents=True, exist_ok=True)
    (marks / run_dir.name).touch()


def record_failure(output_dir: Path, overrides: list[str], error: BaseException) -> None:
    """results.json of a job that failed before its run started (e.g. a refused combination).

    A results.json already there is left alone: the run wrote its own failure, or the dir holds
    another run, which a refused job must not overwrite.
    """
    path = output_dir / "results.json"
    if path.exists():
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"overrides": overrides, "status": "failed", "error": one_line(error),
                             "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


class SweepSummary(Callback):
    """At the end of a multirun: how many jobs ran, were skipped as done before, or failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        shutil.rmtree(Path(config.hydra.sweep.dir) / SKIPPED_DIR, ignore_errors=True)
        failed_jobs.clear()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        skipped = {path.name for path in (sweep_dir / SKIPPED_DIR).glob("*")}
        counts: Counter[str] = Counter()
        for path in sorted(sweep_dir.glob("*/results.json")):
            record = json.loads(path.read_text())
            counts["skipped" if path.parent.name in skipped else record.get("status", "unknown")] += 1
            if record.get("status") == "failed":
                failed_jobs.append(f"{path.parent.name}: {record.get('error', '')}")
        parts = [f"{number} {status}" for status, number in sorted(counts.items())]
        print(f"\nsweep {sweep_dir}: {sum(counts.values())} runs: {', '.join(parts)}"
              + (" (skipped: completed before with the same config)" if counts["skipped"] else ""))
        for line in failed_jobs:
            print(f"  failed  {line}")
