"""What every tracker is given and must do: one run's context (its settings flattened, the swept
keys, its sweep, the step it resumed from, the ids of its tracker runs) and the calls the engine makes."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from finetune.files import write_json_atomic
from finetune.record import Outcome, flatten
from finetune.schema import LoggerSpec, Run
from finetune.sweep_names import SWEEP_VARIABLE, SWEPT_KEYS_VARIABLE

IDS_FILE = "trackers.json"  # in the run dir: each tracker's run id, so that a resumed run continues it


@dataclass(frozen=True)
class RunContext:
    """What a tracker needs to know about the run it records."""

    run: Run
    run_dir: Path
    params: dict[str, str]  # the resolved config, flattened: {'train.lr': '0.001', ...}
    swept: tuple[str, ...]  # the keys the run's sweep varies
    sweep: str | None  # the sweep's name (its directory), None for a single run
    resumed_from: int | None  # the checkpoint's step: a tracker drops what the dead run logged after it
    provenance: dict[str, str]  # how the run was made (code, command, machine), flattened: {'provenance.code.git_commit': ...}

    @property
    def spec(self) -> LoggerSpec:
        return self.run.logger

    @property
    def name(self) -> str:
        return self.run_dir.name

    def saved_id(self, tracker: str) -> dict[str, Any] | None:
        """What `tracker` kept about its run in the run dir (its id), or None for a fresh run."""
        try:
            return json.loads((self.run_dir / IDS_FILE).read_text()).get(tracker)
        except (OSError, ValueError):
            return None

    def save_id(self, tracker: str, value: dict[str, Any]) -> None:
        path = self.run_dir / IDS_FILE
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            saved = {}
        write_json_atomic(path, {**saved, tracker: value})

    def artifacts(self) -> dict[str, str]:
        """The run's files, for a tracker to point at."""
        names = {"run_dir": "", "results": "results.json", "model": "model", "tensorboard": "tensorboard",
                 "log": "finetune.log"}
        return {key: str(self.run_dir / name) for key, name in names.items()}


def provenance_items(provenance: dict[str, Any]) -> dict[str, str]:
    """results.json's provenance, flattened under `provenance.`, for a tracker's tags or config."""
    return flatten(provenance, "provenance.") if provenance else {}


def run_context(run: Run, resumed_from: int | None, provenance: dict[str, Any]) -> RunContext:
    run_dir = Path(run.output_dir)
    sweep = os.environ.get(SWEEP_VARIABLE)
    in_sweep = sweep is not None and run_dir.parent.name == sweep  # not a stale variable of an earlier sweep
    swept = tuple(key for key in os.environ.get(SWEPT_KEYS_VARIABLE, "").split(",") if key) if in_sweep else ()
    params = flatten({key: value for key, value in asdict(run).items() if key not in ("output_dir", "overrides")})
    return RunContext(run=run, run_dir=run_dir, params=params, swept=swept, sweep=sweep if in_sweep else None,
                      resumed_from=resumed_from, provenance=provenance_items(provenance))


class Backend:
    """One tracker. Every call may raise: the fan-out (finetune.trackers.Trackers) turns a failure into
    one warning and leaves the tracker off for the rest of the run."""

    name = ""

    def __init__(self, context: RunContext) -> None:
        self.context = context

    def log(self, prefix: str, values: dict[str, float], step: int) -> None:
        """Scalars under `prefix/name` at `step` (training loss and lr, validation metrics, throughput)."""

    def text(self, tag: str, markdown: str, step: int) -> None:
        """A text sample (generated summaries)."""

    def finish(self, status: str, outcome: Outcome | None) -> None:
        """The run ended `status` (completed, failed, interrupted, pruned); `outcome` when completed
        (with the data's and weights' provenance: provenance_items(outcome.provenance))."""

    def close(self) -> None:
        """Release files and connections."""


def headline(outcome: Outcome) -> dict[str, float]:
    """A completed run's headline numbers: each split's main metric, size, time, throughput, memory."""
    main = outcome.main_metric
    found = {f"{role}_{main}": values[main] for role, values in outcome.metrics.items() if main in values}
    found.update({"trainable_params": outcome.params.get("trainable"), "train_seconds": outcome.train_seconds,
                  "train_samples_per_second": outcome.train_samples_per_second,
                  "peak_memory_mb": outcome.peak_memory_mb})
    return {key: float(value) for key, value in found.items() if isinstance(value, (int, float))}
