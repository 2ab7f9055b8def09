"""Hyperparameter search on Optuna, as a Hydra sweeper (`hydra/sweeper=optuna`, the plugin in
hydra_plugins/finetune_optuna): the search space in Hydra's sweep syntax, a sampler and a pruner
named by config group, a study kept in storage (by default a journal file in the sweep dir) so that
a killed search resumes and several workers fill one study, and each job's outcome read from its
results.json (completed, pruned or failed).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from finetune.errors import UserError
from finetune.record import RunRecord
from finetune.rundir import RunLock
from finetune.trial import build, storage

SAMPLERS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
            "cmaes": optuna.samplers.CmaEsSampler}  # and "grid": GridSampler, below
JOURNAL = "optuna.journal"  # the study's default storage, in the sweep dir
NOT_COUNTED = "not_counted"  # a study attribute per trial that two workers asked beyond n_trials


def distributions(params: dict[str, str]) -> dict[str, BaseDistribution]:
    """Hydra sweep syntax (`a,b`, `choice(...)`, `range(...)`, `interval(...)`, `tag(log, interval(...))`)
    as Optuna distributions, by config key."""
    parsed = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
    return {override.key_or_group: distribution(override) for override in parsed}


def distribution(override: Override) -> BaseDistribution:
    """One sweep override as an Optuna distribution."""
    value, key = override.value(), override.key_or_group
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(value.list)
    if isinstance(value, RangeSweep):
        numbers = [value.start, value.stop, value.step]
        if all(isinstance(number, int) for number in numbers):
            return IntDistribution(value.start, value.stop - value.step, step=value.step)
        return FloatDistribution(value.start, value.stop - value.step, step=value.step)
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise UserError(f"hydra.sweeper.params.{key}: '{override.get_value_element_as_str()}' is no search space; "
                    "give choice(...), range(...), interval(...) or tag(log, interval(...))")


def grid_space(space: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    """The grid sampler's search space: every choice, every step of a range; an interval has no grid."""
    grid = {}
    for key, distribution in space.items():
        if isinstance(distribution, CategoricalDistribution):
            grid[key] = list(distribution.choices)
        elif getattr(distribution, "step", None) and not getattr(distribution, "log", False):
            count = round((distribution.high - distribution.low) / distribution.step) + 1
            grid[key] = [distribution.low + index * distribution.step for index in range(count)]
        else:
            raise UserError(f"hydra.sweeper.params.{key}: the grid sampler takes choices and ranges, not an interval")
    return grid


def storage_of(url: str | None, sweep_dir: Path) -> Any:
    """Optuna storage: `url` (sqlite:///..., postgresql://..., or a journal file's path), else a
    journal file in the sweep dir, which any number of processes on one file system may share."""
    return storage(url or str(sweep_dir / JOURNAL))


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its `study.stop()` once the grid is done, which works only
    inside `Study.optimize`: the sweeper counts the trials itself (at most the grid's size)."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


def sampler(config: dict[str, Any], space: dict[str, BaseDistribution]) -> Any:
    if config["name"] == "grid":
        return build(GridSampler, config, "sampler", search_space=grid_space(space))
    return build(SAMPLERS[config["name"]], config, "sampler")


def counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials that count toward n_trials: every one asked but those asked beyond the budget."""
    dropped, asked = study.user_attrs, (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return [trial for trial in study.get_trials(deepcopy=False, states=asked)
            if f"{NOT_COUNTED}_{trial.number}" not in dropped]


def drop(study: optuna.Study, number: int, reason: str) -> None:
    """Fail trial `number` and leave it out of the count (a key of its own: workers never overwrite each other)."""
    study.set_user_attr(f"{NOT_COUNTED}_{number}", reason)
    study.tell(number, state=TrialState.FAIL)


def stale_trials(study: optuna.Study, job_dir_of: Any) -> list[int]:
    """Trials left running by a search that was killed, by number: their process (on this host) is
    gone and their run dir's lock is not held. The sweeper runs each again in its own run dir, where
    the run resumes from its last checkpoint."""
    stale = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get("owner", {})
        alive = owner.get("host") == socket.gethostname() and _alive(owner.get("pid"))
        if not alive and not RunLock.held(job_dir_of(trial.number)):
            stale.append(trial.number)
    return stale


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def outcome(output_dir: Path) -> tuple[TrialState, float | None, str]:
    """What a job's results.json says: (Optuna state, its validation main metric, its error)."""
    try:
        record = RunRecord.read(output_dir / "results.json")
    except (OSError, ValueError, TypeError) as error:
        return TrialState.FAIL, None, f"no readable results.json ({error})"
    score = record.score("validation")
    if record.status == "pruned":
        return TrialState.PRUNED, score, ""
    if record.status == "completed" and score is not None:
        return TrialState.COMPLETE, score, ""
    return TrialState.FAIL, None, record.error or record.status
