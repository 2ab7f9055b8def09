"""finetune-study's report in the study folder: report.md / report.csv / runs.csv and the figures
of the replicates and baselines (finetune-report's), search_trace.png of the searches, and study.md:
the command, the protocol, the table, and what the study cost."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import yaml

from finetune.files import write_text_atomic
from finetune.report import collect, write_report
from finetune.trace import write_trace

STAGES = ("search", "replicates", "baselines")


def cost(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Runs and training seconds per stage, and the pruned trials with the training time they saved
    (estimated per search: its completed trials' mean time minus each pruned trial's own)."""
    by_stage: dict[str, dict[str, float]] = {}
    completed: dict[str, list[float]] = {}
    for row in rows:
        stage, search = Path(row["run"]).parts[0], _search_of(row)
        totals = by_stage.setdefault(stage, {"runs": 0, "seconds": 0.0})
        totals["runs"] += 1
        totals["seconds"] += row["train_s"] or 0.0
        if row["status"] == "completed" and row["train_s"]:
            completed.setdefault(search, []).append(row["train_s"])
    pruned = [row for row in rows if row["status"] == "pruned"]
    saved = sum(max(0.0, statistics.fmean(completed[_search_of(row)]) - (row["train_s"] or 0.0))
                for row in pruned if completed.get(_search_of(row)))
    return {"stages": by_stage, "pruned": len(pruned), "saved_seconds": saved,
            "seconds": sum(totals["seconds"] for totals in by_stage.values())}


def _search_of(row: dict[str, Any]) -> str:
    """The folder of the run's sweep (one search, or one stage's runs of a method)."""
    return str(Path(row["run"]).parent)


def cost_lines(spent: dict[str, Any]) -> list[str]:
    lines = [f"- {stage}: {int(totals['runs'])} run{'s' if totals['runs'] != 1 else ''}, "
             f"{totals['seconds']:,.0f} s of training"
             for stage, totals in sorted(spent["stages"].items(), key=lambda item: STAGES.index(item[0])
                                         if item[0] in STAGES else len(STAGES))]
    lines.append(f"- in all: {spent['seconds']:,.0f} s of training")
    if spent["pruned"]:
        lines.append(f"- pruning stopped {spent['pruned']} trials early, saving about {spent['saved_seconds']:,.0f} s "
                     "(each against its search's completed trials' mean time)")
    return lines


def chosen_lines(root: Path) -> list[str]:
    """Each search's chosen settings: its best trial by validation."""
    lines = ["| method | chosen settings | search's best validation | trial |", "|---|---|---|---|"]
    for path in sorted((root / "search").glob("*/optimization_results.yaml")):
        best = yaml.safe_load(path.read_text())
        settings = ", ".join(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
                             for key, value in best["best_params"].items())
        lines.append(f"| {path.parent.name} | {settings} | {best['best_value']:.4f} | {best['best_trial']} |")
    return lines if len(lines) > 2 else []


def write_study_report(root: Path, protocol: str, reference: str, outcome: dict[str, str], command: list[str]) -> str:
    """Write the study's report files into `root`; returns what finetune-study prints."""
    kept = [root / stage for stage in ("replicates", "baselines") if (root / stage).is_dir()]
    rows = collect(kept, root)[0] if kept else []
    summary = write_report(rows, root, best=False, versus=reference) if rows else "no run completed\n"
    search_rows = collect([root / "search"], root)[0] if (root / "search").is_dir() else []
    trace = write_trace(search_rows, root / "search_trace.png") if search_rows else None
    spent = cost(collect([root], root)[0])
    missing = [f"- {method}: {what}" for method, what in outcome.items() if what not in ("searched", "baseline")]
    text = "\n".join([
        "# Method study", "",
        f"`{' '.join(command)}` ({time.strftime('%Y-%m-%d %H:%M')})", "",
        protocol, "",
        *chosen_lines(root), "",
        (root / "report.md").read_text() if rows else "No run completed.", "",
        *(["Not compared:", *missing, ""] if missing else []),
        "## Cost", *cost_lines(spent), "",
        "Figures: quality against trainable parameters and training time (with the Pareto front), learning "
        "curves of the chosen settings" + (", and each search's trials with the best so far (search_trace.png)"
                                           if trace else "") + ".",
    ]) + "\n"
    write_text_atomic(root / "study.md", text)
    return summary + f"\nwrote {root / 'study.md'}"
