"""finetune-report's search trace: for each Optuna search among the runs (hydra/sweeper=optuna),
every trial's validation metric by trial number, how it ended (completed, pruned, failed), and the
best completed value so far."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

TRIAL_KEY = "trial.number"  # set by the sweeper in each job's config
ENDINGS = {"completed": ("o", "tab:blue"), "pruned": ("x", "tab:orange"), "failed": ("v", "tab:red")}


def trial_number(row: dict[str, Any]) -> int | None:
    """The run's trial in its search (the report's flattened config holds values as JSON text)."""
    value = row["config"].get(TRIAL_KEY, "null")
    return None if value in ("null", "") else int(value)


def searches(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The rows of each search (runs with a trial number), by the search's folder, in trial order."""
    found: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if trial_number(row) is not None:
            found.setdefault(str(Path(row["run"]).parent), []).append(row)
    return {name: sorted(trials, key=trial_number) for name, trials in sorted(found.items())}


def best_so_far(trials: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(trial number, best completed validation up to it), from the first completed trial on."""
    points, best = [], None
    for row in trials:
        if row["status"] == "completed" and row["validation"] is not None:
            best = row["validation"] if best is None else max(best, row["validation"])
        if best is not None:
            points.append((trial_number(row), best))
    return points


def write_trace(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """One panel per search; None when the rows hold no search."""
    found = searches(rows)
    if not found:
        return None
    figure, panels = plt.subplots(len(found), 1, figsize=(7, 3.2 * len(found)), layout="constrained", squeeze=False)
    for axes, (name, trials) in zip(panels[:, 0], found.items()):
        _panel(axes, name, trials)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _panel(axes: plt.Axes, name: str, trials: list[dict[str, Any]]) -> None:
    for ending, (marker, colour) in ENDINGS.items():
        chosen = [row for row in trials if row["status"] == ending]
        scored = [row for row in chosen if row["validation"] is not None]
        label = f"{ending} ({len(chosen)})"
        if scored:
            axes.scatter([trial_number(row) for row in scored], [row["validation"] for row in scored], marker=marker,
                         color=colour, label=label, zorder=3)
        unscored = [trial_number(row) for row in chosen if row["validation"] is None]
        if unscored:  # no score (a failed trial): marked along the bottom edge
            axes.scatter(unscored, [0.03] * len(unscored), marker=marker, color=colour, zorder=3, clip_on=False,
                         transform=axes.get_xaxis_transform(), label=None if scored else label)
    points = best_so_far(trials)
    if points:
        axes.step(*zip(*points), where="post", color="black", linewidth=1, label="best so far")
    metric = next((row["metric"] for row in trials if row["metric"]), "main metric")
    title = f"{'search' if name == '.' else name}: {len(trials)} trials"
    axes.set(xlabel="trial", ylabel=f"validation {metric}", title=title)
    numbers = [trial_number(row) for row in trials]
    axes.set_xlim(min(numbers) - 0.5, max(numbers) + 0.5)  # markers on the edge do not widen the axis
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
