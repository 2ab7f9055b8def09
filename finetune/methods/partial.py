"""Methods that train a part of the network and freeze the rest: the head, or the last blocks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from finetune.errors import require
from finetune.methods import register
from finetune.methods.base import Method, MethodSpec, freeze_except
from finetune.models import submodule

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadOnlySpec(MethodSpec):
    kind: str = "head_only"


@register
class HeadOnly(Method):
    """A new classification head trains on the frozen network (a linear probe)."""

    spec_class = HeadOnlySpec

    def refusal(self, run, kind) -> str | None:
        if kind.generates(run):
            return f"{run.method.name} trains a new classification head; a task that generates text has none"
        return None

    def prepare(self, model: nn.Module, family, task, total_steps: int) -> nn.Module:
        return freeze_except(model, [submodule(model, path, "head", family) for path in task.parts.head])

    def frozen_blocks(self, blocks: int, family) -> int:
        return blocks


@dataclass(frozen=True)
class LastLayersSpec(MethodSpec):
    kind: str = "last_layers"
    num_layers: int = 2  # the last N transformer blocks train, with the head

    def __post_init__(self) -> None:
        require(self.num_layers > 0, "method.num_layers", f"must be > 0, got {self.num_layers}")


@register
class LastLayers(Method):
    """The last `num_layers` transformer blocks and the head train."""

    spec_class = LastLayersSpec

    def frozen_blocks(self, blocks: int, family) -> int:
        return 0 if family.shared_layers else max(blocks - self.spec.num_layers, 0)

    def prepare(self, model: nn.Module, family, task, total_steps: int) -> nn.Module:
        key = "layers" if task.parts.layers == family.layers else "lm_layers"
        blocks = list(submodule(model, task.parts.layers, key, family))
        head = [submodule(model, path, "head", family) for path in task.parts.head]
        if family.shared_layers:
            log.info("%s shares its layer weights across depth: last_layers trains the shared block(s) whole", family.name)
            return freeze_except(model, blocks + head)
        layers = self.spec.num_layers
        require(layers <= len(blocks), "method.num_layers",
                f"{family.name} has {len(blocks)} layers at {task.parts.layers}; got {layers}")
        return freeze_except(model, blocks[len(blocks) - layers:] + head)
