"""The run's trackers (the logger group): each gets every scalar, sample and the run's end. A
tracker that fails (a server down, a full disk) costs one warning and is off for the rest of the
run; results.json and the other trackers are complete."""

from __future__ import annotations

import importlib
import logging
from typing import Any, Callable

from finetune.errors import UserError
from finetune.record import Outcome
from finetune.schema import Run
from finetune.trackers.base import Backend, RunContext, run_context

log = logging.getLogger(__name__)

LOGGED = ("tensorboard", "csv", "trackers.json")  # in a run dir: an earlier attempt logged there

# name -> (module, class); imported only when chosen, so that an installed tracker library costs nothing otherwise
BACKENDS = {
    "tensorboard": ("finetune.trackers.tensorboard", "TensorBoard"),
    "csv": ("finetune.trackers.csv_files", "CsvFiles"),
    "mlflow": ("finetune.trackers.mlflow_runs", "MlflowRuns"),
    "wandb": ("finetune.trackers.wandb_runs", "WandbRuns"),
}


class Trackers:
    """Every chosen tracker, called in turn; none with `write=False` (processes other than the main one)."""

    def __init__(self, backends: list[Backend]) -> None:
        self.backends = backends

    def log(self, prefix: str, values: dict[str, float], step: int) -> None:
        self._each("log", lambda backend: backend.log(prefix, values, step))

    def text(self, tag: str, markdown: str, step: int) -> None:
        self._each("text", lambda backend: backend.text(tag, markdown, step))

    def finish(self, status: str, outcome: Outcome | None = None) -> None:
        self._each("finish", lambda backend: backend.finish(status, outcome))

    def close(self) -> None:
        self._each("close", lambda backend: backend.close())

    def _each(self, what: str, call: Callable[[Backend], Any]) -> None:
        for backend in list(self.backends):
            try:
                call(backend)
            except Exception as error:  # noqa: BLE001 - a tracker's failure must not fail the run
                self.backends.remove(backend)
                log.warning("logger %s failed (%s: %s); it is off for the rest of this run, whose results.json is "
                            "complete", backend.name, type(error).__name__, str(error).splitlines()[0] if str(error) else "")
                if what != "close":
                    _close_quietly(backend)


def open_trackers(run: Run, resumed_from: int | None, provenance: dict[str, Any], write: bool = True) -> Trackers:
    """The trackers `run.logger` switches on, continuing their runs where `resumed_from` is a
    checkpoint's step; each records `provenance` (results.json's: code, command, machine)."""
    if not write:
        return Trackers([])
    context = run_context(run, resumed_from, provenance)
    opened: list[Backend] = []
    try:
        for name in run.logger.backends:
            try:
                module, attribute = BACKENDS[name]
                opened.append(getattr(importlib.import_module(module), attribute)(context))
            except UserError:
                raise
            except Exception as error:  # noqa: BLE001 - a server that is down, a broken install: the run goes on
                log.warning("logger %s could not start (%s: %s); this run goes on without it", name,
                            type(error).__name__, str(error).splitlines()[0] if str(error) else "")
    except BaseException:  # a refusal or a signal while opening: what did open is closed
        Trackers(opened).close()
        raise
    return Trackers(opened)


def _close_quietly(backend: Backend) -> None:
    try:
        backend.close()
    except Exception:  # noqa: BLE001 - already reported once
        pass


__all__ = ["BACKENDS", "Backend", "RunContext", "Trackers", "open_trackers"]
