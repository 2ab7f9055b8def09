"""The one training loop: AdamW, warmup + linear decay, accumulation, clipping, early stopping on
the validation main metric, and checkpoints that resume exactly. What stops it cleanly (signals,
a non-finite loss, out of memory) is in finetune.guards; scoring a split in finetune.evaluation."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader
from transformers import get_linear_schedule_with_warmup

from finetune.batching import LengthGroupedBatches, make_loader
from finetune.checkpoint import BestCheckpoint, Checkpoints, LoopState
from finetune.errors import TrialPruned
from finetune.evaluation import evaluate
from finetune.guards import NonFiniteLoss, StopSignals, out_of_memory_hint
from finetune.methods import Method
from finetune.progress import progress
from finetune.schema import TrainSpec
from finetune.tasks import Task
from finetune.trackers import Trackers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitSummary:
    """What training did, for results.json."""

    epochs_run: int
    optimizer_steps: int
    best_epoch: int | None
    train_seconds: float
    train_samples_per_second: float
    train_tokens_per_second: float  # non-padding tokens (0 for images)
    stopped_early: bool
    resumed_from_step: int | None
    skipped_batches: int
    train_loss: list[list[float]]  # learning curve: [optimizer step, mean training loss since the last point]
    validation_curve: list[dict[str, float]]  # per epoch: epoch, step and the validation metrics
    best_validation: dict[str, float]  # validation metrics of the best epoch


def planned_steps(batches_per_epoch: int, train: TrainSpec) -> tuple[int, int]:
    """(optimizer steps, epochs) of a run: train.epochs of whole accumulation windows, capped by train.max_steps."""
    steps_per_epoch = math.ceil(batches_per_epoch / train.grad_accum)
    total_steps = train.epochs * steps_per_epoch
    if train.max_steps:
        total_steps = min(total_steps, train.max_steps)
    return total_steps, math.ceil(total_steps / steps_per_epoch)


@dataclass
class Trainer:
    """Trains a prepared model: `fit` is the loop, `_train_epoch` an epoch of it, the rest their parts."""

    model: nn.Module
    train_loader: DataLoader
    # the loader's batch sampler, given its epoch here: under several processes Accelerate wraps it
    # and does not pass set_epoch on
    train_order: LengthGroupedBatches
    validation_loader: DataLoader
    train: TrainSpec
    task: Task
    method: Method  # its parameter groups, and its hook after each optimizer step
    accelerator: Accelerator
    tracker: Trackers
    checkpoints: Checkpoints
    best: BestCheckpoint
    stop: StopSignals  # set by SIGTERM or SIGINT while the loop runs
    # (step, validation main metric) -> whether to stop: a search's pruner; None outside one
    prune: Callable[[int, float], bool] | None = None
    skipped_batches: int = 0  # batches whose loss was not finite, with train.skip_nonfinite
    plain: nn.Module = field(init=False)  # the model without its data-parallel and compile wrappers
    optimizer: torch.optim.Optimizer = field(init=False)  # built and prepared by fit
    scheduler: torch.optim.lr_scheduler.LRScheduler = field(init=False)
    resume_from: Path | None = field(init=False, default=None)

    def fit(self, resume_from: Path | None, config_hash: str) -> FitSummary:
        """Train, keeping the epoch with the best validation `task.main_metric`; resume from a checkpoint."""
        self.plain = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)  # what checkpoints hold
        total_steps, epochs = planned_steps(len(self.train_loader), self.train)
        if self.train.grad_accum > len(self.train_loader):
            log.warning("train.grad_accum=%d is more than the %d batches of an epoch: each epoch makes one optimizer "
                        "step of %d batches", self.train.grad_accum, len(self.train_loader), len(self.train_loader))
        initialized = self._initialize() if resume_from is None else 0.0
        # fused AdamW: one kernel for all parameters; 6x faster steps than the default on a 2-core CPU
        optimizer = torch.optim.AdamW(self.method.parameter_groups(self.plain, self.train), lr=self.train.lr,
                                      fused=self.accelerator.device.type in ("cpu", "cuda"))
        scheduler = get_linear_schedule_with_warmup(optimizer, round(self.train.warmup_ratio * total_steps), total_steps)
        self.optimizer, self.scheduler = self.accelerator.prepare(optimizer, scheduler)
        self.resume_from = resume_from
        state = self.checkpoints.resume(resume_from, config_hash, self.plain, self.optimizer, self.scheduler)
        state.train_seconds += initialized  # part of what training cost
        if resume_from is not None:
            self.method.load_state_dict(Checkpoints.method_state(resume_from), self.plain)
        log.info("Training: %d epoch(s), %d optimizer steps of %d samples", epochs, total_steps,
                 self.train.batch_size * self.train.grad_accum)

        bar = progress(total=total_steps, initial=state.step, desc="train", unit="steps",
                       disable=not self.accelerator.is_local_main_process)
        with self.stop.in_loop():
            while state.epoch < epochs and not state.stopped_early:
                if state.step >= total_steps and state.batches_done == 0:
                    break  # the last step is done and its epoch evaluated
                if state.step < total_steps:  # else: resumed after the last step, before its evaluation
                    self._train_epoch(state, total_steps, bar)
                self._end_epoch(state)
                if self._stop_requested(True):  # a signal during the evaluation: its checkpoint is saved
                    raise self.stop.interrupted(f"after epoch {state.epoch}; checkpoint saved")
        bar.close()
        return self._summary(state)

    def _initialize(self) -> float:
        """The method's initialisation from the training data, before the optimizer sees the parameters
        (a checkpoint holds the result); over a plain loader of CPU batches, so that the training
        loader's state and workers are untouched. Returns its seconds."""
        started = time.perf_counter()
        batches = make_loader(self.train_loader.dataset, self.train_loader.collate_fn, self.train_order)
        self.method.initialize(self.plain, batches)
        seconds = time.perf_counter() - started
        if seconds > 1:
            log.info("Method initialised from the training data in %.1f s (counted in train_seconds)", seconds)
        return seconds

    def _summary(self, state: LoopState) -> FitSummary:
        seconds = max(state.train_seconds, 1e-9)
        return FitSummary(
            epochs_run=state.epoch, optimizer_steps=state.step, best_epoch=state.best_epoch,
            train_seconds=state.train_seconds, train_samples_per_second=state.samples / seconds,
            train_tokens_per_second=state.tokens / seconds, stopped_early=state.stopped_early,
            resumed_from_step=Checkpoints.step(self.resume_from), skipped_batches=self.skipped_batches,
            train_loss=state.train_loss, validation_curve=state.validation_curve, best_validation=state.best_metrics,
        )

    def _train_epoch(self, state: LoopState, total_steps: int, bar: Any) -> None:
        # Accelerate's loader gives its sampler its own count of iterations as the epoch whenever it is
        # iterated, and a resumed run's count starts again at 0: the loader is told the epoch too
        self.train_loader.set_epoch(state.epoch)
        self.train_order.set_epoch(state.epoch)
        batches = self.train_loader
        if state.batches_done:  # resuming mid-epoch: the order is fixed by (seed, epoch), skip what was done
            batches = self.accelerator.skip_first_batches(self.train_loader, state.batches_done)
        self.model.train()
        device = self.accelerator.device
        window_loss, window_batches, tokens = torch.zeros((), device=device), 0, torch.zeros((), device=device)
        non_finite = NonFiniteLoss(device)
        last = time.perf_counter()
        for batch in batches:
            loss = self._step(batch, state.step + 1)
            non_finite.observe(loss, state.step + 1)
            window_loss += loss.detach()
            window_batches += 1
            tokens += self.task.count_tokens(batch)
            state.samples += len(batch["labels"]) * self.accelerator.num_processes  # each has its share
            state.batches_done += 1
            if not self.accelerator.sync_gradients:
                continue
            state.step += 1
            now = time.perf_counter()
            state.train_seconds, last = state.train_seconds + now - last, now
            bar.update()
            at_log = state.step % self.train.log_every_steps == 0
            at_save = bool(self.train.save_every_steps) and state.step % self.train.save_every_steps == 0
            stopping = self._stop_requested(at_log or at_save)
            if at_log or at_save or stopping:
                non_finite.check(self.accelerator.gather, self.checkpoints.latest())
            if at_log:
                self._log_train(state, window_loss.item() / window_batches, bar)
                window_loss, window_batches = torch.zeros((), device=device), 0
            if at_save or stopping:
                self._save(state)
            if stopping:
                raise self.stop.interrupted(f"at step {state.step}; checkpoint saved")
            if state.step >= total_steps:
                break
            if self.train.eval_every_steps and state.step % self.train.eval_every_steps == 0:
                self._evaluate_within_epoch(state)
        non_finite.check(self.accelerator.gather, self.checkpoints.latest())
        if window_batches:  # the steps since the last log point: every run's curve reaches its last step
            self._log_train(state, window_loss.item() / window_batches, bar)
        state.tokens += int(self.accelerator.reduce(tokens, "sum").item())

    def _step(self, batch: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        """One batch; `step` is the number the optimizer step this batch completes will have."""
        with out_of_memory_hint(self.train.batch_size, self.train.grad_accum), self.accelerator.accumulate(self.model):
            loss = self.model(**batch).loss
            if self.train.skip_nonfinite and not torch.isfinite(loss):  # a host sync, only when asked for
                log.warning("Skipped a batch with a non-finite loss (%s)", loss.item())
                self.skipped_batches += 1
                loss = torch.zeros_like(loss)
            else:
                self.accelerator.backward(loss)
            if self.accelerator.sync_gradients and self.train.max_grad_norm:
                self.accelerator.clip_grad_norm_(self.model.parameters(), self.train.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            if self.accelerator.sync_gradients:
                self.method.after_optimizer_step(self.plain, step)
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def _stop_requested(self, at_sync_point: bool) -> bool:
        """A signal seen; with several processes only at log/save steps, where all agree to stop together."""
        if self.accelerator.num_processes == 1:
            return self.stop.is_set()
        if not at_sync_point:
            return False
        flag = torch.tensor([float(self.stop.is_set())], device=self.accelerator.device)
        return bool(self.accelerator.gather(flag).max().item())

    def _log_train(self, state: LoopState, mean_loss: float, bar: Any) -> None:
        rate = state.samples / state.train_seconds
        state.train_loss.append([state.step, mean_loss])
        self.tracker.log("train", {"loss": mean_loss, "lr": self.scheduler.get_last_lr()[0], "samples_per_second": rate},
                         state.step)
        bar.set_postfix(loss=f"{mean_loss:.4f}", samples_s=f"{rate:.1f}")

    def _save(self, state: LoopState) -> None:
        if self.accelerator.is_main_process:
            path = self.checkpoints.save(self.plain, self.optimizer, self.scheduler, state, self.method.state_dict(self.plain))
            log.info("Checkpoint %s", path)
        self.accelerator.wait_for_everyone()

    def _evaluate_within_epoch(self, state: LoopState) -> None:
        """Validation every train.eval_every_steps: logged and reported to a pruner; the best epoch is
        still chosen at epoch ends."""
        metrics = evaluate(self.model, self.validation_loader, self.task, self.accelerator, self.method).metrics
        self.tracker.log("validation_steps", metrics, state.step)
        self.model.train()
        self._report(state, metrics)

    def _report(self, state: LoopState, metrics: dict[str, float]) -> None:
        """Tell a search's pruner the validation main metric; stop, with a checkpoint, when it prunes."""
        if self.prune is None or not self.prune(state.step, metrics[self.task.main_metric]):
            return
        self._save(state)
        summary = self._summary(state)
        raise TrialPruned(f"pruned by the search at step {state.step}",
                          {key: value for key, value in vars(summary).items() if key != "best_validation"},
                          summary.best_validation or metrics)

    def _end_epoch(self, state: LoopState) -> None:
        """Evaluate, keep the best epoch, decide on early stopping, checkpoint."""
        metrics = evaluate(self.model, self.validation_loader, self.task, self.accelerator, self.method).metrics
        self.tracker.log("validation", metrics, state.step)
        state.validation_curve.append({"epoch": state.epoch + 1, "step": state.step, **metrics})
        log.info("Epoch %d: validation %s", state.epoch + 1, "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        score = metrics[self.task.main_metric]
        if score > state.best_score:
            state.best_score, state.best_epoch, state.best_metrics, state.bad_epochs = score, state.epoch + 1, metrics, 0
            if self.accelerator.is_main_process:
                self.best.save(self.plain)
        else:
            state.bad_epochs += 1
        state.epoch, state.batches_done = state.epoch + 1, 0
        self._report(state, metrics)
        patience = self.train.early_stopping_patience
        if patience and state.bad_epochs >= patience:
            log.info("Early stop: no better validation %s for %d epoch(s)", self.task.main_metric, state.bad_epochs)
            state.stopped_early = True
        self._save(state)
