"""The one training loop: AdamW, warmup + linear decay, accumulation, clipping, early stopping."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from finetune.artifacts import BestCheckpoint, Tracker
from finetune.schema import TrainSpec
from finetune.tasks import Task

log = logging.getLogger(__name__)

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


@dataclass(frozen=True)
class FitSummary:
    """What training did, for results.json."""

    epochs_run: int
    optimizer_steps: int
    best_epoch: int | None
    train_seconds: float
    train_samples_per_second: float
    train_tokens_per_second: float  # non-padding tokens
    stopped_early: bool
    best_validation: dict[str, float]  # validation metrics of the best epoch


def evaluate(model: nn.Module, loader: DataLoader, task: Task, accelerator: Accelerator) -> dict[str, float]:
    """Metrics and mean loss of `model` on every batch of `loader`."""
    model.eval()
    logits, labels, losses = [], [], []
    with torch.no_grad():
        for batch in loader:
            output = model(**batch)
            batch_logits, batch_labels = accelerator.gather_for_metrics(task.scores(output, batch))
            logits.append(batch_logits.float().cpu())
            labels.append(batch_labels.cpu())
            losses.append(output.loss.detach().float() * len(batch["input_ids"]))
    all_labels = torch.cat(labels).numpy()
    metrics = task.metrics(torch.cat(logits).numpy(), all_labels)
    metrics["loss"] = float(torch.stack(losses).sum().cpu()) / max(len(all_labels), 1)
    return metrics


def _optimizer(model: nn.Module, train: TrainSpec, fused: bool) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if name.endswith(NO_DECAY) else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused AdamW: one kernel for all parameters; 6x faster steps than the default on a 2-core CPU
    return torch.optim.AdamW(groups, lr=train.lr, fused=fused)


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    validation_loader: DataLoader,
    train: TrainSpec,
    task: Task,
    accelerator: Accelerator,
    tracker: Tracker,
    best: BestCheckpoint,
) -> FitSummary:
    """Train `model` (already prepared) and keep the epoch with the best validation `task.main_metric`."""
    steps_per_epoch = math.ceil(len(train_loader) / train.grad_accum)
    total_steps = train.epochs * steps_per_epoch
    if train.max_steps:
        total_steps = min(total_steps, train.max_steps)
    epochs = math.ceil(total_steps / steps_per_epoch)
    optimizer = _optimizer(model, train, accelerator.device.type in ("cpu", "cuda"))
    scheduler = get_linear_schedule_with_warmup(optimizer, round(train.warmup_ratio * total_steps), total_steps)
    optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
    log.info("Training: %d epoch(s), %d optimizer steps of %d samples", epochs, total_steps, train.batch_size * train.grad_accum)

    step, best_score, best_epoch, bad_epochs, stopped_early = 0, -math.inf, None, 0, False
    best_metrics: dict[str, float] = {}
    samples, tokens, train_seconds = 0, torch.zeros((), device=accelerator.device), 0.0
    progress = tqdm(total=total_steps, desc="train", unit="step", disable=not accelerator.is_local_main_process)
    for epoch in range(epochs):
        train_loader.set_epoch(epoch)
        model.train()
        started, window_loss, window_batches = time.perf_counter(), torch.zeros((), device=accelerator.device), 0
        for batch in train_loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and train.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), train.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            window_loss += loss.detach()
            window_batches += 1
            samples += len(batch["input_ids"])
            tokens += batch["attention_mask"].sum()
            if not accelerator.sync_gradients:
                continue
            step += 1
            progress.update()
            if step % train.log_every_steps == 0:  # the only host sync in the loop
                mean_loss = window_loss.item() / window_batches
                rate = samples / (train_seconds + time.perf_counter() - started)
                tracker.log("train", {"loss": mean_loss, "lr": scheduler.get_last_lr()[0], "samples_per_second": rate}, step)
                progress.set_postfix(loss=f"{mean_loss:.4f}", samples_s=f"{rate:.1f}")
                window_loss, window_batches = torch.zeros((), device=accelerator.device), 0
            if step >= total_steps:
                break
        train_seconds += time.perf_counter() - started

        metrics = evaluate(model, validation_loader, task, accelerator)
        tracker.log("validation", metrics, step)
        score = metrics[task.main_metric]
        log.info("Epoch %d: validation %s", epoch + 1, _format(metrics))
        if score > best_score:
            best_score, best_epoch, best_metrics, bad_epochs = score, epoch + 1, metrics, 0
            best.save(accelerator.unwrap_model(model))
        else:
            bad_epochs += 1
            if train.early_stopping_patience and bad_epochs >= train.early_stopping_patience:
                log.info("Early stop: no better validation %s for %d epoch(s)", task.main_metric, bad_epochs)
                stopped_early = True
                break
    progress.close()
    return FitSummary(
        epochs_run=epoch + 1,
        optimizer_steps=step,
        best_epoch=best_epoch,
        train_seconds=train_seconds,
        train_samples_per_second=samples / train_seconds,
        train_tokens_per_second=float(tokens.cpu()) / train_seconds,
        stopped_early=stopped_early,
        best_validation=best_metrics,
    )


def _format(metrics: dict[str, float]) -> str:
    return "  ".join(f"{name} {value:.4f}" for name, value in metrics.items())
