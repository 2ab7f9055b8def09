"""Scoring a model on one split: every batch through the task's evaluation, the split's metrics
over all batches (gathered across processes) and readable samples where the task makes text."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from finetune.methods import Method
from finetune.progress import progress
from finetune.tasks import Task
from finetune.tasks.generation import IGNORE


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one split (with the mean loss) and readable samples where the task makes text."""

    metrics: dict[str, float]
    samples: list[dict[str, Any]]


def evaluate(model: nn.Module, loader: DataLoader, task: Task, accelerator: Accelerator,
             method: Method | None = None) -> Evaluation:
    """Run `task.evaluate_batch` over every batch of `loader` and score the whole split (inside the
    training method's `evaluation` context, if one is given)."""
    # the plain model: evaluation needs no gradient sync or compiled graph; peft and HF models generate
    model = accelerator.unwrap_model(model, keep_torch_compile=False)
    model.eval()
    predictions, references, losses = [], [], []
    with torch.no_grad(), method.evaluation(model) if method else nullcontext():
        for batch in progress(loader, desc="evaluate", unit="batches", leave=False,
                              disable=not accelerator.is_local_main_process):
            output = task.evaluate_batch(model, batch)
            # the batch's mean loss once per row, so that gathering drops the rows Accelerate repeated
            # to even out the last batch across processes, as it does for the predictions
            row_losses = output.loss.detach().float().expand(len(output.references))
            gathered = accelerator.gather_for_metrics(
                tuple(_pad_columns(accelerator, tensor) for tensor in (output.predictions, output.references, row_losses)))
            predictions.append(gathered[0].cpu().numpy())
            references.append(gathered[1].cpu().numpy())
            losses.append(gathered[2])
    metrics = task.metrics(predictions, references)
    metrics["loss"] = float(torch.cat(losses).mean().cpu())
    return Evaluation(metrics, task.samples(predictions, references))


def _pad_columns(accelerator: Accelerator, tensor: torch.Tensor) -> torch.Tensor:
    # generated rows differ in width between processes; gathering needs one width
    return accelerator.pad_across_processes(tensor, dim=1, pad_index=IGNORE) if tensor.dim() > 1 else tensor
