"""Load a data set (local files or the Hub) and hand its splits to the task kind, which checks its
target columns and maps its labels."""

from __future__ import annotations

import csv
import gzip
import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import datasets
from datasets import Dataset, DatasetDict

from finetune.errors import UserError
from finetune.provenance import data_provenance
from finetune.schema import DatasetSpec
from finetune.tasks import TaskKind
from finetune.tasks.columns import LabelledSplits, SplitSource

log = logging.getLogger(__name__)

DEFAULT_SPLITS = {"train": "train", "validation": "validation", "test": "test"}
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def load_splits(spec: DatasetSpec, kind: TaskKind, seed: int, carve: bool = True) -> LabelledSplits:
    """Load train/validation/test as `spec` says, checked and labelled by the task `kind`; carve
    validation from train when it has none (`carve`; finetune-eval scores only splits that exist).
    A split named otherwise than by default must exist: a typo must not drop or replace a split."""
    raw, sources = _load_local(spec, kind) if spec.path else _load_hub(spec)
    wanted = {"train": spec.train_split, "validation": spec.validation_split, "test": spec.test_split}
    splits: dict[str, Dataset] = {}
    for role, split_name in wanted.items():
        if split_name is None:
            continue
        if split_name not in raw:
            if role == "train":
                raise UserError(f"dataset: no '{split_name}' split in {_where(spec)} (found: {', '.join(raw) or 'none'})")
            if split_name != DEFAULT_SPLITS[role]:
                raise UserError(f"dataset.{role}_split: no '{split_name}' split in {_where(spec)} "
                                f"(found: {', '.join(raw) or 'none'})")
            log.info("No '%s' split in %s", split_name, _where(spec))
            continue
        splits[role] = _checked_columns(raw[split_name], spec, kind, sources[split_name])
    if "validation" not in splits and carve:
        carved = splits["train"].train_test_split(test_size=spec.validation_fraction, seed=seed)
        splits["train"], splits["validation"] = carved["train"], carved["test"]
        log.info("Validation: %d rows carved from train (seed %d)", len(splits["validation"]), seed)
    labelled = kind.labelled(splits, spec)  # the whole train split names the classes
    limits = {"train": ("max_train_samples", spec.max_train_samples), "validation": ("max_eval_samples", spec.max_eval_samples),
              "test": ("max_eval_samples", spec.max_eval_samples)}
    subsets = {role: _subset(split, role, *limits[role], seed) for role, split in labelled.splits.items()}
    used = {name for name in wanted.values() if name in raw}
    provenance = data_provenance({name: sources[name] for name in used}, {name: raw[name] for name in used},
                                 None if spec.path else spec.hub_id, spec.hub_config)
    return LabelledSplits(subsets, labelled.label_names, provenance)


def _where(spec: DatasetSpec) -> str:
    return spec.path if spec.path else f"hub data set '{spec.hub_id}'"


def find_split_file(directory: Path, split: str) -> Path | None:
    """The file holding `split` in `directory`, e.g. train.jsonl, train.csv.gz, train.parquet; two
    such files, or an entry of that name that is not a readable file, are one-line errors."""
    named = [directory / f"{split}{suffix}{gz}" for suffix in BUILDERS for gz in ("", ".gz")]
    present = [path for path in named if path.is_symlink() or path.exists()]
    for path in present:
        if not path.is_file():
            what = "a directory" if path.is_dir() else "a broken or looping symbolic link"
            raise UserError(f"dataset.path: {path} is {what}, not a data file")
    if len(present) > 1:
        raise UserError(f"dataset.path: {', '.join(path.name for path in present)} all hold split '{split}'; "
                        "keep one")
    return present[0] if present else None


Splits = dict[str, Dataset]
Sources = dict[str, SplitSource]


def _load_local(spec: DatasetSpec, kind: TaskKind) -> tuple[Splits, Sources]:
    directory = Path(spec.path).expanduser()
    if not directory.is_dir():
        raise UserError(f"dataset.path: '{directory}' " + ("does not exist" if not directory.exists() else "is not a directory"))
    own_layout = kind.read_local(directory, spec)
    if own_layout is not None:
        return own_layout, {name: SplitSource(name, directory / name) for name in own_layout}
    names = {spec.train_split, spec.validation_split, spec.test_split} - {None}
    files = {name: find_split_file(directory, name) for name in names}
    found = {name: path for name, path in files.items() if path is not None}
    if spec.train_split not in found:
        raise UserError(
            f"dataset.path: no {spec.train_split}.jsonl, .json, .csv or .parquet (optionally .gz) in '{directory}'"
        )
    return ({name: _read_file(path, name, spec) for name, path in found.items()},
            {name: SplitSource(name, path) for name, path in found.items()})


