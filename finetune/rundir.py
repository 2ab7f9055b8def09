"""What a run directory already holds, and what a new invocation may do with it.

Nothing a user already has is overwritten by a later mistake: a directory that holds another
config's run is refused before anything is written, a completed run is reported instead of
retrained, a live run is left alone, and a dead or interrupted one resumes. `restart=true` is the
one explicit way to replace a run, and then nothing of the old one is kept.
"""

from __future__ import annotations

import copy
import fcntl
import logging
import os
import shutil
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from finetune.errors import USER_ERRORS, AlreadyComplete, Escalated, RunDirInUse, UserError
from finetune.record import RunRecord
from finetune.plan import Plan, build_plan

log = logging.getLogger(__name__)

LOCK_NAME = ".finetune.lock"
RESULT_FILES = ("results.json", "checkpoints", "model")  # what only a run of ours writes
HYDRA_FILES = (".hydra", "finetune.log", LOCK_NAME)  # written by this invocation; kept on restart
IN_USE = "hydra.run.dir: {run_dir} is in use by another finetune process; wait for it, or choose another run dir"


class Action(Enum):
    FRESH = "fresh"  # nothing there: start
    RESUME = "resume"  # the same config, failed, interrupted or died: continue from its checkpoint
    COMPLETE = "complete"  # the same config, completed: report it, train nothing
    RESTART = "restart"  # restart=true over an earlier run: delete it, then start


@dataclass(frozen=True)
class RunDirState:
    action: Action
    record: RunRecord | None  # the earlier results.json, if any


def read_record(run_dir: Path) -> RunRecord | None:
    """The run dir's results.json, None when there is none; a damaged one is refused, not replaced."""
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    try:
        return RunRecord.read(path)
    except (OSError, ValueError, TypeError) as error:
        raise UserError(f"hydra.run.dir: {path} cannot be read ({error}); move it away or choose another run dir") from error


def plan_run_dir(plan: Plan, in_sweep: bool = False) -> RunDirState:
    """Decide what this invocation does with the run's dir; refuse (UserError) what would destroy a
    result. `in_sweep`: the dir is one job's of a sweep, which is redone by deleting it."""
    run = plan.run
    run_dir = Path(run.output_dir)
    record = read_record(run_dir)
    key, way_out = (("hydra.sweep.dir", f"delete {run_dir} to run this job again")
                    if in_sweep else ("hydra.run.dir", "choose another run dir, or add restart=true to replace it"))
    leftovers = [name for name in RESULT_FILES if (run_dir / name).exists()]
    if record is None or (record.status == "failed" and not record.started_at and leftovers == ["results.json"]):
        # nothing, or the record of a job refused before it started: nothing to lose
        leftovers = [name for name in leftovers if name != "results.json"]
        if leftovers and not run.restart:
            raise UserError(f"{key}: {run_dir} holds {', '.join(leftovers)} but no results.json; {way_out}")
        return RunDirState(Action.RESTART if leftovers or record else Action.FRESH, None)
    if run.restart:
        return RunDirState(Action.RESTART, record)
    if record.config_hash != plan.config_hash:
        raise UserError(
            f"{key}: {run_dir} holds a {record.status} run of another config "
            f"({record.model} + {record.method} on {record.dataset}, config_hash "
            f"{record.config_hash}); {way_out}")
    if record.status in ("completed", "pruned"):  # a pruned trial is an answer too: not trained again
        return RunDirState(Action.COMPLETE, record)
    if RunLock.held(run_dir):
        raise RunDirInUse(IN_USE.format(run_dir=run_dir))
    return RunDirState(Action.RESUME, record)


class RunLock:
    """An exclusive lock on the run dir for the life of the process that trains in it.

    The kernel drops the lock when that process dies, so a `running` results.json without a lock
    holder is a run that died and may resume.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self.handle: BinaryIO | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RunDirInUse(IN_USE.format(run_dir=self.path.parent)) from None
        self.handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()

    @staticmethod
    def held(run_dir: Path) -> bool:
        """Whether a live process holds the run dir's lock (checked without creating the lock file)."""
        path = run_dir / LOCK_NAME
        if not path.is_file():
            return False
        with open(path, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def clear_run_dir(run_dir: Path) -> None:
    """Delete an earlier run's files for `restart=true`; this invocation's Hydra record and log stay."""
    for entry in run_dir.iterdir():
        if entry.name in HYDRA_FILES:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    log.info("restart=true: deleted the earlier run's files in %s", run_dir)


def is_main_process() -> bool:
    """Rank 0 under `accelerate launch`/torchrun, or a plain process: the one that owns the run dir."""
    return os.environ.get("RANK", "0") == "0"


class RunDirCheck(Callback):
    """Hydra callback: check a single run's dir before Hydra writes its config and log there.

    A bad config or a used dir stops here with nothing written (not even an empty run folder); a
    completed run with the same config is reported instead of trained again. Multirun jobs are
    checked in the job (`finetune.cli`), where Hydra has already written the job's `.hydra/`.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_main_process():
            return
        HydraConfig.instance().set_config(config)  # Hydra does this next; the run's config may refer to it
        job = copy.deepcopy(config)
        with read_write(job), open_dict(job):
            del job["hydra"]
            job.output_dir = os.path.abspath(config.hydra.run.dir)
            job.overrides = list(config.hydra.overrides.task)
        try:
            plan = build_plan(job)
            state = plan_run_dir(plan)
        except USER_ERRORS as error:
            raise Escalated(error) from error
        if state.action is Action.COMPLETE:
            raise AlreadyComplete(state.record, Path(job.output_dir))
        _checked[job.output_dir] = (plan, state)


_checked: dict[str, tuple[Plan, RunDirState]] = {}  # single runs RunDirCheck planned, by output dir


def checked_before(output_dir: str) -> tuple[Plan, RunDirState] | None:
    """The plan and dir state `RunDirCheck` made for this single run before Hydra started it, once."""
    return _checked.pop(os.path.abspath(output_dir), None)
