"""Tokenize once, then batch by length so that padding stays near zero."""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from datasets import Dataset
from torch.utils.data import DataLoader, Sampler

from finetune.tasks import Task

log = logging.getLogger(__name__)

BUCKET_BATCHES = 50  # batches per sorted chunk: long enough to group lengths, short enough to stay random


def tokenize(splits: dict[str, Dataset], task: Task, max_length: int, prefix: str = "") -> Tokenized:
    """The task's encoding of every split plus a `length` column; inputs are `prefix + text`,
    truncated to max_length tokens, and the truncated rows are counted per split."""
    encoded, truncated = {}, {}
    for role, dataset in splits.items():
        mapped = dataset.map(
            lambda batch: _encode(task, batch, max_length, prefix), batched=True, remove_columns=dataset.column_names,
            new_fingerprint=_fingerprint(dataset, task, max_length, prefix),
        )
        truncated[role] = sum(mapped["truncated"])
        encoded[role] = mapped.remove_columns("truncated")
        if truncated[role]:
            log.info("%s: %d of %d texts reached max_length=%d tokens and were truncated",
                     role, truncated[role], len(dataset), max_length)
    return Tokenized(encoded, truncated, max_length)


@dataclass(frozen=True)
class Tokenized:
    """Encoded splits, and how many inputs of each were cut at `max_length` tokens."""

    splits: dict[str, Dataset]
    truncated: dict[str, int]
    max_length: int


def _fingerprint(dataset: Dataset, task: Task, max_length: int, prefix: str) -> str:
    # datasets would otherwise dill-hash the whole tokenizer for every split (seconds each);
    # these are the inputs that decide the encoding
    tokenizer = task.tokenizer
    settings = sorted((name, repr(value)) for name, value in vars(task).items() if name != "tokenizer")
    key = [dataset._fingerprint, type(task).__name__, settings, tokenizer.name_or_path, type(tokenizer).__name__, len(tokenizer),
           max_length, prefix]
    return hashlib.sha256(repr(key).encode()).hexdigest()[:16]


def _encode(task: Task, batch: dict[str, list], max_length: int, prefix: str) -> dict[str, list]:
    inputs = [prefix + text for text in batch["text"]] if prefix else batch["text"]
    encoding = task.encode(inputs, batch["labels"], max_length)
    return {**encoding, "length": input_lengths(encoding)}


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
