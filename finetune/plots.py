"""finetune-report's PNG plots, one set per data set: quality against trainable parameters and
against training time (with the Pareto front), a model x method heat map, and learning curves
(training loss and validation metric, the seeds' mean with a band for their spread).

A method has one colour in every figure of a report; models are told apart by marker, a method's
configurations by their settings (labels) or line style. Metric axes start at chance level where
the task has one (accuracy: 1 / number of classes), drawn as a dashed line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402

from finetune.studies import Configuration, best_per_method  # noqa: E402

MARKERS = "osD^vP*X"
LINE_STYLES = ("-", "--", ":", "-.")
LABEL_POINTS = 7  # font size of point labels


def write_plots(configs: list[Configuration], directory: Path, prefix: str = "") -> list[Path]:
    """PNG files for the configurations with a score, grouped by data set; returns their paths."""
    scored = [config for config in configs if score(config)[0] is not None]
    colours = method_colours(config.runs[0]["method"] for config in scored)
    written = []
    for dataset in sorted({config.runs[0]["dataset"] for config in scored}):
        group = [config for config in scored if config.runs[0]["dataset"] == dataset]
        stem = directory / f"{prefix}{dataset}"
        figures = {
            "quality_vs_params": quality_figure(group, "trainable", "trainable parameters (log scale)", colours),
            "quality_vs_time": quality_figure(group, "train_s", "training time, s (log scale)", colours),
            "model_x_method": heat_map_figure(group),
        }
        if any(run["validation_curve"] for config in group for run in config.completed):
            figures["learning_curves"] = learning_curves_figure(group, colours)
        written += [_save(figure, Path(f"{stem}_{name}.png")) for name, figure in figures.items()]
    return written


def method_colours(methods: Iterable[str]) -> dict[str, tuple]:
    """One colour a method, the same in every figure of the report."""
    names = sorted(set(methods))
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: palette(index % palette.N) for index, name in enumerate(names)}


def score(config: Configuration) -> tuple[float | None, float | None]:
    """Mean and std over seeds of the test metric, else of the validation metric."""
    test = config.spread("test")
    return test if test[0] is not None else config.spread("validation")


def chance_level(group: list[Configuration]) -> float | None:
    """Accuracy by guessing uniformly among the classes, where every run agrees on their number."""
    runs = [run for config in group for run in config.runs]
    classes = {run["classes"] for run in runs}
    if {run["metric"] for run in runs} != {"accuracy"} or len(classes) != 1 or min(classes) < 2:
        return None
    return 1 / classes.pop()


def _label(group: list[Configuration]) -> str:
    split = "test" if all(config.spread("test")[0] is not None for config in group) else "test or validation"
    seeds = max(len(config.completed) for config in group)
    return f"{group[0].runs[0]['metric']} ({split}{', mean ± std over seeds' if seeds > 1 else ''})"


def settings_text(config: Configuration) -> str:
    """The configuration's swept settings in a few words, keys shortened (no model or method)."""
    return " ".join(f"{key.rsplit('.', 1)[-1]}={_short(value)}" for key, value in config.settings.items()
                    if value not in ("–", "null"))


