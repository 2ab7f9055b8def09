"""SIGTERM (SLURM preemption, `kill`) and SIGINT (Ctrl-C) stop a run the same way: inside the
training loop the loop checkpoints at the next step and stops; anywhere else (loading, tokenizing,
evaluating) there is nothing new to save and the run stops at once. Either way results.json says
`interrupted`, the command prints one line and exits with 128 + the signal's number, and the same
command resumes. A second signal during the loop's checkpoint stops at once too."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from finetune.errors import Interrupted

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
