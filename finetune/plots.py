"""finetune-report's PNG plots, one set per data set: quality against trainable parameters and
against training time (one colour per method, error bars the std over seeds), a model x method heat
map, and learning curves (training loss and validation metric, one line per configuration)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from finetune.studies import Configuration, best_per_method  # noqa: E402


def write_plots(configs: list[Configuration], directory: Path) -> list[Path]:
    """PNG files for the configurations with a score, grouped by data set; returns their paths."""
    scored = [config for config in configs if _score(config)[0] is not None]
    written = []
    for dataset in sorted({config.runs[0]["dataset"] for config in scored}):
        group = [config for config in scored if config.runs[0]["dataset"] == dataset]
        written += [
            _scatter(group, "trainable", "trainable parameters (log scale)", directory / f"{dataset}_quality_vs_params.png"),
            _scatter(group, "train_s", "training time, s (log scale)", directory / f"{dataset}_quality_vs_time.png"),
            _heat_map(group, directory / f"{dataset}_model_x_method.png"),
        ]
        if any(run["validation_curve"] for config in group for run in config.completed):
            written.append(_learning_curves(group, directory / f"{dataset}_learning_curves.png"))
    return written


def _score(config: Configuration) -> tuple[float | None, float | None]:
    """Mean and std over seeds of the test metric, else of the validation metric."""
    test = config.spread("test")
    return test if test[0] is not None else config.spread("validation")


def _label(group: list[Configuration]) -> str:
    split = "test" if all(config.spread("test")[0] is not None for config in group) else "test or validation"
    seeds = max(len(config.completed) for config in group)
    return f"{group[0].runs[0]['metric']} ({split}{', mean ± std over seeds' if seeds > 1 else ''})"


def _name(config: Configuration, lead: str = "method") -> str:
    """The configuration in a few words: its method (or model) and swept settings, keys shortened."""
    settings = " ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in config.settings.items()
                        if value not in ("–", "null"))
    return f"{config.runs[0][lead]} {settings}".strip()


def _scatter(group: list[Configuration], x_key: str, x_label: str, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for method in sorted({config.runs[0]["method"] for config in group}):
        points = [config for config in group if config.runs[0]["method"] == method and (config.mean(x_key) or 0) > 0]
        if not points:
            continue
        means, deviations = zip(*(_score(config) for config in points))
        axes.errorbar([config.mean(x_key) for config in points], means, yerr=[d or 0 for d in deviations],
                      fmt="o", capsize=3, label=method, markersize=6)
        for config, mean in zip(points, means):
            axes.annotate(_name(config, lead="model"), (config.mean(x_key), mean), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes.set_xscale("log")
    axes.set_xlabel(x_label)
    axes.set_ylabel(_label(group))
    axes.set_title(group[0].runs[0]["dataset"])
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    return _save(figure, path)


def _heat_map(group: list[Configuration], path: Path) -> Path:
    """Model x method; a cell with several configurations shows the one with the best validation mean."""
    models = sorted({config.runs[0]["model"] for config in group})
    methods = sorted({config.runs[0]["method"] for config in group})
    best = {(config.runs[0]["model"], config.runs[0]["method"]): config
            for config in (group[index] for index in best_per_method(group))}
    grid = np.full((len(models), len(methods)), np.nan)
    for (model, method), config in best.items():
        grid[models.index(model), methods.index(method)] = _score(config)[0]
    figure, axes = plt.subplots(figsize=(1.2 * len(methods) + 2.5, 0.6 * len(models) + 2))
    image = axes.imshow(grid, cmap="viridis", aspect="auto")
    axes.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    axes.set_yticks(range(len(models)), models)
    for (model, method), config in best.items():
        mean, deviation = _score(config)
        text = f"{mean:.3f}" + (f"\n±{deviation:.3f}" if deviation is not None else "")
        axes.text(methods.index(method), models.index(model), text, ha="center", va="center", fontsize=7, color="white")
    figure.colorbar(image, ax=axes, label=_label(group))
    several = len(best) < len(group)
    axes.set_title(group[0].runs[0]["dataset"] + (" (best configuration by validation per cell)" if several else ""))
    return _save(figure, path)


def _learning_curves(group: list[Configuration], path: Path) -> Path:
    """Training loss by step and the validation metric by epoch, one line per configuration (seed mean)."""
    metric = group[0].runs[0]["metric"]
    figure, (loss_axes, metric_axes) = plt.subplots(1, 2, figsize=(13, 4.5 + 0.12 * len(group)))
    for config in group:
        runs = [run for run in config.completed if run["validation_curve"]]
        if not runs:
            continue
        steps = min(len(run["train_loss"]) for run in runs)
        if steps:
            loss_axes.plot([point[0] for point in runs[0]["train_loss"][:steps]],
                           np.mean([[point[1] for point in run["train_loss"][:steps]] for run in runs], axis=0),
                           label=_name(config))
        epochs = min(len(run["validation_curve"]) for run in runs)
        values = np.array([[point[metric] for point in run["validation_curve"][:epochs]] for run in runs])
        metric_axes.errorbar(range(1, epochs + 1), values.mean(axis=0), yerr=values.std(axis=0, ddof=1) if len(runs) > 1
                             else None, marker="o", capsize=3, label=_name(config))
    loss_axes.set(xlabel="optimizer step", ylabel="training loss", title=f"{group[0].runs[0]['dataset']}: training")
    metric_axes.set(xlabel="epoch", ylabel=f"validation {metric}", title="validation")
    metric_axes.xaxis.get_major_locator().set_params(integer=True)
    for axes in (loss_axes, metric_axes):
        axes.grid(alpha=0.3)
    metric_axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    return _save(figure, path)


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
