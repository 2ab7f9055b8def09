"""Multirun bookkeeping: skip runs already completed with the same config, record jobs that fail
without stopping the sweep, and sum the sweep up at its end (a Hydra callback)."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from finetune.artifacts import write_json_atomic
from finetune.errors import one_line
from finetune.schema import Run

log = logging.getLogger(__name__)

failed_jobs: list[str] = []  # filled at the end of a multirun; the CLI exits 1 when it is not empty


def completed_before(run: Run) -> dict[str, Any] | None:
    """The results of this run dir if they say `completed` for the same config hash, else None."""
    path = Path(run.output_dir) / "results.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("status") == "completed" and record.get("config_hash") == run.config_hash():
        return record
    return None


def mark_skipped(record: dict[str, Any], output_dir: Path) -> None:
    """Note in results.json that a later sweep found this run done and did not repeat it."""
    write_json_atomic(output_dir / "results.json", {**record, "skipped_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def record_failure(output_dir: Path, overrides: list[str], error: BaseException) -> None:
    """results.json of a job that failed before its run could start (e.g. a refused combination)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "results.json"
    record = json.loads(path.read_text()) if path.is_file() else {"overrides": overrides}
    if record.get("status") != "failed":  # execute() records its own failures
        record.update(status="failed", error=one_line(error), finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        write_json_atomic(path, record)


class SweepSummary(Callback):
    """At the end of a multirun: how many jobs ran, were skipped as done before, or failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        failed_jobs.clear()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        counts: Counter[str] = Counter()
        for path in sorted(sweep_dir.glob("*/results.json")):
            record = json.loads(path.read_text())
            skipped = record.get("skipped_at", "") >= self.started
            counts["skipped" if skipped else record.get("status", "unknown")] += 1
            if record.get("status") == "failed":
                failed_jobs.append(f"{path.parent.name}: {record.get('error', '')}")
        parts = [f"{number} {status}" for status, number in sorted(counts.items())]
        print(f"\nsweep {sweep_dir}: {sum(counts.values())} runs: {', '.join(parts)}"
              + (" (skipped: completed before with the same config)" if counts["skipped"] else ""))
        for line in failed_jobs:
            print(f"  failed  {line}")
