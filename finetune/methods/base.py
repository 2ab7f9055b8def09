"""What a fine-tuning method is: a spec (its settings, validated when the run is composed) and one
class that owns everything else about it: which tasks and families it refuses, how it prepares
the model, how the optimizer sees its parameters, hooks into the training loop (an initialisation
from the training data, a step hook) with state that checkpoints keep, and whether
`finetune-export --merge` folds it into the base weights.

The engine and the runner only call these; they never name a method.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, ClassVar, Iterable

from finetune.schema import MethodSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

    from finetune.schema import ModelSpec, Run, TrainSpec
    from finetune.tasks import Task, TaskKind

__all__ = ["Method", "MethodSpec", "freeze_except"]


# the methods whose adapters peft runs on bitsandbytes' layers (tests/test_quantization.py checks the list)
QUANTIZABLE_METHODS = ("lora", "dora", "lora_plus", "lora_alpha32", "rslora", "olora", "eva", "adalora", "ia3", "hira",
                       "pvera", "randlora", "road")


class Method:
    """The defaults: train every parameter the method left trainable, with the engine's AdamW groups."""

    spec_class: ClassVar[type[MethodSpec]]
    trains: ClassVar[bool] = True  # False: the pretrained model is evaluated as it is
    standalone: ClassVar[bool] = False  # True: `fit_standalone` does the whole run, without the network loop
    uses_model: ClassVar[bool] = True  # loads the family's weights
    mergeable: ClassVar[bool] = False  # finetune-export --merge folds it into the base weights
    quantizable: ClassVar[bool] = False  # peft runs its adapters on bitsandbytes' 4/8-bit layers (model.quantization)

    def __init__(self, spec: MethodSpec) -> None:
        self.spec = spec

    def refusal(self, run: Run, kind: TaskKind) -> str | None:
        """Why this method cannot run `run` of task kind `kind` (a task or family it does not apply to), or None."""
        return None

    def prepare(self, model: nn.Module, family: ModelSpec, task: Task, total_steps: int) -> nn.Module:
        """The model with the right parameters trainable; `total_steps` is the run's optimizer step count."""
        raise NotImplementedError

    def initialize(self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> None:
        """Initialise from the training data (`batches`: an epoch of CPU batches), once before the optimizer
        of a fresh run is built; a resumed run's checkpoint holds the result, so it is not called then."""

    def frozen_blocks(self, blocks: int, family: ModelSpec) -> int:
        """How many leading blocks of the task's `blocks`-long layer stack stay frozen, with everything
        below them, so that their output can be computed once (the frozen-feature cache); 0: none."""
        return 0

    def loaded(self, model: nn.Module) -> nn.Module:
        """A trained model loaded back for inference (finetune-predict, -eval, -export), made ready to run."""
        return model

    def evaluation(self, model: nn.Module) -> AbstractContextManager[None]:
        """Entered around every evaluation of the training model: the loss reported is the task's."""
        return nullcontext()

    def reserved_positions(self) -> int:
        """Position embeddings the method takes before the text (soft prompts, prefixes)."""
        return 0

    def parameter_groups(self, model: nn.Module, train: TrainSpec) -> list[dict[str, Any]]:
        """AdamW parameter groups. Weight decay on matrices (linear and embedding weights) only: every
        bias and norm scale is a vector, whatever a family names it, as in nanoGPT."""
        trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
        return [{"params": [p for p in trainable if p.dim() >= 2], "weight_decay": train.weight_decay},
                {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0}]

    def after_optimizer_step(self, model: nn.Module, step: int) -> None:
        """Called after each optimizer step (`step` counts from 1), before the gradients are cleared."""

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Loop state the method keeps outside the model's parameters; checkpoints save it."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor], model: nn.Module) -> None:
        """Restore `state_dict()` from a checkpoint, after the model's weights."""

    def fit_standalone(self, run: Run, kind: TaskKind, data: Any, task: Task, source: str | None,
                       device: torch.device, model_dir: Any) -> Any:
        """Standalone methods: fit and score outside the training loop (`source`: the weights, if `uses_model`)."""
        raise NotImplementedError


def freeze_except(model: nn.Module, trainable: list[nn.Module]) -> nn.Module:
    model.requires_grad_(False)
    for module in trainable:
        module.requires_grad_(True)
    return model
