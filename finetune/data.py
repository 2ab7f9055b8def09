"""Load a data set (local files or the Hub), check its columns and map its labels to ids."""

from __future__ import annotations

import gzip
import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import datasets
from datasets import Dataset, DatasetDict

from finetune.errors import UserError
from finetune.schema import DatasetSpec

log = logging.getLogger(__name__)

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class LabelledSplits:
    """Splits with `text` (str) and `labels`: a class id, 0/1 floats per label (multilabel) or the
    reference summary; and the label names (none for summarization)."""

    splits: dict[str, Dataset]
    label_names: tuple[str, ...]


def load_splits(spec: DatasetSpec, seed: int) -> LabelledSplits:
    """Load train/validation/test as `spec` says; carve validation from train when missing."""
    raw = _load_local(spec) if spec.path else _load_hub(spec)
    wanted = {"train": spec.train_split, "validation": spec.validation_split, "test": spec.test_split}
    splits: dict[str, Dataset] = {}
    for role, split_name in wanted.items():
        if split_name is None:
            continue
        if split_name not in raw:
            if role == "train":
                raise UserError(f"dataset: no '{split_name}' split in {_where(spec)} (found: {', '.join(raw) or 'none'})")
            log.info("No '%s' split in %s", split_name, _where(spec))
            continue
        splits[role] = _checked_columns(raw[split_name], spec, split_name)
    if "validation" not in splits:
        carved = splits["train"].train_test_split(test_size=spec.validation_fraction, seed=seed)
        splits["train"], splits["validation"] = carved["train"], carved["test"]
        log.info("Validation: %d rows carved from train (seed %d)", len(splits["validation"]), seed)
    limits = {"train": spec.max_train_samples, "validation": spec.max_eval_samples, "test": spec.max_eval_samples}
    splits = {role: _subset(splits[role], limit, seed) for role, limit in limits.items() if role in splits}
    return _labelled(splits, spec)


def _where(spec: DatasetSpec) -> str:
    return spec.path if spec.path else f"hub data set '{spec.hub_id}'"


def find_split_file(directory: Path, split: str) -> Path | None:
    """The file holding `split` in `directory`, e.g. train.jsonl, train.csv.gz, train.parquet."""
    for suffix in BUILDERS:
        for candidate in (directory / f"{split}{suffix}", directory / f"{split}{suffix}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _load_local(spec: DatasetSpec) -> dict[str, Dataset]:
    directory = Path(spec.path).expanduser()
    if not directory.is_dir():
        raise UserError(f"dataset.path: '{directory}' is not a directory")
    names = {spec.train_split, spec.validation_split, spec.test_split} - {None}
    files = {name: find_split_file(directory, name) for name in names}
    found = {name: path for name, path in files.items() if path is not None}
    if spec.train_split not in found:
        raise UserError(
            f"dataset.path: no {spec.train_split}.jsonl, .json, .csv or .parquet (optionally .gz) in '{directory}'"
        )
    return {name: _read_file(path, name, spec.encoding) for name, path in found.items()}


def _read_file(path: Path, split: str, encoding: str) -> Dataset:
    suffix = path.suffixes[-2] if path.suffix == ".gz" else path.suffix
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty")
    text_options = {}
    if BUILDERS[suffix] != "parquet":
        _check_encoding(path, encoding)
        text_options = {"encoding": encoding}
    try:
        with _datasets_silent():  # its builders log the parse error we are about to report in one line
            dataset = datasets.load_dataset(BUILDERS[suffix], data_files={split: str(path)}, split=split, **text_options)
    except Exception as error:  # the builders raise many types for unreadable files
        detail = str(error.__cause__ or error).strip().splitlines()
        reason = _bad_json_line(path) if suffix == ".jsonl" else None
        raise UserError(f"{path}: {reason or f'cannot be read as {BUILDERS[suffix]}'} "
                        f"({detail[0] if detail else type(error).__name__})") from error
    if len(dataset) == 0:
        raise UserError(f"{path}: no rows")
    return dataset


@contextmanager
def _datasets_silent() -> Iterator[None]:
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)


def _check_encoding(path: Path, encoding: str) -> None:
    """Refuse a text file that does not decode, naming the line: pyarrow would only fail on first use."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode(encoding)
            except UnicodeDecodeError as error:
                raise UserError(
                    f"{path}: line {number} is not valid {encoding} (byte {line[error.start:error.start + 1]!r}); "
                    "set dataset.encoding (e.g. dataset.encoding=latin-1) or re-encode the file as UTF-8") from None


def _bad_json_line(path: Path) -> str | None:
    """The first line of a JSON-lines file that is not a JSON object, as 'line N is ...'."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                if not isinstance(json.loads(line), dict):
                    return f"line {number} is not a JSON object"
            except json.JSONDecodeError as error:
                return f"line {number} is not valid JSON: {error.msg}"
    return None


def _load_hub(spec: DatasetSpec) -> DatasetDict:
    try:
        loaded = datasets.load_dataset(spec.hub_id, spec.hub_config)
    except Exception as error:  # network, missing data set, missing config: all reach the user
        raise UserError(
            f"dataset.hub_id: could not load '{spec.hub_id}' from the Hugging Face Hub "
            f"({type(error).__name__}); offline? point dataset.path at local files"
        ) from error
    return loaded.rename_columns(dict(spec.hub_renames)) if spec.hub_renames else loaded


