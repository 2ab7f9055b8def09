"""Encode every split once with the task's route (token ids, or image references), with a
`length` column that orders batches and a count of the inputs cut at max_length."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from datasets import Dataset

from finetune.batching import input_lengths
from finetune.tasks.base import Task

log = logging.getLogger(__name__)


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
