"""A run's side of a search: report each validation to its Optuna trial and ask whether to stop
(the study's pruner decides). The sweeper (finetune.search) names the trial in `run.trial`."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from finetune.errors import UserError
from finetune.schema import TrialSpec

PRUNERS = {"none": "NopPruner", "median": "MedianPruner", "successive_halving": "SuccessiveHalvingPruner",
           "hyperband": "HyperbandPruner", "threshold": "ThresholdPruner"}  # hydra/sweeper/pruner=NAME -> optuna.pruners


def build(cls: type, config: dict[str, Any], key: str, **given: Any) -> Any:
    """An Optuna sampler or pruner from its config group's node: every key but `name` is one of the
    class's own arguments (an unknown one is a one-line error); unset (null) ones keep Optuna's default."""
    options = {name: value for name, value in config.items() if name != "name"}
    allowed = [name for name in inspect.signature(cls).parameters if name not in ("self", "search_space")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UserError(f"hydra.sweeper.{key}.{unknown[0]}: not an argument of optuna's {cls.__name__}; "
                        f"allowed: {', '.join(allowed)}")
    return cls(**given, **{name: value for name, value in options.items() if value is not None})


def pruner(config: dict[str, Any]) -> Any:
    import optuna

    return build(getattr(optuna.pruners, PRUNERS[config["name"]]), config, "pruner")


def storage(url: str) -> Any:
    """An Optuna storage: a URL (sqlite:///..., postgresql://...), or the path of a journal file."""
    if "://" in url:
        return url
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(Path(url))))


def pruner_of(spec: TrialSpec) -> Callable[[int, float], bool] | None:
    """(step, validation main metric) -> whether the trial is pruned; None outside a pruned search."""
    if not spec.pruning or spec.number is None:
        return None
    import optuna  # only a search imports it

    store = optuna.storages.get_storage(storage(spec.storage or ""))
    study_id = store.get_study_id_from_name(spec.study)
    trial_id = store.get_trial_id_from_study_id_trial_number(study_id, spec.number)
    # a study's pruner is not in its storage: the sweeper keeps its config in the study's attributes
    config = store.get_study_user_attrs(study_id).get("pruner", {"name": "none"})
    study = optuna.load_study(study_name=spec.study, storage=store, pruner=pruner(config))
    trial = optuna.trial.Trial(study, trial_id)

    def prune(step: int, value: float) -> bool:
        trial.report(value, step)
        return trial.should_prune()

    return prune
