"""Fine-tuning methods: each one decides which weights train. One entry a method in METHODS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from peft import LoraConfig, get_peft_model
from torch import nn

from finetune.errors import UserError
from finetune.schema import LastLayersSpec, LoraSpec, MethodSpec, ModelSpec
from finetune.tasks import Task


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
    return _freeze_except(model, [_submodule(model, path, "head", family) for path in family.head])


def _last_layers(model: nn.Module, spec: LastLayersSpec, family: ModelSpec, task: Task) -> nn.Module:
    blocks = _submodule(model, family.layers, "layers", family)
    if spec.num_layers > len(blocks):
        raise UserError(f"method.num_layers: {family.name} has {len(blocks)} layers at {family.layers}; got {spec.num_layers}")
    head = [_submodule(model, path, "head", family) for path in family.head]
    return _freeze_except(model, list(blocks[len(blocks) - spec.num_layers :]) + head)


def _lora(model: nn.Module, spec: LoraSpec, family: ModelSpec, task: Task) -> nn.Module:
    targets = list(spec.target_modules or family.lora_targets)
    config = LoraConfig(
        task_type=task.peft_task_type, r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets
    )
    try:
        return get_peft_model(model, config)
    except ValueError as error:  # peft: target modules not found in the model
        raise UserError(f"method.target_modules: {str(error).splitlines()[0]}") from error


METHODS: dict[str, Method] = {
    "full": Method(_full),
    "none": Method(_frozen, trains=False),
    "head_only": Method(_head_only),
    "last_layers": Method(_last_layers),
    "lora": Method(_lora),
}


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameters, counted as peft's print_trainable_parameters counts them."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total}
