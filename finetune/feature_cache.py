"""Frozen-feature cache: never compute the same frozen activations twice.

A method that trains only the top of the network (head_only, last_layers, and the evaluation of
none) leaves the first blocks of the task's layer stack frozen (`Method.frozen_blocks`). Their
output is computed once per split, in eval mode (so no dropout acts inside them), written to
disk and memory-mapped; every epoch, every evaluation, every run of a sweep and every resumed run
then reads it. While the cache is in use the frozen blocks do not run: each returns the batch's
cached states (`Replay`), and the blocks above them train as before.

A feature set is keyed by everything that changes it: the frozen weights, the model class, the
layer stack and the boundary, the split's token ids, the precision, the device type and the
torch/transformers versions. It is written to a temporary directory and renamed when complete;
on load the key and the file sizes are verified, so a stale or partial set is never used. Before
a set is first written, one batch is run both ways: a model whose blocks cannot be replayed
(their outputs differ) trains without the cache.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow.compute as pc
import torch
import transformers
from accelerate import Accelerator
from datasets import Dataset
from torch import nn

from finetune.batching import sorted_batches
from finetune.hardware import run_precision
from finetune.methods.base import submodule
from finetune.progress import progress

if TYPE_CHECKING:
    from finetune.methods import Method
    from finetune.schema import Run
    from finetune.tasks import Task

log = logging.getLogger(__name__)

STATES = "frozen_states"  # the batch key that carries the cached states to the model
FORMAT = 1  # bumped when the layout on disk changes
STORAGE_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "int16"}  # bf16 kept as its bits


def cache_root() -> Path:
    """$FINETUNE_CACHE, else ~/.cache/finetune: where frozen features (and the SVM's embeddings) live."""
    return Path(os.environ.get("FINETUNE_CACHE") or Path.home() / ".cache" / "finetune").expanduser()


class CacheUnusable(Exception):
    """The cache cannot serve this run (its blocks do not replay exactly, or a parallel run replaced the
    set it wrote); the run goes on without it."""


@dataclass(frozen=True)
class Boundary:
    """Where the frozen part ends: the first `frozen` blocks of `blocks`, the module that feeds the first
    block (skipped too, where the family names it), and the shape of a block's output."""

    blocks: nn.ModuleList
    frozen: int
    embeddings: nn.Module | None = None
    output_length: int = 0  # 0: a block returns a tensor; n: an n-tuple whose first item is the hidden states

    def replayed(self, states: torch.Tensor) -> Any:
        """What a frozen block returns in place of its output."""
        return (states,) + (None,) * (self.output_length - 1) if self.output_length else states


class FeatureSet:
    """One split's cached states on disk: the rows' token states end to end, and each row's offset."""

    def __init__(self, directory: Path, meta: dict[str, Any]) -> None:
        self.directory = directory
        self.meta = meta
        self.offsets = np.load(directory / "offsets.npy")
        self.states = np.memmap(directory / "states.bin", dtype=meta["storage"], mode="r", shape=tuple(meta["shape"]))
        self.dtype = getattr(torch, meta["dtype"])

    @property
    def nbytes(self) -> int:
        return int(self.states.nbytes)

    def row(self, index: int) -> torch.Tensor:
        """Row `index`'s states, one per token: [length, hidden]."""
        values = torch.from_numpy(np.array(self.states[self.offsets[index]:self.offsets[index + 1]]))
        return values.view(self.dtype)

    @classmethod
    def open(cls, directory: Path, key: str) -> FeatureSet | None:
        """The set in `directory` if it is complete and was written for `key`; None otherwise."""
        try:
            meta = json.loads((directory / "meta.json").read_text())
            if meta["key"] != key or meta["format"] != FORMAT:
                return None
            expected = int(np.prod(meta["shape"])) * np.dtype(meta["storage"]).itemsize
            if (directory / "states.bin").stat().st_size != expected:
                return None
            features = cls(directory, meta)
            if len(features.offsets) != meta["rows"] + 1 or features.offsets[-1] != meta["shape"][0]:
                return None
            return features
        except (OSError, ValueError, KeyError):
            return None


class _WithStates(torch.utils.data.Dataset):
    """A tokenized split whose rows also carry their cached states."""

    def __init__(self, dataset: Dataset, features: FeatureSet) -> None:
        self.dataset = dataset
        self.features = features

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.dataset[index], STATES: self.features.row(index)}

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        return [{**row, STATES: self.features.row(index)} for index, row in zip(indices, self.dataset.__getitems__(indices))]


