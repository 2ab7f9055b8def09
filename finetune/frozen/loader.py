"""A split's loader on cached states: its rows carry their states, and each batch pads them into
the attended positions of its token grid."""

from __future__ import annotations

from typing import Any, Callable

import torch
from datasets import Dataset

from finetune.frozen.replay import STATES
from finetune.frozen.store import FeatureSet


class WithStates(torch.utils.data.Dataset):
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


def with_states(collate: Callable[[list[dict]], dict]) -> Callable[[list[dict]], dict]:
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
