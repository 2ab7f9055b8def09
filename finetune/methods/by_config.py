"""Any peft method by configuration: a YAML names peft's type and that config's own arguments.

    method:
      kind: peft
      peft_type: LOHA         # peft's PeftType
      targets: [attention]    # roles of the family (model.roles), or target_modules by name
      args: {r: 8, alpha: 8}  # LoHaConfig's own fields, checked when the run is composed

A new peft type is a YAML in conf/method; no class. Methods that need more than a config (AdaLoRA's
allocator, LoRA+'s parameter groups) keep their own class (finetune/methods/adapters.py).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional

from finetune.errors import UserError, require
from finetune.methods import register
from finetune.methods.adapters import with_peft
from finetune.methods.base import Method, MethodSpec
from finetune.methods.data_init import check_eva, initialize_eva
from finetune.methods.soft_prompts import prompt_fields
from finetune.models import meta_architecture

if TYPE_CHECKING:
    import torch
    from torch import nn

    from finetune.schema import ModelSpec

    from finetune.schema import Run
    from finetune.tasks import TaskKind

# config fields finetune sets itself: from the task, the family's roles or the loaded model
SET_BY_FINETUNE = frozenset({
    "task_type", "peft_type", "target_modules", "modules_to_save", "base_model_name_or_path", "revision",
    "inference_mode", "auto_mapping", "num_transformer_submodules", "num_attention_heads", "num_layers",
    "token_dim", "tokenizer_name_or_path",
})
# types whose one config is not enough: their own class, or inputs the training loop does not give
NOT_BY_CONFIG = {
    "ADALORA": "method=adalora (its rank allocator runs in the training loop)",
    "MULTITASK_PROMPT_TUNING": "it needs a task id per example, which single-task data sets do not have",
    "POLY": "it needs a task id per example, which single-task data sets do not have",
    "XLORA": "it mixes several trained LoRA adapters, which a run does not have",
    "CPT": "it needs per-example token-type masks of its prompt template, which the data sets do not have",
    "TRAINABLE_TOKENS": "it trains the embeddings of token ids you add, which these tasks do not add",
    "ADAPTION_PROMPT": "peft supports it on a few decoder types only, none of them with a classification head",
    "SHADOW": "it fails on these families in peft 0.21.2",
}


log = logging.getLogger(__name__)

_WIDTH_CHECKS: dict[tuple[str, ...], str | None] = {}  # (family, source, config) -> refusal, per process


def widths_refused(family: ModelSpec, config: Any) -> str | None:
    """What peft refuses when it builds `config`'s adapter on the family's architecture (a block size
    that does not divide a layer's width, more frequencies than a layer has), found on the meta device
    before anything loads; None when it builds, or when the architecture's config is not at hand."""
    key = (family.name, str(family.path), family.hub_id, json.dumps(config.to_dict(), sort_keys=True, default=sorted))
    if key not in _WIDTH_CHECKS:
        _WIDTH_CHECKS[key] = _built_on_meta(family, copy.deepcopy(config))
    return _WIDTH_CHECKS[key]


def _built_on_meta(family: ModelSpec, config: Any) -> str | None:
    from peft import get_peft_model

    model = meta_architecture(family)
    if model is None:
        return None
    try:  # low_cpu_mem_usage: the adapter's shapes are checked, its weights not initialised
        get_peft_model(model, config, low_cpu_mem_usage=True)
    except ValueError as error:
        message = str(error)
        if "No modules were targeted" in message or "not found in the base model" in message:
            return None  # with_peft names the family's linear layers when the model loads
        return message.splitlines()[0]
    except Exception as error:  # noqa: BLE001 - what only the meta device trips on; the real build decides
        log.debug("width check of %s on the meta device skipped: %s", config.peft_type, error)
        return None
    return None


def peft_config_class(peft_type: str) -> type:
    """peft's config class of `peft_type`, or a one-line error listing the known types."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    config_class = PEFT_TYPE_TO_CONFIG_MAPPING.get(peft_type)
    if config_class is None:
        raise UserError(f"method.peft_type: '{peft_type}' is not a peft type; known: {', '.join(sorted(PEFT_TYPE_TO_CONFIG_MAPPING))}")
    return config_class


@dataclass(frozen=True)
class PeftSpec(MethodSpec):
    kind: str = "peft"
    peft_type: str = "LORA"  # peft's PeftType, e.g. LOHA, VERA, LN_TUNING
    targets: List[str] = field(default_factory=lambda: ["attention"])  # roles in model.roles the method adapts
    target_modules: Optional[List[str]] = None  # module names instead of roles (peft's matching)
    args: Dict[str, Any] = field(default_factory=dict)  # the peft config's own arguments
    merges: bool = True  # peft folds it into the base weights (finetune-export --merge); false: Lily

    def __post_init__(self) -> None:
        reason = NOT_BY_CONFIG.get(self.peft_type)
        require(reason is None, "method.peft_type", f"{self.peft_type} does not run by configuration: {reason}")
        config_class = peft_config_class(self.peft_type)
        allowed = sorted({spec.name for spec in fields(config_class)} - SET_BY_FINETUNE)
        for key in self.args:
            require(key in allowed, f"method.args.{key}",
                    f"not an argument of peft's {config_class.__name__}; allowed: {', '.join(allowed)}")
        takes_targets = any(spec.name == "target_modules" for spec in fields(config_class))
        require(takes_targets or not (self.targets or self.target_modules), "method.targets",
                f"{config_class.__name__} targets no modules; set method.targets=[]")
        object.__setattr__(self, "targets", tuple(self.targets))
        if self.target_modules is not None:
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        object.__setattr__(self, "args", dict(self.args))
        check_eva(self.args)


@register
class PeftByConfig(Method):
    """Any peft type from its config; merges on export where peft can merge it."""

    spec_class = PeftSpec

    def __init__(self, spec: PeftSpec) -> None:
        super().__init__(spec)
        self.config_class = peft_config_class(spec.peft_type)
        self.mergeable = spec.merges and not self._prompt_learning
        # peft ships bitsandbytes layers for this type's adapters
        # (PiSSA's SVD needs the weights in full precision: peft refuses it on quantized ones)
        self.quantizable = importlib.util.find_spec(f"peft.tuners.{spec.peft_type.lower()}.bnb") is not None and \
            not str(spec.args.get("init_lora_weights", "")).startswith("pissa")

    def refusal(self, run: Run, kind: TaskKind) -> str | None:
        config = self.config(run.model, None)  # raises what peft's config refuses; the task's type comes with the model
        if not self._prompt_learning:  # their sizes come from the loaded model (prompt_fields)
            refused = widths_refused(run.model, config)
            if refused:
                raise UserError(f"method: peft refuses {self.spec.name} on model={run.model.name}: {refused}")
        return None

    def target_modules(self, family: ModelSpec) -> list[str] | None:
        """The module names the method adapts: method.target_modules, else the family's modules of each role."""
        if self.spec.target_modules is not None:
            return list(self.spec.target_modules)
        if not self.spec.targets:
            return None
        unknown = [role for role in self.spec.targets if role not in family.roles]
        if unknown:
            raise UserError(f"method.targets: model={family.name} has no role {unknown[0]!r}; "
                            f"its roles (model.roles): {', '.join(sorted(family.roles)) or 'none'}")
        return sorted({name for role in self.spec.targets for name in family.roles[role]})

    def config(self, family: ModelSpec, task_type: str | None, modules_to_save: list[str] | None = None,
               **model_fields: Any) -> Any:
        """peft's config for this run; what peft refuses in it is one line."""
        settings = dict(self.spec.args, task_type=task_type, **model_fields)
        targets = self.target_modules(family)
        if targets is not None:
            settings["target_modules"] = targets
        if modules_to_save and any(spec.name == "modules_to_save" for spec in fields(self.config_class)):
            settings["modules_to_save"] = modules_to_save
        try:
            return self.config_class(**settings)
        except (ValueError, TypeError) as error:
            raise UserError(f"method: peft refuses {self.spec.name} ({self.config_class.__name__}): "
                            f"{str(error).splitlines()[0]}") from error

    def prepare(self, model: nn.Module, family: ModelSpec, task, total_steps: int) -> nn.Module:
        prompt = prompt_fields(model, family) if self._prompt_learning else {}
        config = self.config(family, task.peft_task_type, list(task.parts.new_modules) or None, **prompt)
        return with_peft(model, config, "method.targets")

    def initialize(self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> None:
        if self.spec.args.get("init_lora_weights") == "eva":
            initialize_eva(model, batches)

    @property
    def _prompt_learning(self) -> bool:
        return any(spec.name == "num_virtual_tokens" for spec in fields(self.config_class))

    def reserved_positions(self) -> int:
        if not self._prompt_learning:
            return 0
        default = next(spec.default for spec in fields(self.config_class) if spec.name == "num_virtual_tokens")
        return int(self.spec.args.get("num_virtual_tokens", default))
