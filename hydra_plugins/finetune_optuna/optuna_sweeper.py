"""The Hydra sweeper `hydra/sweeper=optuna`: asks Optuna for trials, launches each as a job through
the configured launcher, and tells Optuna how each ended (from the job's results.json).

    finetune -m hydra/sweeper=optuna hydra.sweeper.n_trials=20 "train.lr=tag(log, interval(1e-5, 1e-3))"

No `from __future__ import annotations` here: Hydra's plugin scan executes this module without
registering it in sys.modules, and dataclasses then cannot resolve string annotations.
"""


import logging
import math
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import optuna
import yaml
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from finetune import search
from finetune.sweep_names import job_number
from finetune.trial import pruner as build_pruner

log = logging.getLogger(__name__)

SAMPLER_DEFAULTS = {"tpe": {"seed": None}, "random": {"seed": None}, "grid": {"seed": None}, "cmaes": {"seed": None}}
PRUNER_DEFAULTS = {"none": {}, "median": {"n_startup_trials": 5, "n_warmup_steps": 0},
                   "successive_halving": {"min_resource": "auto", "reduction_factor": 4},
                   "hyperband": {"min_resource": 1, "reduction_factor": 3},
                   "threshold": {"lower": None, "upper": None}}


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.finetune_optuna.optuna_sweeper.OptunaSweeper"
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}, "_self_"])
    sampler: Dict[str, Any] = field(default_factory=dict)  # hydra/sweeper/sampler=NAME and Optuna's own arguments
    pruner: Dict[str, Any] = field(default_factory=dict)  # hydra/sweeper/pruner=NAME and Optuna's own arguments
    direction: str = "maximize"  # finetune returns the validation main metric: higher is better
    study_name: Optional[str] = None  # null: the sweep dir's name
    storage: Optional[str] = None  # an Optuna storage URL, or a journal file; null: optuna.journal in the sweep dir
    n_trials: int = 20  # trials in all, whatever how many workers or restarts share them
    n_jobs: int = 1  # trials launched at a time (with hydra/launcher=joblib, in parallel)
    params: Optional[Dict[str, str]] = None  # key -> search space in Hydra's sweep syntax


store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="finetune")
for name, options in SAMPLER_DEFAULTS.items():
    store.store(group="hydra/sweeper/sampler", name=name, node={"name": name, **options}, provider="finetune")
for name, options in PRUNER_DEFAULTS.items():
    store.store(group="hydra/sweeper/pruner", name=name, node={"name": name, **options}, provider="finetune")


