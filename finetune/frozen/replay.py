"""Replaying cached states: while installed, the frozen blocks return the batch's cached states
instead of computing them, and the blocks above them run as before."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

STATES = "frozen_states"  # the batch key that carries the cached states to the model


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


def check_replay(model: nn.Module, boundary: Boundary, batch: dict[str, torch.Tensor], states: torch.Tensor,
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
