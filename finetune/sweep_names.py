"""Sweep run dirs named by what was swept: `3_bert_full_local_lr=0.001,seed=2`, so that a sweep's
runs can be told apart in the file tree and in TensorBoard's run list.

Hydra composes each job without saying which of its overrides came from a sweep, so the sweep's
start (a callback, in the launching process) finds the swept keys and hands them to the jobs
through the environment, which joblib's worker processes inherit.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SWEPT_KEYS_VARIABLE = "FINETUNE_SWEPT_KEYS"
SWEEP_VARIABLE = "FINETUNE_SWEEP"  # the sweep dir's name: trackers group the sweep's runs under it
NAMED_ALREADY = {"model", "method", "dataset"}  # the run dir name carries their choices
_UNSAFE = re.compile(r"[^\w.=+-]")
_MAX_LABEL = 80


def swept_keys(task_overrides: Iterable[str], sweeper_params: dict[str, Any] | None) -> list[str]:
    """The keys a multirun sweeps: from the command line (`a=1,2`, `choice(...)`, `interval(...)`)
    and from `hydra.sweeper.params` (presets such as +experiment=replicates)."""
    overrides = list(task_overrides) + [f"{key}={value}" for key, value in (sweeper_params or {}).items()]
    parsed = OverridesParser.create().parse_overrides(overrides)
    keys = [override.key_or_group for override in parsed if override.is_sweep_override()]
    return [key for key in dict.fromkeys(keys) if key not in NAMED_ALREADY]


class SweptKeys(Callback):
    """At the start of a multirun, before any job is composed: tell the jobs what is swept."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        keys = swept_keys(config.hydra.overrides.task, config.hydra.sweeper.get("params"))
        os.environ[SWEPT_KEYS_VARIABLE] = ",".join(keys)
        os.environ[SWEEP_VARIABLE] = Path(config.hydra.sweep.dir).name


def swept_label(job_overrides: Iterable[str]) -> str:
    """`_lr=0.001,seed=2` for a job of a sweep over train.lr and train.seed; '' outside sweeps.

    Keys are shortened to their last part where that stays unambiguous; values are made safe as
    one path component."""
    keys = [key for key in os.environ.get(SWEPT_KEYS_VARIABLE, "").split(",") if key]
    if not keys:
        return ""
    values = {override.key_or_group: override.get_value_element_as_str()
              for override in OverridesParser.create().parse_overrides(list(job_overrides))}
    leaves = [key.rsplit(".", 1)[-1] for key in keys]
    names = [leaf if leaves.count(leaf) == 1 else key for key, leaf in zip(keys, leaves)]
    parts = [f"{name}={_UNSAFE.sub('_', values[key])}" for key, name in zip(keys, names) if key in values]
    return ("_" + ",".join(parts))[:_MAX_LABEL] if parts else ""


OUTPUTS = "outputs"
SMOKE_OUTPUTS = "outputs/smoke"  # +smoke=tiny's runs: tiny random models, never beside real results
JOB_DIGITS = 3  # 000_..., 001_...: a sweep's run dirs sort in job order


def outputs_dir(path: str, *, _root_: Any) -> str:
    """`outputs/<path>`, or `outputs/smoke/<path>` when +smoke is chosen (whatever the order of the
    groups on the command line)."""
    choices = _root_.hydra.runtime.choices if "hydra" in _root_ else {}
    return f"{SMOKE_OUTPUTS if choices.get('smoke') else OUTPUTS}/{path}"


def job_number(number: int, sweep_dir: str) -> str:
    """The job's number, zero-padded; unpadded where the sweep dir already holds that job's dir under
    its unpadded name (a sweep started by an earlier finetune), so that it resumes there."""
    padded = f"{int(number):0{JOB_DIGITS}d}"
    directory = Path(sweep_dir)
    if padded != str(number) and directory.is_dir() and not any(directory.glob(f"{padded}_*")) \
            and any(directory.glob(f"{number}_*")):
        return str(number)
    return padded