def _short(value: str) -> str:
    """A float as 3 significant digits (a searched learning rate has 17); anything else as it is."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() or "." not in value and "e" not in value else f"{number:.3g}"


def quality_figure(group: list[Configuration], x_key: str, x_label: str, colours: dict[str, tuple]) -> plt.Figure:
    """Score against `x_key` (log scale): a colour a method, a marker a model, error bars the std over
    seeds, the Pareto front (no cheaper configuration scores higher), settings beside their points."""
    figure, axes = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
    models = sorted({config.runs[0]["model"] for config in group})
    points = [(config, config.mean(x_key), *score(config)) for config in group if (config.mean(x_key) or 0) > 0]
    labelled = _configurations_per_cell(group)
    for config, x, mean, deviation in points:
        method, model = config.runs[0]["method"], config.runs[0]["model"]
        axes.errorbar(x, mean, yerr=deviation or 0, fmt=MARKERS[models.index(model) % len(MARKERS)], capsize=3,
                      markersize=6, color=colours[method])
    front = pareto_front([(x, mean) for _, x, mean, _ in points])
    if len(front) > 1:
        axes.step(*zip(*front), where="post", color="0.6", linewidth=1, zorder=0, label="Pareto front")
    _chance_line(axes, group)
    axes.set_xscale("log")
    axes.set(xlabel=x_label, ylabel=_label(group), title=group[0].runs[0]["dataset"])
    axes.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colours[m], marker="o", linestyle="", label=m)
               for m in sorted({config.runs[0]["method"] for config in group})]
    if len(models) > 1:
        handles += [plt.Line2D([], [], color="0.3", marker=MARKERS[i % len(MARKERS)], linestyle="", label=model)
                    for i, model in enumerate(models)]
    handles += axes.get_legend_handles_labels()[0]  # the front and the chance line
    figure.legend(handles=handles, fontsize=8, loc="outside right center")
    figure.draw_without_rendering()  # the layout is fixed before labels are placed in display units
    place_labels(axes, [(x, mean, settings_text(config)) for config, x, mean, _ in points
                        if labelled[(config.runs[0]["model"], config.runs[0]["method"])] > 1])
    return figure


def _configurations_per_cell(group: list[Configuration]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for config in group:
        cell = (config.runs[0]["model"], config.runs[0]["method"])
        counts[cell] = counts.get(cell, 0) + 1
    return counts


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (lower x, higher y), by increasing x."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda point: (point[0], -point[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def place_labels(axes: plt.Axes, points: list[tuple[float, float, str]]) -> None:
    """Write each text beside its point, moved up or down (within the axes) where it would overlap a
    label already placed; a moved label is tied to its point by a thin line."""
    if not points:
        return
    scale = axes.figure.dpi / 72  # display pixels per point
    height = 1.3 * LABEL_POINTS * scale
    box = axes.get_window_extent()
    placed: list[tuple[float, float, float]] = []  # x from, x to, y of each label's baseline (display pixels)
    anchors = axes.transData.transform([(x, y) for x, y, _ in points])
    for (px, py), (x, y, text) in sorted(zip(anchors, points), key=lambda item: (-item[0][1], item[0][0])):
        left, right = px + 4 * scale, px + 4 * scale + 0.62 * LABEL_POINTS * scale * len(text)
        candidates = [py - 0.4 * height + step * height for k in range(12) for step in ((k + 1) // 2 * (-1) ** k,)]
        inside = [top for top in candidates if box.y0 <= top and top + height <= box.y1] or candidates[:1]
        top = next((top for top in inside if not any(left < other_right and other_left < right and
                                                    abs(top - other_top) < height
                                                    for other_left, other_right, other_top in placed)), inside[0])
        placed.append((left, right, top))
        moved = abs(top - (py - 0.4 * height)) > 0.5 * height
        label = axes.annotate(text, (x, y), xytext=(4, (top - py) / scale), textcoords="offset points",
                              fontsize=LABEL_POINTS, annotation_clip=False,
                              arrowprops={"arrowstyle": "-", "color": "0.6", "linewidth": 0.5} if moved else None)
        label.set_in_layout(False)  # the axes keep the size the positions were computed for


def _chance_line(axes: plt.Axes, group: list[Configuration]) -> None:
    chance = chance_level(group)
    if chance is not None:
        axes.axhline(chance, color="0.4", linestyle="--", linewidth=1, label=f"chance (1/{round(1 / chance)})")


def heat_map_figure(group: list[Configuration]) -> plt.Figure:
    """Model x method on a colour scale from chance level (else 0) to 1; a cell with several
    configurations shows the one with the best validation mean, and its settings."""
    models = sorted({config.runs[0]["model"] for config in group})
    methods = sorted({config.runs[0]["method"] for config in group})
    best = {(config.runs[0]["model"], config.runs[0]["method"]): config
            for config in (group[index] for index in best_per_method(group))}
    grid = np.full((len(models), len(methods)), np.nan)
    for (model, method), config in best.items():
        grid[models.index(model), methods.index(method)] = score(config)[0]
    figure, axes = plt.subplots(figsize=(1.5 * len(methods) + 3, 0.75 * len(models) + 2.2), layout="constrained")
    norm = Normalize(vmin=chance_level(group) or 0.0, vmax=1.0)
    colour_map = plt.get_cmap("viridis")
    image = axes.imshow(grid, cmap=colour_map, norm=norm, aspect="auto")
    axes.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    axes.set_yticks(range(len(models)), models)
    several = len(best) < len(group)
    for (model, method), config in best.items():
        mean, deviation = score(config)
        lines = [f"{mean:.3f}" + (f" ±{deviation:.3f}" if deviation is not None else "")]
        if several and settings_text(config):
            lines.append(settings_text(config))
        red, green, blue, _ = colour_map(norm(mean))
        ink = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
        axes.text(methods.index(method), models.index(model), "\n".join(lines), ha="center", va="center",
                  fontsize=7, color=ink)
    bar = figure.colorbar(image, ax=axes)
    bar.set_label(_label(group), fontsize=8)
    axes.set_title(group[0].runs[0]["dataset"] + ("\nbest configuration by validation per cell" if several else ""),
                   fontsize=10)
    return figure


def learning_curves_figure(group: list[Configuration], colours: dict[str, tuple]) -> plt.Figure:
    """Training loss by step and the validation metric by epoch: the seeds' mean, a band from their
    lowest to highest value; a colour a method, a line style a configuration of it."""
    metric = group[0].runs[0]["metric"]
    figure, (loss_axes, metric_axes) = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained")
    styles: dict[str, int] = {}
    several_models = len({config.runs[0]["model"] for config in group}) > 1
    for config in group:
        runs = [run for run in config.completed if run["validation_curve"]]
        if not runs:
            continue
        method = config.runs[0]["method"]
        style = LINE_STYLES[styles.setdefault(method, 0) % len(LINE_STYLES)]
        styles[method] += 1
        name = f"{config.runs[0]['model']} {method}" if several_models else method
        line = {"color": colours[method], "linestyle": style, "label": f"{name} {settings_text(config)}".strip()}
        steps = min(len(run["train_loss"]) for run in runs)
        if steps:
            x = [point[0] for point in runs[0]["train_loss"][:steps]]
            _band(loss_axes, x, np.array([[point[1] for point in run["train_loss"][:steps]] for run in runs]), line)
        epochs = min(len(run["validation_curve"]) for run in runs)
        values = np.array([[point[metric] for point in run["validation_curve"][:epochs]] for run in runs])
        _band(metric_axes, list(range(1, epochs + 1)), values, {**line, "marker": "o", "markersize": 4})
    _chance_line(metric_axes, group)
    loss_axes.set(xlabel="optimizer step", ylabel="training loss", title=f"{group[0].runs[0]['dataset']}: training")
    metric_axes.set(xlabel="epoch", ylabel=f"validation {metric}", title="validation")
    metric_axes.xaxis.get_major_locator().set_params(integer=True)
    for axes in (loss_axes, metric_axes):
        axes.grid(alpha=0.3)
    seeds = max(len(config.completed) for config in group)
    title = "mean over seeds, band: lowest to highest seed" if seeds > 1 else None
    figure.legend(*metric_axes.get_legend_handles_labels(), fontsize=7, loc="outside right upper", title=title,
                  title_fontsize=7)
    return figure


def _band(axes: plt.Axes, x: list[float], values: np.ndarray, line: dict) -> None:
    """The mean of `values` (one row a seed) as a line, and their range as a band when there are several."""
    axes.plot(x, values.mean(axis=0), **line)
    if len(values) > 1:
        axes.fill_between(x, values.min(axis=0), values.max(axis=0), color=line["color"], alpha=0.15, linewidth=0)


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
