"""peft's virtual-token methods: prompt tuning (soft prompts) and prefix tuning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from finetune.errors import require
from finetune.methods import register
from finetune.methods.adapters import with_peft
from finetune.methods.base import Method, MethodSpec

if TYPE_CHECKING:
    from torch import nn


def prompt_fields(model: nn.Module, family) -> dict[str, int]:
    # peft reads widths from standard config names; families with others map them in their YAML
    return {field: getattr(model.config, key) for field, key in family.prompt_config_keys.items()}


@dataclass(frozen=True)
class PromptTuningSpec(MethodSpec):
    kind: str = "prompt_tuning"
    num_virtual_tokens: int = 20  # soft-prompt length, in tokens prepended to every input
    init_text: Optional[str] = "${dataset.instruction}"  # null: random init

    def __post_init__(self) -> None:
        require(self.num_virtual_tokens > 0, "method.num_virtual_tokens", f"must be > 0, got {self.num_virtual_tokens}")


@register
class PromptTuning(Method):
    """A trained soft prompt before every input; the new head trains whole."""

    spec_class = PromptTuningSpec

    def prepare(self, model: nn.Module, family, task, total_steps: int) -> nn.Module:
        from peft import PromptTuningConfig

        spec = self.spec
        init = {"prompt_tuning_init": "RANDOM"}
        if spec.init_text:
            init = {"prompt_tuning_init": "TEXT", "prompt_tuning_init_text": spec.init_text,
                    "tokenizer_name_or_path": model.config.name_or_path}
        config = PromptTuningConfig(
            task_type=task.peft_task_type, num_virtual_tokens=spec.num_virtual_tokens,
            modules_to_save=list(task.parts.new_modules) or None, **init, **prompt_fields(model, family),
        )
        return with_peft(model, config, "method")

    def reserved_positions(self) -> int:
        return self.spec.num_virtual_tokens


@dataclass(frozen=True)
class PrefixTuningSpec(MethodSpec):
    kind: str = "prefix_tuning"
    num_virtual_tokens: int = 20  # prefix length in every layer's keys and values
    projection: bool = False  # reparameterise the prefix through an MLP

    def __post_init__(self) -> None:
        require(self.num_virtual_tokens > 0, "method.num_virtual_tokens", f"must be > 0, got {self.num_virtual_tokens}")


@register
class PrefixTuning(Method):
    """Trained keys and values before every layer's attention; the new head trains whole."""

    spec_class = PrefixTuningSpec

    def prepare(self, model: nn.Module, family, task, total_steps: int) -> nn.Module:
        from peft import PrefixTuningConfig

        config = PrefixTuningConfig(
            task_type=task.peft_task_type, num_virtual_tokens=self.spec.num_virtual_tokens,
            prefix_projection=self.spec.projection, modules_to_save=list(task.parts.new_modules) or None,
            **prompt_fields(model, family),
        )
        return with_peft(model, config, "method")

    def reserved_positions(self) -> int:
        return self.spec.num_virtual_tokens
