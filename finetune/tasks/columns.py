"""What the task kinds share on the data side: the splits they hand on, and column checks whose
errors name the config key and the split."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset

from finetune.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledSplits:
    """Splits with `text` (the input: a string; for images a path or a Hub image) and `labels` (what the
    task kind made of its target column: a class id, 0/1 floats per label, a reference summary), and the
    label names (none for summarization)."""

    splits: dict[str, Dataset]
    label_names: tuple[str, ...]
    provenance: dict[str, Any] = field(default_factory=dict)  # where the rows came from (finetune.provenance)


@dataclass(frozen=True)
class SplitSource:
    """Where a split's rows were read from, so that a message names the file (or Hub split) and row."""

    split: str
    file: Path | None = None  # the local file
    hub_id: str | None = None

    def __str__(self) -> str:
        if self.file is not None:
            return str(self.file)
        return f"split '{self.split}' of hub data set '{self.hub_id}'" if self.hub_id else f"split '{self.split}'"

    def row(self, index: int) -> str:
        """Row `index` (0-based) as a reader counts it: from 1, the header of a CSV file not counted."""
        return f"{self}, row {index + 1}"


class BadLabel(ValueError):
    """A label value that does not fit the label set; the message says which."""


def require_column(dataset: Dataset, key: str, column: str, source: SplitSource) -> None:
    if column not in dataset.column_names:
        raise UserError(f"dataset.{key}: no column '{column}' in {source} (columns: {', '.join(dataset.column_names)})")


def require_strings(dataset: Dataset, key: str, column: str, source: SplitSource) -> None:
    values = dataset[column]
    bad = next((i for i, value in enumerate(values) if not isinstance(value, str)), None)
    if bad is not None:
        found = "nothing (null)" if values[bad] is None else f"{shown(values[bad])} ({type(values[bad]).__name__})"
        hint = ""
        if isinstance(values[bad], list) and source.file is not None and source.file.suffix == ".json":
            hint = "; a .json file must be a list of records (or use JSON lines), not an object of columns"
        raise UserError(f"dataset.{key}: {source.row(bad)} has {found}, not a string{hint}")


def warn_empty_texts(dataset: Dataset, key: str, column: str, source: SplitSource) -> None:
    """Empty or blank texts train as empty inputs: allowed, and counted in the log."""
    empty = [index for index, text in enumerate(dataset[column]) if not text.strip()]
    if empty:
        rows = ", ".join(str(index + 1) for index in empty[:5]) + (", ..." if len(empty) > 5 else "")
        log.warning("dataset.%s: %d empty text(s) in %s (rows %s)", key, len(empty), source, rows)


def require_labels(dataset: Dataset, key: str, column: str, source: SplitSource) -> None:
    """Every row has a label, and all labels are of one kind (ints, other numbers, or strings)."""
    values = dataset[column]
    missing = next((i for i, value in enumerate(values) if value is None), None)
    if missing is not None:
        raise UserError(f"dataset.{key}: {source.row(missing)} has no label; give every row one, or remove the row")
    kinds = [_label_kind(value) for value in values]
    usual = max(set(kinds), key=kinds.count) if kinds else None
    odd = next((i for i, kind in enumerate(kinds) if kind != usual), None)
    if odd is not None:
        raise UserError(f"dataset.{key}: {source.row(odd)} has the label {shown(values[odd])} (a {kinds[odd]}) where the "
                        f"other rows have {usual} labels; use one kind of label throughout")


def shown(value: object, limit: int = 60) -> str:
    """A value as a message quotes it: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _label_kind(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return type(value).__name__
    return "number" if isinstance(value, (int, float)) else "string"


def map_labels(splits: dict[str, Dataset], to_labels, key: str, names: tuple[str, ...]) -> LabelledSplits:
    """Each split's `raw_label` column mapped by `to_labels` into `labels`; a value that does not fit
    is a one-line error on `dataset.<key>`."""
    mapped = {}
    for role, dataset in splits.items():
        try:
            mapped[role] = dataset.map(lambda batch: {"labels": [to_labels(v) for v in batch["raw_label"]]},
                                       batched=True, remove_columns=["raw_label"])
        except BadLabel as error:
            raise UserError(f"dataset.{key}: split '{role}' has {error}") from None
    return LabelledSplits(splits=mapped, label_names=names)
