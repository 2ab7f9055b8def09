"""Load a data set (local files or the Hub) and hand its splits to the task kind, which checks its
target columns and maps its labels."""

from __future__ import annotations

import gzip
import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import datasets
from datasets import Dataset, DatasetDict

from finetune.errors import UserError
from finetune.schema import DatasetSpec
from finetune.tasks import task_kind
from finetune.tasks.columns import LabelledSplits

log = logging.getLogger(__name__)

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


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
    return task_kind(spec.task).labelled(splits, spec)


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
    own_layout = task_kind(spec.task).read_local(directory, spec)
    if own_layout is not None:
        return own_layout
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
    """The split reduced to `text` (the input: a text, or an image) and `raw_label` (the column the task
    kind reads its targets from)."""
    kind = task_kind(spec.task)
    dataset, input_column = kind.input_column(dataset, spec, split)
    dataset, target_column = kind.target_column(dataset, spec, split)
    dataset = dataset.select_columns([input_column, target_column])
    return dataset.rename_columns({input_column: "text", target_column: "raw_label"})


def _subset(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    # shuffled before cutting: files are often sorted by label
    if limit is None or limit >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(limit))