def _with_states(collate: Callable[[list[dict]], dict]) -> Callable[[list[dict]], dict]:
    """`collate`, plus the rows' states padded to the batch: each row's states fill its attended positions."""

    def collate_with_states(rows: list[dict]) -> dict[str, torch.Tensor]:
        states = [row.pop(STATES) for row in rows]
        batch = collate(rows)
        attended = batch["attention_mask"].bool()
        padded = states[0].new_zeros(*attended.shape, states[0].shape[-1])
        padded[attended] = torch.cat(states)  # row-major: row 0's tokens, then row 1's, on either padding side
        batch[STATES] = padded
        return batch

    return collate_with_states


class Replay:
    """While installed, the frozen blocks return the states of the batch the model was called with."""

    def __init__(self, model: nn.Module, boundary: Boundary) -> None:
        self.model = model
        self.boundary = boundary
        self.states: torch.Tensor | None = None

    @contextmanager
    def installed(self) -> Iterator[None]:
        hook = self.model.register_forward_pre_hook(self._take_states, with_kwargs=True)
        frozen = list(self.boundary.blocks)[: self.boundary.frozen]
        for block in frozen:
            block.forward = self._replayed  # an instance attribute: the weights and state dict stay untouched
        skipped = self.boundary.embeddings
        if skipped is not None:
            skipped.forward = self._states  # the first frozen block ignores what it is given
        try:
            yield
        finally:
            hook.remove()
            for module in frozen + ([skipped] if skipped is not None else []):
                del module.forward
            self.states = None

    def _take_states(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if STATES not in kwargs:
            raise RuntimeError(f"the frozen-feature cache is in use, but the batch has no '{STATES}'")
        self.states = kwargs.pop(STATES)
        return args, kwargs

    def _replayed(self, *args: Any, **kwargs: Any) -> Any:
        return self.boundary.replayed(self.states)

    def _states(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.states


class FrozenFeatures:
    """The run's cached splits; `attach` gives a split's loader its states, `replaying` swaps the frozen blocks out."""

    def __init__(self, model: nn.Module | None = None, boundary: Boundary | None = None,
                 sets: dict[str, FeatureSet] | None = None, report: dict[str, dict[str, Any]] | None = None) -> None:
        self.model = model
        self.boundary = boundary
        self.sets = sets or {}
        self.report = report or {}  # per split: computed or reused, megabytes, seconds spent computing

    def seconds(self, role: str) -> float:
        """Seconds this run spent computing `role`'s features (0 if reused, or without a cache)."""
        return self.report.get(role, {}).get("seconds", 0.0)

    def attach(self, role: str, dataset: Dataset, collate: Callable) -> tuple[Any, Callable]:
        """The dataset and collate function of `role`'s loader (unchanged without a cache)."""
        if role not in self.sets:
            return dataset, collate
        return _WithStates(dataset, self.sets[role]), _with_states(collate)

    @contextmanager
    def replaying(self) -> Iterator[None]:
        """The frozen blocks replay cached states for the duration (nothing changes without a cache)."""
        if not self.sets:
            yield
            return
        with Replay(self.model, self.boundary).installed():
            yield


def frozen_features(run: Run, method: Method, model: nn.Module, task: Task, splits: dict[str, Dataset],
                    accelerator: Accelerator) -> FrozenFeatures:
    """The cached frozen states of `splits` (built where missing), or an empty cache where the method
    freezes no leading block, the task generates text or its inputs are not token ids (images: the
    key is the split's token ids), `train.feature_cache` is off, or the model cannot be replayed."""
    if not run.train.feature_cache or run.generates_text():
        return FrozenFeatures()
    family = run.model
    blocks = submodule(model, task.parts.layers, "layers", family)
    frozen = method.frozen_blocks(len(blocks), family)
    if frozen == 0:
        return FrozenFeatures()
    if any("input_ids" not in dataset.column_names for dataset in splits.values()):
        log.info("Frozen-feature cache: not used, the inputs are not token ids")
        return FrozenFeatures()
    embeddings = submodule(model, family.embeddings, "embeddings", family) if family.embeddings else None
    boundary = Boundary(blocks, frozen, embeddings)
    key = {
        "format": FORMAT, "weights": _frozen_weights_digest(model, blocks, frozen, task, run),
        "model_class": type(model).__qualname__, "layers": task.parts.layers, "frozen_blocks": frozen,
        "precision": run_precision(accelerator), "device": accelerator.device.type, **library_versions(),
    }
    if key["weights"] is None:
        return FrozenFeatures()
    root = cache_root() / "features"
    sets, report = {}, {}
    try:
        with accelerator.main_process_first():  # one process builds, the others find it complete
            for role, dataset in splits.items():
                if len(dataset) == 0:
                    continue
                split_key = _digest(json.dumps({**key, "inputs": _inputs_digest(dataset)}, sort_keys=True).encode())
                directory = root / split_key
                started = time.perf_counter()
                features = FeatureSet.open(directory, split_key)
                status = "reused"
                if features is None:
                    _build(model, boundary, dataset, task, run, accelerator, directory, split_key, role)
                    features = FeatureSet.open(directory, split_key)
                    if features is None:
                        raise CacheUnusable(f"{directory} was replaced while this run wrote it")
                    status = "computed"
                boundary = replace(boundary, output_length=features.meta["output_length"])
                sets[role] = features
                megabytes = features.nbytes / 2**20
                report[role] = {"status": status, "megabytes": round(megabytes, 1),
                                "seconds": time.perf_counter() - started if status == "computed" else 0.0}
                log.info("Frozen features (%d of %d blocks) of %s: %s, %.1f MB in %s", frozen, len(blocks), role,
                         status, megabytes, directory)
    except CacheUnusable as reason:
        log.warning("Frozen-feature cache not used: %s; the frozen blocks run every step", reason)
        return FrozenFeatures()
    return FrozenFeatures(model, boundary, sets, report)


def _frozen_weights_digest(model: nn.Module, blocks: nn.ModuleList, frozen: int, task: Task, run: Run) -> str | None:
    """A digest of every tensor the frozen states depend on: all but the trained blocks and the head.
    None if any of them trains (the method froze less than it declared)."""
    above = list(blocks)[frozen:] + [submodule(model, path, "head", run.model) for path in task.parts.head]
    skipped = {id(tensor) for module in above for tensor in itertools.chain(module.parameters(), module.buffers())}
    below = [(name, tensor) for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers())
             if id(tensor) not in skipped]
    training = [name for name, tensor in below if tensor.requires_grad]
    if training:
        log.warning("Frozen-feature cache not used: %s trains although the method freezes it", training[0])
        return None
    return weights_digest(tensor for _, tensor in below)


def weights_digest(tensors: Iterable[torch.Tensor]) -> str:
    """A digest of the tensors' shapes, dtypes and values, in order."""
    digest = hashlib.blake2b(digest_size=16)
    for tensor in tensors:
        digest.update(f"{tuple(tensor.shape)} {tensor.dtype}".encode())
        digest.update(tensor.detach().reshape(-1).cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _inputs_digest(dataset: Dataset) -> str:
    """A digest of a tokenized split's model inputs (every column but the labels), row by row."""
    columns = sorted(set(dataset.column_names) - {"labels", "length"})
    table = dataset.select_columns(columns).with_format("arrow")[:]
    digest = hashlib.blake2b(digest_size=16)
    for name in columns:
        column = table.column(name)
        digest.update(name.encode())
        digest.update(pc.list_value_length(column).to_numpy().tobytes())
        digest.update(pc.list_flatten(column).to_numpy().astype(np.int64).tobytes())
    return digest.hexdigest()


def token_ids_digest(rows: list[list[int]]) -> str:
    """A digest of tokenized rows (their lengths and ids)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.array([len(ids) for ids in rows], dtype=np.int64).tobytes())
    digest.update(np.array([token for ids in rows for token in ids], dtype=np.int64).tobytes())
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """The libraries whose kernels and model code compute the features."""
    return {"torch": torch.__version__, "transformers": transformers.__version__}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def cached_array(kind: str, key: dict[str, Any], compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
    """`compute()`, stored under cache_root()/kind by a digest of `key` (which must name every input
    of the computation) and read back by later calls; (the array, whether it was read back)."""
    path = cache_root() / kind / f"{_digest(json.dumps(key, sort_keys=True).encode())}.npy"
    try:
        return np.load(path), True
    except (OSError, ValueError):  # absent, or unreadable: computed again and replaced
        pass
    array = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.stem}.partial-{os.getpid()}.npy")
    np.save(temporary, array)
    os.replace(temporary, path)  # atomic: a reader sees the whole array or none
    return array, False


class _Captured(Exception):
    """Raised by the capture hook once the boundary's states are in: the blocks above need not run."""


def _build(model: nn.Module, boundary: Boundary, dataset: Dataset, task: Task, run: Run, accelerator: Accelerator,
           directory: Path, key: str, role: str) -> None:
    """Compute `dataset`'s states at the boundary (checking that one batch replays exactly) into a
    temporary folder, then rename it to `directory`; a run that fails on the way leaves nothing."""
    lengths = list(dataset["length"])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    temporary = directory.with_name(f"{directory.name}.partial-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    try:
        written, dtype, output_length = _write_states(model, boundary, dataset.remove_columns("length"), lengths, offsets,
                                                      task, run, accelerator, temporary, role)
        np.save(temporary / "offsets.npy", offsets)
        meta = {"key": key, "format": FORMAT, "rows": len(lengths), "shape": list(written.shape),
                "storage": str(written.dtype), "dtype": str(dtype).removeprefix("torch."), "output_length": output_length}
        (temporary / "meta.json").write_text(json.dumps(meta))  # last: a set without it is incomplete
        if FeatureSet.open(directory, key) is None:  # else a parallel run finished the same set first: keep it
            shutil.rmtree(directory, ignore_errors=True)  # a stale or partial set of this key
            try:
                temporary.rename(directory)
            except OSError:  # a parallel run renamed its set in between
                pass
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _write_states(model: nn.Module, boundary: Boundary, rows: Dataset, lengths: list[int], offsets: np.ndarray,
                  task: Task, run: Run, accelerator: Accelerator, directory: Path,
                  role: str) -> tuple[np.memmap, torch.dtype, int]:
    """Run the rows through the model in eval mode, capturing the boundary block's output; write each
    row's attended states at its offset. Returns the states file, their dtype and the block's output length."""
    last_block = boundary.blocks[boundary.frozen - 1]
    captured: list[Any] = []
    calls_per_forward = 0  # learnt from the first batch (a shared block runs several times a forward)

    def capture(module: nn.Module, args: tuple, output: Any) -> None:
        captured.append(output)
        if calls_per_forward and len(captured) == calls_per_forward:
            raise _Captured

    model.eval()
    hook = last_block.register_forward_hook(capture)
    batches = sorted_batches(lengths, run.train.evaluation_batch_size)
    try:
        with torch.no_grad(), accelerator.autocast():
            for index, batch_rows in enumerate(progress(batches, desc=f"frozen features ({role})", unit="batches", leave=False)):
                batch = {name: value.to(accelerator.device) for name, value in
                         task.collate_eval(rows.__getitems__(batch_rows)).items() if name != "labels"}
                captured.clear()
                try:
                    reference = model(**batch)
                except _Captured:
                    pass
                output = captured[-1]
                states = output[0] if isinstance(output, tuple) else output
                if index == 0:
                    calls_per_forward = len(captured)
                    boundary = replace(boundary, output_length=len(output) if isinstance(output, tuple) else 0)
                    _check_replay(model, boundary, batch, states, reference)
                    written = _open_states(directory, states, int(offsets[-1]))
                attended = batch["attention_mask"].bool().cpu()
                stored = states.view(_storage_view(states.dtype)).cpu()
                for position, row in enumerate(batch_rows):
                    written[offsets[row]:offsets[row + 1]] = stored[position][attended[position]].numpy()
    finally:
        hook.remove()
    written.flush()
    return written, states.dtype, boundary.output_length


def _check_replay(model: nn.Module, boundary: Boundary, batch: dict[str, torch.Tensor], states: torch.Tensor,
                  reference: Any) -> None:
    """The batch through the model with its frozen blocks replayed must give the logits it gave whole."""
    if getattr(reference, "logits", None) is None:
        raise CacheUnusable(f"{type(model).__name__} returns no logits to check the replay against")
    with Replay(model, boundary).installed():
        replayed = model(**batch, **{STATES: states})
    expected, got = reference.logits.float(), replayed.logits.float()
    if not torch.allclose(expected, got, rtol=1e-4, atol=1e-5 * max(1.0, float(expected.abs().max()))):
        raise CacheUnusable(f"{type(model).__name__} gives other logits with its first {boundary.frozen} blocks "
                            f"replayed (max difference {float((expected - got).abs().max()):.3g})")


def _open_states(directory: Path, states: torch.Tensor, tokens: int) -> np.memmap:
    storage = STORAGE_DTYPES.get(states.dtype)
    if storage is None:
        raise CacheUnusable(f"its hidden states are {states.dtype}")
    return np.memmap(directory / "states.bin", dtype=storage, mode="w+", shape=(tokens, states.shape[-1]))


def _storage_view(dtype: torch.dtype) -> torch.dtype:
    return torch.int16 if dtype == torch.bfloat16 else dtype
