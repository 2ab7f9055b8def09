"""Fine-tuning methods: each decides which weights train. One entry a method in METHODS.

Family facts (layer paths, head modules, peft targets) come from the model YAML, never from
branches on the model's name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from peft import IA3Config, LoraConfig, PeftConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model
from torch import nn

from finetune.errors import UserError
from finetune.schema import IA3Spec, LastLayersSpec, LoraSpec, MethodSpec, ModelSpec, PrefixTuningSpec, PromptTuningSpec
from finetune.tasks import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Method:
    """`prepare` returns the model with the right parameters trainable; `trains` is False for eval-only."""

    prepare: Callable[[nn.Module, MethodSpec, ModelSpec, Task], nn.Module]
    trains: bool = True


def _submodule(model: nn.Module, path: str, key: str, family: ModelSpec) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError as error:
        raise UserError(f"model.{key}: '{path}' is not a module of {type(model).__name__} (conf/model/{family.name}.yaml)") from error


def _freeze_except(model: nn.Module, trainable: list[nn.Module]) -> nn.Module:
    model.requires_grad_(False)
    for module in trainable:
        module.requires_grad_(True)
    return model


def _full(model: nn.Module, spec: MethodSpec, family: ModelSpec, task: Task) -> nn.Module:
    return model.requires_grad_(True)


def _frozen(model: nn.Module, spec: MethodSpec, family: ModelSpec, task: Task) -> nn.Module:
    return model.requires_grad_(False)


def _head_only(model: nn.Module, spec: MethodSpec, family: ModelSpec, task: Task) -> nn.Module:
    if not task.parts.head:
        raise UserError(f"method: head_only trains a new classification head; {type(task).__name__} has none")
    return _freeze_except(model, [_submodule(model, path, "head", family) for path in task.parts.head])


def _last_layers(model: nn.Module, spec: LastLayersSpec, family: ModelSpec, task: Task) -> nn.Module:
    key = "layers" if task.parts.layers == family.layers else "lm_layers"
    blocks = list(_submodule(model, task.parts.layers, key, family))
    head = [_submodule(model, path, "head", family) for path in task.parts.head]
    if family.shared_layers:
        log.info("%s shares its layer weights across depth: last_layers trains the shared block(s) whole", family.name)
        return _freeze_except(model, blocks + head)
    if spec.num_layers > len(blocks):
        raise UserError(f"method.num_layers: {family.name} has {len(blocks)} layers at {task.parts.layers}; got {spec.num_layers}")
    return _freeze_except(model, blocks[len(blocks) - spec.num_layers :] + head)


def _with_peft(model: nn.Module, config: PeftConfig, key: str) -> nn.Module:
    try:
        return get_peft_model(model, config)
    except (ValueError, TypeError, AttributeError) as error:  # peft: targets missing, model unsupported
        raise UserError(f"{key}: {str(error).splitlines()[0]}") from error


def _lora(model: nn.Module, spec: LoraSpec, family: ModelSpec, task: Task) -> nn.Module:
    config = LoraConfig(
        task_type=task.peft_task_type, r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules or family.lora_targets), modules_to_save=list(task.parts.new_modules) or None,
    )
    return _with_peft(model, config, "method.target_modules")


def _ia3(model: nn.Module, spec: IA3Spec, family: ModelSpec, task: Task) -> nn.Module:
    config = IA3Config(
        task_type=task.peft_task_type,
        target_modules=list(spec.target_modules or family.ia3_targets),
        feedforward_modules=list(spec.feedforward_modules or family.ia3_feedforward),
        modules_to_save=list(task.parts.new_modules) or None,
    )
    return _with_peft(model, config, "method.target_modules")


def _prompt_fields(model: nn.Module, family: ModelSpec) -> dict[str, int]:
    # peft reads widths from standard config names; families with others map them in their YAML
    return {field: getattr(model.config, key) for field, key in family.prompt_config_keys.items()}


def _prompt_tuning(model: nn.Module, spec: PromptTuningSpec, family: ModelSpec, task: Task) -> nn.Module:
    init = {"prompt_tuning_init": "RANDOM"}
    if spec.init_text:
        init = {"prompt_tuning_init": "TEXT", "prompt_tuning_init_text": spec.init_text,
                "tokenizer_name_or_path": model.config.name_or_path}
    config = PromptTuningConfig(
        task_type=task.peft_task_type, num_virtual_tokens=spec.num_virtual_tokens,
        modules_to_save=list(task.parts.new_modules) or None, **init, **_prompt_fields(model, family),
    )
    return _with_peft(model, config, "method")


def _prefix_tuning(model: nn.Module, spec: PrefixTuningSpec, family: ModelSpec, task: Task) -> nn.Module:
    config = PrefixTuningConfig(
        task_type=task.peft_task_type, num_virtual_tokens=spec.num_virtual_tokens, prefix_projection=spec.projection,
        modules_to_save=list(task.parts.new_modules) or None, **_prompt_fields(model, family),
    )
    return _with_peft(model, config, "method")


METHODS: dict[str, Method] = {
    "full": Method(_full),
    "none": Method(_frozen, trains=False),
    "head_only": Method(_head_only),
    "last_layers": Method(_last_layers),
    "lora": Method(_lora),
    "ia3": Method(_ia3),
    "prompt_tuning": Method(_prompt_tuning),
    "prefix_tuning": Method(_prefix_tuning),
}


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameters, counted as peft's print_trainable_parameters counts them."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total}
