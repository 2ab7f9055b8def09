"""From runs to the answers a study asks for: which config keys were swept, each configuration's
seeds as replicates (mean, standard deviation, n), and how each configuration compares with the
data set's best one, paired by seed, with a 95% confidence interval.

Pure functions over the rows `finetune.report.collect` reads from results.json files.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from scipy import stats

from finetune.schema import TRAIN_BOOKKEEPING

SEED_KEY = "train.seed"
NOT_SETTINGS = (  # where and how a run went, not what it computed
    "output_dir", "overrides", "restart", SEED_KEY, "hardware.name", "hardware.jobs_per_gpu", "hardware.num_threads",
    "trial.storage", "trial.study", "trial.number", "trial.pruning", "method.search",
    "logger.tensorboard", "logger.csv", "logger.mlflow", "logger.wandb", "logger.tracking_uri", "logger.experiment",
    "logger.project", "logger.mode",
    *(f"train.{key}" for key in TRAIN_BOOKKEEPING),
)
IDENTITY = ("model.name", "method.name", "dataset.name")  # always shown as model, method, dataset


def swept_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Config keys whose value differs among the runs (seeds aside), in the config's order.

    A key of the model, method or data set group counts only where it differs between runs of the
    same family, method or data set: another family's layer paths are not a swept setting.
    """
    configs = [row["config"] for row in rows if row["config"]]
    keys = dict.fromkeys(key for config in configs for key in config)
    return [key for key in keys if key not in NOT_SETTINGS and key not in IDENTITY and _varies(key, configs)]


def _varies(key: str, configs: list[dict[str, str]]) -> bool:
    group = key.split(".", 1)[0]
    scoped = f"{group}.name" in IDENTITY
    values: dict[str, set[str]] = {}
    for config in configs:
        if key in config:
            values.setdefault(config.get(f"{group}.name", "") if scoped else "", set()).add(config[key])
    return any(len(found) > 1 for found in values.values())


@dataclass
class Configuration:
    """The runs of one configuration: the same settings, any seeds."""

    settings: dict[str, str]  # the swept keys' values
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def completed(self) -> list[dict[str, Any]]:
        return [run for run in self.runs if run["status"] == "completed"]

    def scores(self, split: str) -> dict[str, float]:
        """Seed -> the main metric on `split`, over the completed runs that have it."""
        return {run["seed"]: run[split] for run in self.completed if run[split] is not None}

    def mean(self, column: str) -> float | None:
        values = [run[column] for run in self.completed if run[column] is not None]
        return statistics.fmean(values) if values else None

    def spread(self, split: str) -> tuple[float | None, float | None]:
        """Mean and sample standard deviation of the main metric (std None for fewer than 2 seeds)."""
        values = list(self.scores(split).values())
        if not values:
            return None, None
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None

    def status(self) -> str:
        counts: dict[str, int] = {}
        for run in self.runs:
            counts[run["status"]] = counts.get(run["status"], 0) + 1
        return counts.popitem()[0] if len(counts) == 1 else ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def configurations(rows: list[dict[str, Any]], keys: list[str]) -> list[Configuration]:
    """Runs grouped by model, method, data set and the swept keys: seeds are replicates."""
    groups: dict[tuple, Configuration] = {}
    for row in rows:
        identity = (row["model"], row["method"], row["dataset"]) if row["config"] else (row["run"],)
        settings = {key: row["config"].get(key, "–") for key in keys}
        group = groups.setdefault((*identity, *settings.values()), Configuration(settings))
        group.runs.append(row)
    return list(groups.values())


def best_per_method(configs: list[Configuration]) -> list[int]:
    """Indexes of each (model, method, data set)'s configuration with the best validation mean."""
    best: dict[tuple[str, str, str], int] = {}
    for index, config in enumerate(configs):
        score = config.spread("validation")[0]
        if score is None:
            continue
        cell = (config.runs[0]["model"], config.runs[0]["method"], config.runs[0]["dataset"])
        if cell not in best or score > configs[best[cell]].spread("validation")[0]:
            best[cell] = index
    return sorted(best.values())


@dataclass(frozen=True)
class PairedDifference:
    mean: float  # test metric of this configuration minus the reference's, averaged over shared seeds
    low: float  # 95% confidence interval (t distribution over the paired differences)
    high: float
    seeds: int


def reference_configurations(configs: list[Configuration], method: str | None) -> dict[tuple[str, str], int]:
    """(model, data set) -> index of the configuration the others there are compared with.

    Without `method`: the data set's best configuration by validation mean, whatever its model.
    With `method`: that method's validation-best configuration on the same model, else (a baseline
    that ran under another model's name, such as svm_tfidf) on the same data set.
    """
    scored = [i for i, config in enumerate(configs) if config.spread("validation")[0] is not None]

    def best(candidates: list[int]) -> int | None:
        return max(candidates, key=lambda i: configs[i].spread("validation")[0]) if candidates else None

    references: dict[tuple[str, str], int] = {}
    for index in scored:
        model, dataset = configs[index].runs[0]["model"], configs[index].runs[0]["dataset"]
        same_data = [i for i in scored if configs[i].runs[0]["dataset"] == dataset]
        if method is None:
            chosen = best(same_data)
        else:
            of_method = [i for i in same_data if configs[i].runs[0]["method"] == method]
            chosen = best([i for i in of_method if configs[i].runs[0]["model"] == model])
            if chosen is None:
                chosen = best(of_method)
        if chosen is not None:
            references[(model, dataset)] = chosen
    return references


def versus_reference(configs: list[Configuration], method: str | None = None) -> dict[int, PairedDifference]:
    """For each configuration (by index), its test difference from its reference configuration
    (`reference_configurations`), paired by seed; only where at least two seeds are shared."""
    compared: dict[int, PairedDifference] = {}
    for (model, dataset), reference in reference_configurations(configs, method).items():
        reference_scores = configs[reference].scores("test")
        for i, config in enumerate(configs):
            if i == reference or (config.runs[0]["model"], config.runs[0]["dataset"]) != (model, dataset):
                continue
            scores = config.scores("test")
            shared = sorted(set(scores) & set(reference_scores))
            if len(shared) < 2:
                continue
            differences = [scores[seed] - reference_scores[seed] for seed in shared]
            mean, deviation = statistics.fmean(differences), statistics.stdev(differences)
            half = stats.t.ppf(0.975, len(shared) - 1) * deviation / math.sqrt(len(shared))
            compared[i] = PairedDifference(mean, mean - half, mean + half, len(shared))
    return compared
