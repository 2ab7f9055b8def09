"""finetune-report's PNG plots, one set per data set: quality against trainable parameters and
against training time (one colour per method), and a model x method heat map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402


def write_plots(rows: list[dict[str, Any]], directory: Path) -> list[Path]:
    """PNG files for the completed rows with a score, grouped by data set; returns their paths."""
    scored = [row for row in rows if row["status"] == "completed" and _score(row) is not None]
    written = []
    for dataset in sorted({row["dataset"] for row in scored}):
        group = [row for row in scored if row["dataset"] == dataset]
        written += [
            _scatter(group, "trainable", "trainable parameters (log scale)", directory / f"{dataset}_quality_vs_params.png"),
            _scatter(group, "train_s", "training time, s (log scale)", directory / f"{dataset}_quality_vs_time.png"),
            _heat_map(group, directory / f"{dataset}_model_x_method.png"),
        ]
    return written


def _score(row: dict[str, Any]) -> float | None:
    return row["test"] if row["test"] is not None else row["validation"]


def _label(group: list[dict[str, Any]]) -> str:
    split = "test" if all(row["test"] is not None for row in group) else "test or validation"
    return f"{group[0]['metric']} ({split})"


def _scatter(group: list[dict[str, Any]], x_key: str, x_label: str, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for method in sorted({row["method"] for row in group}):
        points = [row for row in group if row["method"] == method and (row[x_key] or 0) > 0]
        if not points:
            continue
        axes.scatter([row[x_key] for row in points], [_score(row) for row in points], label=method, s=40)
        for row in points:
            axes.annotate(row["model"], (row[x_key], _score(row)), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes.set_xscale("log")
    axes.set_xlabel(x_label)
    axes.set_ylabel(_label(group))
    axes.set_title(group[0]["dataset"])
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    return _save(figure, path)


def _heat_map(group: list[dict[str, Any]], path: Path) -> Path:
    models = sorted({row["model"] for row in group})
    methods = sorted({row["method"] for row in group})
    grid = np.full((len(models), len(methods)), np.nan)
    for row in group:  # the last row of a (model, method) pair wins; rows are sorted
        grid[models.index(row["model"]), methods.index(row["method"])] = _score(row)
    figure, axes = plt.subplots(figsize=(1.2 * len(methods) + 2.5, 0.6 * len(models) + 2))
    image = axes.imshow(grid, cmap="viridis", aspect="auto")
    axes.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    axes.set_yticks(range(len(models)), models)
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            axes.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=8, color="white")
    figure.colorbar(image, ax=axes, label=_label(group))
    axes.set_title(group[0]["dataset"])
    return _save(figure, path)


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