class OptunaSweeper(Sweeper):
    def __init__(self, sampler: Dict[str, Any], pruner: Dict[str, Any], direction: str, study_name: Optional[str],
                 storage: Optional[str], n_trials: int, n_jobs: int, params: Optional[Dict[str, str]]) -> None:
        self.settings = dict(sampler=OmegaConf.to_container(sampler) if isinstance(sampler, DictConfig) else dict(sampler),
                             pruner=OmegaConf.to_container(pruner) if isinstance(pruner, DictConfig) else dict(pruner),
                             direction=direction, study_name=study_name, storage=storage, n_trials=n_trials,
                             n_jobs=n_jobs)
        self.params = dict(params or {})

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def sweep(self, arguments: List[str]) -> Any:
        fixed, space = self._split(arguments)
        study = self._study(space)
        budget, batch = self.settings["n_trials"], max(1, self.settings["n_jobs"])
        if self.settings["sampler"].get("name") == "grid":
            budget = min(budget, math.prod(len(values) for values in search.grid_space(space).values()))
        stale = search.stale_trials(study, self._job_dir)
        if stale:
            log.info("Trial(s) %s, stopped by a kill, run again: each resumes from its last checkpoint",
                     ", ".join(map(str, stale)))
            self._launch(study, [self._adopt(study, number) for number in stale], fixed)
        while True:
            remaining = budget - len(search.counted(study))
            if remaining <= 0:
                break
            trials = [self._ask(study, space) for _ in range(min(batch, remaining))]
            trials = [trial for trial in trials if self._within_budget(study, trial, budget)]
            if not trials:
                break
            self._launch(study, trials, fixed)
        self._write_best(study)

    def _split(self, arguments: List[str]) -> tuple[List[str], Dict[str, Any]]:
        """The command line's fixed overrides, and the search space: `params` and any sweep on the command line."""
        space = search.distributions(self.params)
        fixed = []
        for override in OverridesParser.create().parse_overrides(arguments):
            if override.is_sweep_override():
                space[override.key_or_group] = search.distribution(override)
            else:
                fixed.append(override.input_line)
        return fixed, space

    def _study(self, space: Dict[str, Any]) -> optuna.Study:
        settings = self.settings
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.storage = optuna.storages.get_storage(search.storage_of(settings["storage"], self.sweep_dir))
        study = optuna.create_study(study_name=settings["study_name"] or self.sweep_dir.name,
                                    sampler=search.sampler(settings["sampler"], space),
                                    pruner=build_pruner(settings["pruner"]), direction=settings["direction"],
                                    load_if_exists=True, storage=self.storage)
        study.set_user_attr("pruner", settings["pruner"])  # for the jobs, which report to their trials
        return study

    def _ask(self, study: optuna.Study, space: Dict[str, Any]) -> optuna.Trial:
        trial = study.ask(space)
        trial.set_user_attr("owner", {"host": socket.gethostname(), "pid": os.getpid()})
        return trial

    def _adopt(self, study: optuna.Study, number: int) -> optuna.Trial:
        """A running trial whose process is gone, taken over by this one."""
        study_id = self.storage.get_study_id_from_name(study.study_name)
        trial = optuna.trial.Trial(study, self.storage.get_trial_id_from_study_id_trial_number(study_id, number))
        trial.set_user_attr("owner", {"host": socket.gethostname(), "pid": os.getpid()})
        return trial

    def _within_budget(self, study: optuna.Study, trial: optuna.Trial, budget: int) -> bool:
        """Another worker may have asked for the last trials too: only the first `budget` count."""
        earlier = [other for other in search.counted(study) if other.number <= trial.number]
        if len(earlier) <= budget:
            return True
        search.drop(study, trial.number, "asked beyond n_trials")
        return False

    def _job_dir(self, number: int) -> Path:
        """The trial's run dir, named as finetune names a sweep's job dirs (finetune.sweep_names)."""
        prefix = job_number(number, str(self.sweep_dir))
        matches = sorted(self.sweep_dir.glob(f"{prefix}_*"))
        return matches[0] if matches else self.sweep_dir / prefix

    def _launch(self, study: optuna.Study, trials: List[optuna.Trial], fixed: List[str]) -> None:
        """Each trial a job numbered by its trial (so its run dir is), launched in runs of consecutive numbers."""
        groups: List[List[optuna.Trial]] = []
        for trial in sorted(trials, key=lambda trial: trial.number):
            if groups and groups[-1][-1].number + 1 == trial.number:
                groups[-1].append(trial)
            else:
                groups.append([trial])
        for group in groups:
            overrides = [self._overrides(study, trial, fixed) for trial in group]
            returns = self.launcher.launch(overrides, initial_job_idx=group[0].number)
            for trial, job in zip(group, returns):
                self._tell(study, trial, Path(job.hydra_cfg.hydra.runtime.output_dir))

    def _overrides(self, study: optuna.Study, trial: optuna.Trial, fixed: List[str]) -> List[str]:
        storage = self.settings["storage"] or str(self.sweep_dir / search.JOURNAL)
        trial_keys = [f"trial.storage={storage}", f"trial.study={study.study_name}", f"trial.number={trial.number}",
                      f"trial.pruning={self.settings['pruner'].get('name', 'none') != 'none'}"]
        return [*fixed, *(f"{key}={value}" for key, value in trial.params.items()), *trial_keys]

    def _tell(self, study: optuna.Study, trial: optuna.Trial, output_dir: Path) -> None:
        """The trial's state from its results.json; a trial that another worker told already stays as it is."""
        state, value, error = search.outcome(output_dir)
        if state is TrialState.FAIL:
            trial.set_user_attr("error", error)
        study.tell(trial, value if state is TrialState.COMPLETE else None, state=state, skip_if_finished=True)

    def _write_best(self, study: optuna.Study) -> None:
        complete = [trial for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        if not complete:
            log.warning("No trial of the search completed; each run's results.json says how it ended")
            return
        best = study.best_trial
        results = {"name": "optuna", "best_params": best.params, "best_value": best.value, "best_trial": best.number}
        (self.sweep_dir / "optimization_results.yaml").write_text(yaml.safe_dump(results, sort_keys=False))
        log.info("Best parameters: %s (trial %d, value %s)", best.params, best.number, best.value)
