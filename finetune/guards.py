"""What stops a training run cleanly, each with one line that says why and what to do:

- SIGTERM (SLURM preemption, `kill`) and SIGINT (Ctrl-C), alike: inside the training loop the loop
  checkpoints at the next step and stops; anywhere else (loading, tokenizing, evaluating) there is
  nothing new to save and the run stops at once. results.json says `interrupted`, the command exits
  with 128 + the signal's number, and the same command resumes. A second signal stops at once.
- A non-finite training loss, found at log and checkpoint steps without a host sync every step.
- Running out of GPU memory, with a smaller batch to try.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from finetune.errors import Interrupted, RunError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Set by a signal while the loop runs (`graceful`); raises `Interrupted` at once otherwise."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.graceful = False

    def is_set(self) -> bool:
        return self.received is not None

    def interrupted(self, where: str) -> Interrupted:
        """The exception that ends the run, saying where it stopped."""
        name = self.received.name if self.received else "a signal"
        code = 128 + int(self.received) if self.received else 143
        return Interrupted(f"stopped by {name} {where}; the same command resumes", code)

    @contextmanager
    def in_loop(self) -> Iterator[None]:
        """While inside, a signal asks the loop to checkpoint and stop (it polls `is_set`)."""
        self.graceful = True
        try:
            yield
        finally:
            self.graceful = False

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.received is None
        self.received = signal.Signals(signum)
        if not (self.graceful and first):
            raise self.interrupted("before finishing its step" if self.graceful else "outside the training loop "
                                   "(finished epochs and checkpoints are kept)")


@contextmanager
def stop_on_signals() -> Iterator[StopSignals]:
    """A `StopSignals` that SIGTERM and SIGINT drive for the duration; outside the main thread (where
    signals are not delivered) it is never set."""
    stop = StopSignals()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {number: signal.signal(number, stop._handle) for number in SIGNALS}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class NonFiniteLoss:
    """The first optimizer step whose loss was NaN or infinite, kept on the device (no host sync per
    step) and checked where the loop syncs anyway: at log and checkpoint steps, and each epoch's end."""

    def __init__(self, device: torch.device) -> None:
        self.first_bad_step = torch.full((), -1, device=device)

    def observe(self, loss: torch.Tensor, step: int) -> None:
        self.first_bad_step = torch.where((self.first_bad_step < 0) & ~torch.isfinite(loss), step, self.first_bad_step)

    def check(self, gather: Any, latest_checkpoint: Path | None) -> None:
        """Stop the run if any process (`gather`: across processes) saw a non-finite loss."""
        bad = int(gather(self.first_bad_step.reshape(1)).max().item())
        if bad >= 0:
            kept = f"the last good checkpoint is {latest_checkpoint}" if latest_checkpoint else \
                "no checkpoint was saved before it"
            raise RunError(f"the training loss became NaN or infinite at step {bad}; {kept}; "
                           "try a lower train.lr or train.max_grad_norm")


@contextmanager
def out_of_memory_hint(batch_size: int, grad_accum: int) -> Iterator[None]:
    """Out of GPU memory becomes one line suggesting the same effective batch in smaller pieces."""
    try:
        yield
    except torch.OutOfMemoryError as error:
        raise RunError(f"out of memory at train.batch_size={batch_size}; try train.batch_size={max(batch_size // 2, 1)} "
                       f"train.grad_accum={grad_accum * 2} (same effective batch)") from error