def _read_file(path: Path, split: str, spec: DatasetSpec) -> Dataset:
    suffix = path.suffixes[-2] if path.suffix == ".gz" else path.suffix
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty")
    options: dict[str, str] = {}
    if BUILDERS[suffix] != "parquet":
        _check_encoding(path, spec.encoding)
        options = {"encoding": spec.encoding}
    if BUILDERS[suffix] == "csv":
        if _data_lines(path, spec.encoding) <= 1:
            raise UserError(f"{path}: no rows (a header at most)")
        _check_header(path, spec)
        options["sep"] = spec.delimiter
        # text columns stay text where every value looks like a number
        header = _header(path, spec)
        options["converters"] = {name: str for name in (spec.text_column, spec.summary_column) if name in header}
    try:
        with _datasets_silent():  # its builders log the parse error we are about to report in one line
            dataset = datasets.load_dataset(BUILDERS[suffix], data_files={split: str(path)}, split=split, **options)
    except Exception as error:  # the builders raise many types for unreadable files
        detail = str(error.__cause__ or error).strip().splitlines()
        reason = _bad_json_line(path) if suffix == ".jsonl" else None
        raise UserError(f"{path}: {reason or f'cannot be read as {BUILDERS[suffix]}'} "
                        f"({detail[0] if detail else type(error).__name__})") from error
    if len(dataset) == 0:
        raise UserError(f"{path}: no rows")
    if BUILDERS[suffix] == "csv" and len(dataset.column_names) == 1:
        _hint_delimiter(path, dataset.column_names[0], spec.delimiter)
    return dataset


OTHER_DELIMITERS = {";": ";", "\t": "\t", "|": "|"}  # what a CSV may be separated by, as dataset.delimiter spells it


def _hint_delimiter(path: Path, header: str, delimiter: str) -> None:
    """A one-column CSV whose header holds another separator was read with the wrong one."""
    for found, spelled in OTHER_DELIMITERS.items():
        if found != delimiter and found in header:
            raise UserError(f"{path}: read as one column '{header}' with dataset.delimiter={delimiter!r}; it looks "
                            f"separated by {spelled!r}: set dataset.delimiter='{spelled}'")


def _open(path: Path):
    """The file's bytes, through gzip for .gz; a .gz that is not gzip is a one-line error."""
    if path.suffix != ".gz":
        return open(path, "rb")
    with open(path, "rb") as handle:
        if handle.read(2) != b"\x1f\x8b":
            raise UserError(f"{path}: not a gzip file; compress it with gzip, or drop the .gz from its name")
    return gzip.open(path, "rb")


def _header(path: Path, spec: DatasetSpec) -> list[str]:
    with _open(path) as handle:
        first = handle.readline().decode(spec.encoding, errors="replace").lstrip("\ufeff")
    return next(csv.reader([first], delimiter=spec.delimiter), [])


def _check_header(path: Path, spec: DatasetSpec) -> None:
    """A CSV header that names a column twice would have pandas rename one (label.1) without a word."""
    header = _header(path, spec)
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise UserError(f"{path}: the header names {', '.join(map(repr, twice))} twice; give each column its own name")


def _data_lines(path: Path, encoding: str) -> int:
    """Non-empty lines, up to 2 (enough to tell a header-only file)."""
    count = 0
    with _open(path) as handle:
        for line in handle:
            count += bool(line.strip())
            if count > 1:
                break
    return count


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
    with _open(path) as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode(encoding)
            except UnicodeDecodeError as error:
                raise UserError(
                    f"{path}: line {number} is not valid {encoding} (byte {line[error.start:error.start + 1]!r}); "
                    "set dataset.encoding (e.g. dataset.encoding=latin-1) or re-encode the file as UTF-8") from None


def _bad_json_line(path: Path) -> str | None:
    """The first line of a JSON-lines file that is not a JSON object, as 'line N is ...'."""
    with _open(path) as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.decode("utf-8", errors="replace")
            if not line.strip():
                continue
            try:
                if not isinstance(json.loads(line), dict):
                    return f"line {number} is not a JSON object"
            except json.JSONDecodeError as error:
                return f"line {number} is not valid JSON: {error.msg}"
    return None


def _load_hub(spec: DatasetSpec) -> tuple[DatasetDict, Sources]:
    try:
        loaded = datasets.load_dataset(spec.hub_id, spec.hub_config)
    except Exception as error:  # network, missing data set, missing config: all reach the user
        raise UserError(
            f"dataset.hub_id: could not load '{spec.hub_id}' from the Hugging Face Hub "
            f"({type(error).__name__}); offline? point dataset.path at local files"
        ) from error
    loaded = loaded.rename_columns(dict(spec.hub_renames)) if spec.hub_renames else loaded
    return loaded, {name: SplitSource(name, hub_id=spec.hub_id) for name in loaded}


def _checked_columns(dataset: Dataset, spec: DatasetSpec, kind: TaskKind, source: SplitSource) -> Dataset:
    """The split reduced to `text` (the input: a text, or an image) and `raw_label` (the column the task
    kind reads its targets from)."""
    dataset, input_column = kind.input_column(dataset, spec, source)
    dataset, target_column = kind.target_column(dataset, spec, source)
    dataset = dataset.select_columns([input_column, target_column])
    return dataset.rename_columns({input_column: "text", target_column: "raw_label"})


SUBSET_STREAMS = {"train": 0, "validation": 1, "test": 2}  # one random order a split, so that no two draw the same rows


def _subset(dataset: Dataset, role: str, key: str, limit: int | None, seed: int) -> Dataset:
    """A seeded random `limit` rows (files are often sorted by label); each split draws its own order."""
    if limit is None:
        return dataset
    if limit >= len(dataset):
        if limit > len(dataset):
            log.warning("dataset.%s=%d is more than the %d rows of %s; all of them are used", key, limit, len(dataset), role)
        return dataset
    return dataset.shuffle(seed=seed + SUBSET_STREAMS[role]).select(range(limit))
