"""Adapter weights initialised from the training data (peft's EVA): the SVD of each targeted layer's
inputs over training batches, computed once before the first optimizer step of a fresh run. A
resumed run takes the result from its checkpoint, so EVA must not change ranks (rho 1)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Iterator

from finetune.errors import UserError
from finetune.progress import progress

if TYPE_CHECKING:
    import torch
    from torch import nn

MAX_STEPS = 1000  # EVA's incremental SVD stops when its components settle; this bounds a run that never does
# peft cycles through the batches it was given and keeps each one it has seen: at most this many distinct
# (CPU) batches, then they are seen again
MAX_KEPT_BYTES = 1 << 30
MAX_KEPT_BATCHES = 1000


def check_eva(args: dict[str, Any]) -> None:
    """A one-line refusal of EVA settings a resumed run could not rebuild."""
    if args.get("init_lora_weights") != "eva":
        return
    rho = (args.get("eva_config") or {}).get("rho", 2.0)
    if not isinstance(rho, (int, float)) or isinstance(rho, bool) or rho != 1.0:
        raise UserError(f"method.args.eva_config.rho: must be 1.0, got {rho}: a resumed run rebuilds the adapter at "
                        "rank r before its checkpoint loads, so EVA may not move ranks between layers")


def initialize_eva(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> None:
    """peft's EVA initialisation of `model`'s LoRA A matrices from `batches` (one epoch of CPU batches)."""
    from peft.tuners.lora.eva import initialize_lora_eva_weights

    steps = _Steps()
    try:
        initialize_lora_eva_weights(model, _Kept(batches), prepare_model_inputs_fn=steps,
                                    prepare_layer_inputs_fn=_layer_rows, show_progress_bar=False)
    except ValueError as error:
        raise UserError(f"method: EVA's initialisation failed: {str(error).splitlines()[0]}") from error
    finally:
        steps.bar.close()


class _Steps:
    """peft's per-batch input hook: counts the SVD's steps (with a progress bar) and stops it at
    MAX_STEPS; returns the positions whose layer inputs enter the SVD."""

    def __init__(self) -> None:
        self.done = 0
        self.bar = progress(total=MAX_STEPS, desc="EVA init", unit="batches", leave=False)

    def __call__(self, inputs: dict[str, torch.Tensor], config: Any) -> torch.Tensor | None:
        if self.done == MAX_STEPS:
            raise UserError(f"method: EVA's SVD did not settle within {MAX_STEPS} training batches; "
                            "lower method.args.eva_config.tau (peft's default 0.99)")
        self.done += 1
        self.bar.update()
        return _positions(inputs, config)


def _positions(inputs: dict[str, torch.Tensor], config: Any) -> torch.Tensor | None:
    """The token positions whose layer inputs enter the SVD: not padding, and with eva_config.use_label_mask,
    only positions with a label (a causal model's target tokens). None: every position (images)."""
    mask = inputs.get("attention_mask")
    if mask is None:
        return None
    mask = mask.bool()
    labels = inputs.get("labels")
    if config.eva_config.use_label_mask and labels is not None and labels.shape == mask.shape:
        mask = mask & (labels != config.eva_config.label_mask_value)
    return mask


def _layer_rows(layer_input: Any, mask: torch.Tensor | None, layer_name: str) -> torch.Tensor:
    """A layer's inputs as rows for the SVD: the masked positions where the layer sees the input's
    positions; every position where it sees others (a seq2seq decoder's, a pooled head's)."""
    rows = layer_input[0] if isinstance(layer_input, (tuple, list)) else layer_input
    if mask is not None and rows.shape[:-1] == mask.shape:
        return rows[mask]
    return rows.reshape(-1, rows.shape[-1])


class _Kept:
    """One pass over the training batches, ended early once the batches peft keeps would pass
    MAX_KEPT_BATCHES or MAX_KEPT_BYTES (it then cycles through those)."""

    def __init__(self, batches: Iterable[dict[str, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:  # peft refuses an empty loader by its length
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        kept = 0
        for count, batch in enumerate(self.batches):
            kept += sum(value.nbytes for value in batch.values() if hasattr(value, "nbytes"))
            if count == MAX_KEPT_BATCHES or (count and kept > MAX_KEPT_BYTES):
                return
            yield batch
