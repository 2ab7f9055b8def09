"""What the task kinds share on the data side: the splits they hand on, and column checks whose
errors name the config key and the split."""

from __future__ import annotations

from dataclasses import dataclass

from datasets import Dataset

from finetune.errors import UserError


@dataclass(frozen=True)
class LabelledSplits:
    """Splits with `text` (the input: a string; for images a path or a Hub image) and `labels` (what the
    task kind made of its target column: a class id, 0/1 floats per label, a reference summary), and the
    label names (none for summarization)."""

    splits: dict[str, Dataset]
    label_names: tuple[str, ...]


class BadLabel(ValueError):
    """A label value that does not fit the label set; the message says which."""


def require_column(dataset: Dataset, key: str, column: str, split: str) -> None:
    if column not in dataset.column_names:
        raise UserError(f"dataset.{key}: no column '{column}' in split '{split}' (columns: {', '.join(dataset.column_names)})")


def require_strings(dataset: Dataset, key: str, column: str, split: str) -> None:
    values = dataset[column]
    bad = next((i for i, value in enumerate(values) if not isinstance(value, str)), None)
    if bad is not None:
        raise UserError(f"dataset.{key}: row {bad} of split '{split}' has a {type(values[bad]).__name__}, not a string")


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
