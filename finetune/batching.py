"""Tokenize once, then batch by length so that padding stays near zero."""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Iterator

import torch
from datasets import Dataset
from torch.utils.data import DataLoader, Sampler

from finetune.tasks import Task

log = logging.getLogger(__name__)

BUCKET_BATCHES = 50  # batches per sorted chunk: long enough to group lengths, short enough to stay random


def tokenize(splits: dict[str, Dataset], task: Task, max_length: int) -> dict[str, Dataset]:
    """The task's encoding of every split plus a `length` column (texts truncated to max_length)."""
    encoded = {}
    for role, dataset in splits.items():
        encoded[role] = dataset.map(
            lambda batch: _encode(task, batch, max_length), batched=True, remove_columns=dataset.column_names,
            new_fingerprint=_fingerprint(dataset, task, max_length),
        )
        at_limit = sum(1 for length in encoded[role]["length"] if length >= max_length)
        if at_limit:
            log.info("%s: %d of %d texts reached max_length=%d tokens and were truncated", role, at_limit, len(dataset), max_length)
    return encoded


def _fingerprint(dataset: Dataset, task: Task, max_length: int) -> str:
    # datasets would otherwise dill-hash the whole tokenizer for every split (seconds each);
    # these are the inputs that decide the encoding
    tokenizer = task.tokenizer
    key = [dataset._fingerprint, type(task).__name__, tokenizer.name_or_path, type(tokenizer).__name__,
           len(tokenizer), max_length, getattr(task, "label_names", None)]
    return hashlib.sha256(repr(key).encode()).hexdigest()[:16]


def _encode(task: Task, batch: dict[str, list], max_length: int) -> dict[str, list]:
    encoding = task.encode(batch["text"], batch["labels"], max_length)
    return {**encoding, "length": [len(ids) for ids in encoding["input_ids"]]}


class LengthGroupedBatches(Sampler[list[int]]):
    """Shuffled batches of similar length: shuffle, sort within chunks, shuffle the batches.

    The order depends only on (seed, epoch), so a run is reproducible and resumable.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
        self.lengths = lengths
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
        for index in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[index]


def sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Evaluation batches, longest first, so a too-large batch fails at once, not at the end."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def make_loader(dataset: Dataset, task: Task, batch_sampler) -> DataLoader:
    """A DataLoader that pads each batch to its own longest sequence."""
    return DataLoader(
        dataset.remove_columns("length"),
        batch_sampler=batch_sampler,
        collate_fn=task.collate,
        generator=torch.Generator(),  # its base-seed draw must not touch the global RNG (exact resume)
        pin_memory=torch.cuda.is_available(),
    )
