"""Methods on the whole network: full fine-tuning, and the pretrained model evaluated as it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from finetune.methods import register
from finetune.methods.base import Method, MethodSpec

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class FullSpec(MethodSpec):
    kind: str = "full"


@register
class Full(Method):
    """Every parameter trains."""

    spec_class = FullSpec

    def prepare(self, model: nn.Module, family, task, total_steps: int) -> nn.Module:
        return model.requires_grad_(True)


@dataclass(frozen=True)
class NoTrainingSpec(MethodSpec):
    kind: str = "none"


@register
class NoTraining(Method):
    """The pretrained model, evaluated without training (a new classification head stays random)."""

    spec_class = NoTrainingSpec
    trains = False

    def prepare(self, model: nn.Module, family, task, total_steps: int) -> nn.Module:
        return model.requires_grad_(False)

    def frozen_blocks(self, blocks: int, family) -> int:
        return blocks
