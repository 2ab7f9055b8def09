"""Frozen-feature sets on disk: one split's token states end to end (memory-mapped) and each row's
offset, keyed and verified, written to a temporary folder and renamed when complete."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch
from accelerate import Accelerator
from datasets import Dataset
from torch import nn

from finetune.batching import sorted_batches
from finetune.frozen.replay import Boundary, CacheUnusable, check_replay
from finetune.progress import progress
from finetune.schema import Run
from finetune.tasks import Task

FORMAT = 1  # bumped when the layout on disk changes
STORAGE_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "int16"}  # bf16 kept as its bits


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


def inputs_digest(dataset: Dataset) -> str:
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


class _Captured(Exception):
    """Raised by the capture hook once the boundary's states are in: the blocks above need not run."""


def build(model: nn.Module, boundary: Boundary, dataset: Dataset, task: Task, run: Run, accelerator: Accelerator,
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
                    check_replay(model, boundary, batch, states, reference)
                    written = _open_states(directory, states, int(offsets[-1]))
                attended = batch["attention_mask"].bool().cpu()
                stored = states.view(_storage_view(states.dtype)).cpu()
                for position, row in enumerate(batch_rows):
                    written[offsets[row]:offsets[row + 1]] = stored[position][attended[position]].numpy()
    finally:
        hook.remove()
    written.flush()
    return written, states.dtype, boundary.output_length


def _open_states(directory: Path, states: torch.Tensor, tokens: int) -> np.memmap:
    storage = STORAGE_DTYPES.get(states.dtype)
    if storage is None:
        raise CacheUnusable(f"its hidden states are {states.dtype}")
    return np.memmap(directory / "states.bin", dtype=storage, mode="w+", shape=(tokens, states.shape[-1]))


def _storage_view(dtype: torch.dtype) -> torch.dtype:
    return torch.int16 if dtype == torch.bfloat16 else dtype
