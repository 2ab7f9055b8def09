"""Progress of long work: a tqdm bar on a terminal; off a terminal (a log file, a SLURM job, a pipe)
plain log lines at an interval, so that logs hold no progress-bar frames.

`FINETUNE_PROGRESS_SECONDS` sets the interval between those lines (default 30 s).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Iterable, Iterator

from tqdm.auto import tqdm

log = logging.getLogger("finetune.progress")

INTERVAL_VARIABLE = "FINETUNE_PROGRESS_SECONDS"
DEFAULT_INTERVAL_S = 30.0


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str, unit: str, initial: int = 0,
             disable: bool = False, leave: bool = True) -> Any:
    """A progress bar over `iterable` (or updated by hand up to `total`): tqdm's where stderr is a
    terminal, else a `LoggedProgress`. `leave=False`: short, repeated work (an evaluation) that logs
    a last line only if it took longer than the interval."""
    if disable or sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=disable, leave=leave)
    return LoggedProgress(iterable, total, desc, unit, initial, leave)


def interval_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(INTERVAL_VARIABLE, DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def duration(seconds: float) -> str:
    """42 s, 3 min 5 s, 2 h 10 min."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class LoggedProgress:
    """The part of tqdm's interface finetune uses, written as a log line every `interval_seconds()`."""

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str, unit: str, initial: int,
                 leave: bool) -> None:
        self.iterable, self.desc, self.unit, self.leave = iterable, desc, unit, leave
        self.total = total if total is not None else _length(iterable)
        self.n = self.initial = initial
        self.started = self.last = time.monotonic()
        self.interval = interval_seconds()
        self.postfix = ""

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            log.info(self._line(now))

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{key} {value}" for key, value in values.items())

    def close(self) -> None:
        now = time.monotonic()
        if self.n > self.initial and (self.leave or now - self.started >= self.interval):
            log.info(self._line(now))

    def _line(self, now: float) -> str:
        done, elapsed = self.n - self.initial, now - self.started
        parts = [f"{self.desc}: {self.n}/{self.total} {self.unit}" if self.total else f"{self.desc}: {self.n} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(duration(elapsed))
        if self.total and done and self.n < self.total:
            parts.append(f"~{duration(elapsed / done * (self.total - self.n))} left")
        if self.postfix:
            parts.append(self.postfix)
        return ", ".join(parts)


def _length(iterable: Iterable | None) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None
