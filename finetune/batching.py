"""Batches by length so that padding stays near zero, and the loaders that pad each batch."""

from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import torch
from datasets import Dataset
from torch.utils.data import DataLoader, Sampler

BUCKET_BATCHES = 50  # batches per sorted chunk: long enough to group lengths, short enough to stay random


def input_lengths(encoding: dict[str, list]) -> list[int]:
    """What batches are grouped by: the encoding's own `length` (images: all alike), else its token counts."""
    return encoding["length"] if "length" in encoding else [len(ids) for ids in encoding["input_ids"]]


class LengthGroupedBatches(Sampler[list[int]]):
    """Shuffled batches of similar length: shuffle, sort within chunks, shuffle the batches.

    The order depends only on (seed, epoch), so a run is reproducible and resumable.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int) -> None:
        self.lengths = list(lengths)  # a datasets Column reads an element at a time: 0.2 s a sort of 2,048
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        chunk = self.batch_size * BUCKET_BATCHES
        batches = []
        for start in range(0, len(order), chunk):
            by_length = sorted(order[start : start + chunk], key=self.lengths.__getitem__)
            batches += [by_length[i : i + self.batch_size] for i in range(0, len(by_length), self.batch_size)]
        # a short batch goes last: Accelerate splits full batches across processes and pads only the last
        short = [batch for batch in batches if len(batch) < self.batch_size]
        full = [batch for batch in batches if len(batch) == self.batch_size]
        for index in torch.randperm(len(full), generator=generator).tolist():
            yield full[index]
        yield from short


class FixedBatches(list):
    """Precomputed batches of indices; `batch_size` lets Accelerate split them across processes."""

    def __init__(self, batches: list[list[int]], batch_size: int) -> None:
        super().__init__(batches)
        self.batch_size = batch_size


def sorted_batches(lengths: Sequence[int], batch_size: int) -> FixedBatches:
    """Evaluation batches, longest first, so a too-large batch fails at once, not at the end."""
    lengths = list(lengths)
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
    return FixedBatches([order[i : i + batch_size] for i in range(0, len(order), batch_size)], batch_size)


def make_loader(dataset: Dataset | torch.utils.data.Dataset, collate: Callable[[list[dict]], dict],
                batch_sampler, workers: int = 0) -> DataLoader:
    """A DataLoader of `dataset`'s rows (model inputs only, no `length`) whose `collate` pads each batch
    to its own longest sequence (or decodes its images, in `workers` processes)."""
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=collate,
        num_workers=workers,
        persistent_workers=workers > 0,  # not restarted for every epoch and evaluation
        generator=torch.Generator(),  # its base-seed draw must not touch the global RNG (exact resume)
        pin_memory=torch.cuda.is_available(),
    )