def _checked_columns(dataset: Dataset, spec: DatasetSpec, split: str) -> Dataset:
    """The split reduced to `text` and `raw_label` (label value, list of 0/1 flags, or summary)."""
    _require_column(dataset, "text_column", spec.text_column, split)
    _require_strings(dataset, "text_column", spec.text_column, split)
    if spec.task == "summarization":
        _require_column(dataset, "summary_column", spec.summary_column, split)
        _require_strings(dataset, "summary_column", spec.summary_column, split)
        label_column = spec.summary_column
    elif spec.task == "multilabel" and spec.label_columns and set(spec.label_columns) <= set(dataset.column_names):
        dataset = dataset.map(lambda batch: {"packed_labels": _pack_flags(batch, spec.label_columns)}, batched=True)
        label_column = "packed_labels"
    else:
        key = "label_column" if spec.task == "classification" or not spec.label_columns else "label_columns"
        if spec.label_column not in dataset.column_names and key == "label_columns":
            raise UserError(f"dataset.label_columns: split '{split}' has neither the columns {list(spec.label_columns)} "
                            f"nor a list column '{spec.label_column}' (columns: {', '.join(dataset.column_names)})")
        _require_column(dataset, "label_column", spec.label_column, split)
        label_column = spec.label_column
    dataset = dataset.select_columns([spec.text_column, label_column])
    return dataset.rename_columns({spec.text_column: "text", label_column: "raw_label"})


def _require_column(dataset: Dataset, key: str, column: str, split: str) -> None:
    if column not in dataset.column_names:
        raise UserError(f"dataset.{key}: no column '{column}' in split '{split}' (columns: {', '.join(dataset.column_names)})")


def _require_strings(dataset: Dataset, key: str, column: str, split: str) -> None:
    values = dataset[column]
    bad = next((i for i, value in enumerate(values) if not isinstance(value, str)), None)
    if bad is not None:
        raise UserError(f"dataset.{key}: row {bad} of split '{split}' has a {type(values[bad]).__name__}, not a string")


def _pack_flags(batch: dict[str, list], columns: tuple[str, ...]) -> list[list[int]]:
    return [[int(flag) for flag in row] for row in zip(*(batch[column] for column in columns))]


def _subset(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    # shuffled before cutting: files are often sorted by label
    if limit is None or limit >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(limit))


def _labelled(splits: dict[str, Dataset], spec: DatasetSpec) -> LabelledSplits:
    if spec.task == "summarization":
        return LabelledSplits({role: d.rename_column("raw_label", "labels") for role, d in splits.items()}, ())
    if spec.task == "multilabel":
        names = tuple(spec.label_names or spec.label_columns or ())
        if not names:
            raise UserError("dataset.label_names: a multilabel data set needs the names of its labels "
                            "(or dataset.label_columns, one column per label)")
        to_flags = _multi_hot(names)
    else:
        names, to_flags = _single_label_ids(splits["train"], spec)
    mapped = {}
    for role, dataset in splits.items():
        try:
            mapped[role] = dataset.map(lambda batch: {"labels": [to_flags(v) for v in batch["raw_label"]]},
                                       batched=True, remove_columns=["raw_label"])
        except _BadLabel as error:
            key = "label_column" if spec.task == "classification" else "label_names"
            raise UserError(f"dataset.{key}: split '{role}' has {error}") from None
    return LabelledSplits(splits=mapped, label_names=names)


class _BadLabel(ValueError):
    """A label value that does not fit the label set; the message says which."""


def _single_label_ids(train: Dataset, spec: DatasetSpec) -> tuple[tuple[str, ...], Callable[[object], int]]:
    """Label names and the value -> id mapping: ints index label_names, other values sort into ids."""
    values = sorted(set(train["raw_label"]), key=_label_order)
    if spec.label_names is not None:
        names = tuple(spec.label_names)
        if not all(isinstance(v, int) and 0 <= v < len(names) for v in values):
            raise UserError(
                f"dataset.label_names: {len(names)} names given, so labels must be ints 0..{len(names) - 1}; found {values[:10]}"
            )
        ids = {index: index for index in range(len(names))}
    else:
        if len(values) < 2:
            raise UserError(f"dataset.label_column: the train split has {len(values)} distinct label(s); need at least 2")
        names = tuple(str(v) for v in values)
        ids = {value: index for index, value in enumerate(values)}

    def to_id(value: object) -> int:
        if value not in ids:
            raise _BadLabel(f"label {value!r} outside the label set {list(names)}")
        return ids[value]

    return names, to_id


def _multi_hot(names: tuple[str, ...]) -> Callable[[object], list[float]]:
    """Multilabel values -> 0/1 floats per label: from a list of 0/1 flags or a list of label names."""
    index = {name: position for position, name in enumerate(names)}

    def to_flags(value: object) -> list[float]:
        if not isinstance(value, list):
            raise _BadLabel(f"a label {value!r} that is not a list (0/1 per label, or label names)")
        if not value:  # a list of names, none of them
            return [0.0] * len(names)
        if all(isinstance(v, str) for v in value):
            unknown = [v for v in value if v not in index]
            if unknown:
                raise _BadLabel(f"label names {unknown[:5]} outside {list(names)}")
            return [float(name in value) for name in names]
        if len(value) != len(names) or any(v not in (0, 1) for v in value):
            raise _BadLabel(f"a label list {value[:12]} that is not {len(names)} flags of 0/1 (one per label: {list(names)})")
        return [float(v) for v in value]

    return to_flags


def _label_order(value: object) -> tuple[int, object]:
    # numbers sort numerically, everything else as text; the two kinds never compare
    return (0, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, str(value))
