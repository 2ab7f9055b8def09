"""peft's adapter methods: LoRA (with its DoRA and LoRA+ variants), AdaLoRA and IA3."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, List, Optional

from finetune.errors import UserError, require
from finetune.methods import register
from finetune.methods.base import Method, MethodSpec

if TYPE_CHECKING:
    import torch
    from torch import nn


def with_peft(model: nn.Module, config: Any, key: str) -> nn.Module:
    """`get_peft_model`; what peft refuses (targets missing, model unsupported) is a one-line error on `key`."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, config)
    except (ValueError, TypeError, AttributeError) as error:
        if "No modules were targeted" in str(error) or "not found in the base model" in str(error):
            linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                             if type(module).__name__ in ("Linear", "Conv1D")})
            raise UserError(f"{key}: no module of {type(model).__name__} is named {list(config.target_modules or [])}; "
                            f"its linear layers: {', '.join(linear)}") from error
        raise UserError(f"{key}: {str(error).splitlines()[0]}") from error


def _tuple_or_none(spec: MethodSpec, *keys: str) -> None:
    for key in keys:
        if getattr(spec, key) is not None:
            object.__setattr__(spec, key, tuple(getattr(spec, key)))


@dataclass(frozen=True)
class LoraSpec(MethodSpec):
    kind: str = "lora"
    r: int = 8  # rank of the update matrices
    alpha: int = 16  # scaling: the update is multiplied by alpha / r
    dropout: float = 0.1
    target_modules: Optional[List[str]] = None  # null: the model family's lora_targets
    use_dora: bool = False  # DoRA: magnitude and direction of each weight trained apart (method=dora)
    loraplus_lr_ratio: Optional[float] = None  # LoRA+: the B matrices learn this many times faster (method=lora_plus)

    def __post_init__(self) -> None:
        require(self.r > 0, "method.r", f"must be > 0, got {self.r}")
        require(0 <= self.dropout < 1, "method.dropout", f"must be in [0, 1), got {self.dropout}")
        require(self.loraplus_lr_ratio is None or self.loraplus_lr_ratio >= 1, "method.loraplus_lr_ratio",
                f"must be >= 1 or null, got {self.loraplus_lr_ratio}")
        _tuple_or_none(self, "target_modules")


@register
class Lora(Method):
    """Low-rank updates on the family's `lora_targets`; the new head trains whole. Merges on export."""

    spec_class = LoraSpec
    mergeable = True
    quantizable = True

    def prepare(self, model: nn.Module, family, task, total_steps: int) -> nn.Module:
        from peft import LoraConfig

        spec = self.spec
        config = LoraConfig(
            task_type=task.peft_task_type, r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
            target_modules=list(spec.target_modules or family.lora_targets), use_dora=spec.use_dora,
            modules_to_save=list(task.parts.new_modules) or None,
        )
        return with_peft(model, config, "method.target_modules")

    def parameter_groups(self, model: nn.Module, train) -> list[dict[str, Any]]:
        if self.spec.loraplus_lr_ratio is None:
            return super().parameter_groups(model, train)
        import torch
        from peft.optimizers import create_loraplus_optimizer

        # peft's LoRA+ grouping (B matrices and vectors at lr x ratio), handed to the engine's AdamW
        grouped = create_loraplus_optimizer(model, torch.optim.AdamW, lr=train.lr, loraplus_weight_decay=train.weight_decay,
                                            loraplus_lr_ratio=self.spec.loraplus_lr_ratio)
        return [{key: group[key] for key in ("params", "lr", "weight_decay")} for group in grouped.param_groups
                if group["params"]]


@dataclass(frozen=True)
class AdaLoraSpec(MethodSpec):
    kind: str = "adalora"
    init_r: int = 12  # every update matrix starts at this rank ...
    target_r: int = 8  # ... and the budget is pruned to this average rank
    alpha: int = 16
    dropout: float = 0.1
    target_modules: Optional[List[str]] = None  # null: the model family's lora_targets
    warmup_fraction: float = 0.1  # of the optimizer steps, before any rank is pruned (peft's tinit)
    final_fraction: float = 0.2  # of the steps, at the end, with the final ranks fixed (peft's tfinal)
    every_steps: int = 1  # steps between budget updates (peft's deltaT)
    beta1: float = 0.85  # smoothing of the importance scores
    beta2: float = 0.85  # smoothing of their uncertainty
    orth_reg_weight: float = 0.5  # orthogonality penalty on P and Q, added to the loss

    def __post_init__(self) -> None:
        require(0 < self.target_r <= self.init_r, "method.target_r",
                f"must be between 1 and method.init_r={self.init_r}, got {self.target_r}")
        require(0 <= self.dropout < 1, "method.dropout", f"must be in [0, 1), got {self.dropout}")
        require(0 <= self.warmup_fraction and 0 <= self.final_fraction and self.warmup_fraction + self.final_fraction < 1,
                "method.warmup_fraction", "warmup_fraction and final_fraction must be >= 0 and leave steps for "
                f"pruning (sum < 1), got {self.warmup_fraction} and {self.final_fraction}")
        require(self.every_steps > 0, "method.every_steps", f"must be > 0, got {self.every_steps}")
        _tuple_or_none(self, "target_modules")


