"""results.json as types: what a finished run measured (`Outcome`, built by the runner and written
by `artifacts.ResultsFile`) and a record read back whatever its status (`RunRecord`, read by the
report, sweeps, the run-dir checks, predict, eval and export)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """What a run measured; every field is required, so no kind of run leaves one out."""

    metrics: dict[str, dict[str, float]]  # split -> metric -> value
    main_metric: str  # the metric that picks the best epoch and that sweeps optimise
    label_names: list[str]
    params: dict[str, int]  # trainable, total
    train_seconds: float
    train_samples_per_second: float
    peak_memory_mb: float
    truncated: dict[str, Any]  # max_length, and per split the inputs cut to it
    training: dict[str, Any]  # the loop's summary and learning curves; empty for runs without the loop
    model_source: str | None  # where the weights came from; None where no model is loaded
    device: str
    precision: str  # the autocast precision: fp32, bf16, fp16
    frozen_features: dict[str, Any]  # per split: computed or reused, MB, seconds; empty without the cache
    provenance: dict[str, Any]  # data: its files' digests or Hub revision; weights: theirs (finetune.provenance)


@dataclass(frozen=True)
class RunRecord:
    """A results.json: `running`, `completed`, `pruned` (by a search), `failed` or `interrupted`. A field the run did not
    reach (or that an older finetune did not write) has its empty default."""

    status: str = "unknown"
    model: str = ""
    method: str = ""
    dataset: str = ""
    task: str = ""
    overrides: list[str] = field(default_factory=list)
    config_hash: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    started_at: str = ""
    finished_at: str = ""
    error: str = ""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    main_metric: str = ""
    label_names: list[str] = field(default_factory=list)
    params: dict[str, int] = field(default_factory=dict)
    train_seconds: float | None = None
    train_samples_per_second: float | None = None
    peak_memory_mb: float | None = None
    truncated: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    model_source: str | None = None
    device: str = ""
    precision: str = ""
    frozen_features: dict[str, Any] = field(default_factory=dict)
    # code (version, git commit and dirty), command, machine; data and weights once the run completes
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """The record in `data`; ValueError where it is not one (not an object, no status, a field of
        the wrong type), so that no reader trips over it later."""
        if not isinstance(data, dict):
            raise ValueError(f"not a finetune record (a JSON {type(data).__name__}, expected an object)")
        if "status" not in data:
            raise ValueError("not a finetune record (no status)")
        fields = {item.name: item for item in dataclasses.fields(cls)}
        kept = {key: value for key, value in data.items() if key in fields}
        for key, value in kept.items():
            expected = _FIELD_TYPES.get(key)
            if expected and value is not None and not isinstance(value, expected):
                raise ValueError(f"not a finetune record (its {key} is a {type(value).__name__})")
        return cls(**kept)

    @classmethod
    def read(cls, path: Path) -> RunRecord:
        """`path`: a results.json."""
        return cls.from_dict(json.loads(path.read_text()))

    def score(self, split: str) -> float | None:
        """The main metric on a split (validation, test), if the run got that far."""
        return self.metrics.get(split, {}).get(self.main_metric)


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {  # what each field of a results.json holds
    **{name: str for name in ("status", "model", "method", "dataset", "task", "config_hash", "started_at",
                              "finished_at", "error", "main_metric", "device", "precision")},
    **{name: dict for name in ("config", "versions", "metrics", "params", "truncated", "training", "frozen_features",
                                               "provenance")},
    **{name: list for name in ("overrides", "label_names")},
    **{name: (int, float) for name in ("train_seconds", "train_samples_per_second", "peak_memory_mb")},
}


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{'train': {'lr': 1e-3}} -> {'train.lr': '0.001'}; values as JSON text, so lists compare too."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value)
    return flat