@register
class AdaLora(Method):
    """LoRA whose ranks are reallocated during training by importance: the allocator runs after each
    optimizer step, and its smoothed importance scores and final rank pattern are checkpointed."""

    spec_class = AdaLoraSpec
    mergeable = True
    quantizable = True
    # the allocator's scores: its smoothed ones, and the last step's, whose presence tells peft that
    # the smoothed ones exist (without it peft starts them from zero again)
    _STATES = ("ipt", "exp_avg_ipt", "exp_avg_unc")

    def prepare(self, model: nn.Module, family, task, total_steps: int) -> nn.Module:
        from peft import AdaLoraConfig

        spec = self.spec
        config = AdaLoraConfig(
            task_type=task.peft_task_type, init_r=spec.init_r, target_r=spec.target_r, lora_alpha=spec.alpha,
            lora_dropout=spec.dropout, target_modules=list(spec.target_modules or family.lora_targets),
            total_step=total_steps, tinit=int(spec.warmup_fraction * total_steps),
            tfinal=int(spec.final_fraction * total_steps), deltaT=spec.every_steps, beta1=spec.beta1, beta2=spec.beta2,
            orth_reg_weight=spec.orth_reg_weight, modules_to_save=list(task.parts.new_modules) or None,
        )
        return with_peft(model, config, "method.target_modules")

    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        model.base_model.update_and_allocate(step)

    def loaded(self, model: nn.Module) -> nn.Module:
        # peft names the trainable adapter only when training, but its forward reads the name to add
        # the orthogonality penalty whenever labels are passed, as in an evaluation
        model.base_model.trainable_adapter_name = model.active_adapter
        self._config(model).orth_reg_weight = 0.0  # a loaded model only evaluates
        return model

    @contextmanager
    def evaluation(self, model: nn.Module) -> Iterator[None]:
        # the penalty regularises training; an evaluation loss without it is comparable across methods
        config = self._config(model)
        weight, config.orth_reg_weight = config.orth_reg_weight, 0.0
        try:
            yield
        finally:
            config.orth_reg_weight = weight

    @staticmethod
    def _config(model: nn.Module) -> Any:
        return model.peft_config[model.active_adapter]

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        import torch

        allocator = model.base_model.rankallocator
        state = {f"{name}/{key}": value for name in self._STATES for key, value in getattr(allocator, name).items()}
        pattern = self._config(model).rank_pattern or {}
        state.update({f"rank_pattern/{key}": torch.tensor(mask) for key, mask in pattern.items()})
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor], model: nn.Module) -> None:
        allocator = model.base_model.rankallocator
        device = next(model.parameters()).device
        pattern = {}
        for name, value in state.items():
            group, key = name.split("/", 1)
            if group == "rank_pattern":
                pattern[key] = value.tolist()
            else:
                getattr(allocator, group)[key] = value.to(device)
        if pattern:
            self._config(model).rank_pattern = pattern


@dataclass(frozen=True)
class IA3Spec(MethodSpec):
    kind: str = "ia3"
    target_modules: Optional[List[str]] = None  # null: the model family's ia3_targets
    feedforward_modules: Optional[List[str]] = None  # null: the model family's ia3_feedforward

    def __post_init__(self) -> None:
        _tuple_or_none(self, "target_modules", "feedforward_modules")


@register
class IA3(Method):
    """Learned scaling vectors on the family's `ia3_targets`; merges on export."""

    spec_class = IA3Spec
    mergeable = True
    quantizable = True

    def prepare(self, model: nn.Module, family, task, total_steps: int) -> nn.Module:
        from peft import IA3Config

        config = IA3Config(
            task_type=task.peft_task_type,
            target_modules=list(self.spec.target_modules or family.ia3_targets),
            feedforward_modules=list(self.spec.feedforward_modules or family.ia3_feedforward),
            modules_to_save=list(task.parts.new_modules) or None,
        )
        return with_peft(model, config, "method.target_modules")
