"""`finetune-report DIR...`: one table of every results.json under the given directories.

A row is a configuration: runs that differ only in `train.seed` are its replicates (mean ± std over
seeds, and n), and every config key that differs among the runs gets a column. Each configuration
is compared with a reference, paired by seed: the data set's validation-best configuration, or
with `--baseline METHOD` that method's. Reads only files: report.md, report.csv (configurations),
runs.csv (one row a run) and PNG plots (finetune.plots) go to `--out` (default: the one directory
given, or the common parent of several); `--best` writes best.md, best.csv and best_*.png beside
them instead of replacing the full report. Failed, running and unreadable runs are counted, not
dropped.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from pathlib import Path
from typing import Any

from finetune import report_html
from finetune.errors import EXIT_BAD_INPUT
from finetune.files import write_text_atomic
from finetune.plots import write_plots
from finetune.record import RunRecord, flatten
from finetune.run_environments import differences, environment, unrecorded, warning
from finetune.studies import Configuration, best_per_method, configurations, swept_keys, versus_reference
from finetune.trace import write_trace

COLUMNS = (
    "model", "method", "dataset", "status", "metric", "validation", "test", "trainable", "trainable_%",
    "train_s", "samples_s", "peak_memory_mb", "error", "differs", "run",
)  # runs.csv, before the swept keys; report.md and report.csv add n and the comparison with the reference


def collect(directories: list[Path], relative_to: Path | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per results.json found under `directories`, sorted by model, dataset and method, and
    a warning for each file that cannot be read (it still gets a row, status `unreadable`)."""
    rows, warnings = [], []
    for directory in directories:
        for path in sorted(directory.rglob("results.json")):
            run = Path(os.path.relpath(path.parent, relative_to or directory))
            try:
                record = RunRecord.read(path)
            except (OSError, ValueError, TypeError) as error:
                warnings.append(f"{path}: cannot be read ({type(error).__name__}: {error}); counted as unreadable")
                record = RunRecord(status="unreadable", error=f"{type(error).__name__}: {error}")
            rows.append(_row(record, run))
    return sorted(rows, key=lambda row: (row["model"], row["dataset"], row["method"])), warnings


def _row(record: RunRecord, run: Path) -> dict[str, Any]:
    params = record.params
    total = params.get("total") or 0
    return {
        "model": record.model,
        "method": record.method,
        "dataset": record.dataset,
        "status": record.status,
        "metric": record.main_metric,
        "validation": record.score("validation"),
        "test": record.score("test"),
        "trainable": params.get("trainable"),
        "trainable_%": 100 * params["trainable"] / total if total else None,
        "train_s": record.train_seconds,
        "samples_s": record.train_samples_per_second,
        "peak_memory_mb": record.peak_memory_mb,
        "error": record.error,
        "run": str(run),
        "config": flatten(record.config),
        "seed": record.config.get("train", {}).get("seed"),
        "classes": len(record.label_names),
        "train_loss": record.training.get("train_loss", []),
        "validation_curve": record.training.get("validation_curve", []),
        "environment": environment(record),
        "differs": "",  # filled by mark_mixed
    }


def mark_mixed(rows: list[dict[str, Any]]) -> str | None:
    """Mark each completed run whose versions, code or machine differ from most completed runs'
    (its `differs`: what differs); returns the warning to print, or None when they all agree."""
    completed = [row for row in rows if row["status"] == "completed"]
    environments = [row["environment"] for row in completed]
    marks, mixed = differences(environments)
    for row, mark in zip(completed, marks):
        row["differs"] = ", ".join(mark)
    return warning(mixed, unrecorded(environments))


FORMATS = {"validation": "{:.4f}", "test": "{:.4f}", "trainable": "{:,}", "trainable_%": "{:.2f}",
           "train_s": "{:,.1f}", "samples_s": "{:,.1f}", "peak_memory_mb": "{:,.0f}"}


def table(configs: list[Configuration], versus: str) -> list[dict[str, Any]]:
    """One row per configuration: its swept keys' values, n, mean ± std and the paired difference
    from the reference (`versus`: "best", or a method's name)."""
    differences = versus_reference(configs, None if versus == "best" else versus)
    rows = []
    for index, config in enumerate(configs):
        first = config.runs[0]
        validation, validation_std = config.spread("validation")
        test, test_std = config.spread("test")
        trainable = config.mean("trainable")
        rows.append({
            "model": first["model"], "method": first["method"], "dataset": first["dataset"], **config.settings,
            "status": config.status(), "n": len(config.completed), "metric": first["metric"],
            "validation": validation, "validation_std": validation_std, "test": test, "test_std": test_std,
            f"test_vs_{versus}": differences.get(index),
            "trainable": None if trainable is None else round(trainable), "trainable_%": config.mean("trainable_%"),
            "train_s": config.mean("train_s"), "samples_s": config.mean("samples_s"),
            "peak_memory_mb": config.mean("peak_memory_mb"),
            "differs": ", ".join(sorted({key for run in config.runs for key in run["differs"].split(", ") if key})),
            "runs": " ".join(run["run"] for run in config.runs),
        })
    return rows


def _cell(row: dict[str, Any], column: str) -> str:
    value = row[column]
    if value is None or value == "":
        return "–"
    if column in ("validation", "test") and row[f"{column}_std"] is not None:
        return f"{value:.4f} ± {row[f'{column}_std']:.4f}"
    if column.startswith("test_vs_"):
        return f"{value.mean:+.4f} [{value.low:+.4f}, {value.high:+.4f}]"
    return FORMATS.get(column, "{}").format(value)


def summary_columns(rows: list[dict[str, Any]], keys: list[str], versus: str) -> list[str]:
    """The configurations table's columns: `differs` only where some runs' versions or machine differ."""
    mixed = ["differs"] if any(row["differs"] for row in rows) else []
    return ["model", "method", "dataset", *keys, "status", "n", "metric", "validation", "test", f"test_vs_{versus}",
            "trainable", "trainable_%", "train_s", "samples_s", "peak_memory_mb", *mixed, "runs"]


def markdown(rows: list[dict[str, Any]], keys: list[str], versus: str) -> str:
    """The configurations as a markdown table, numbers rounded for reading (the CSV keeps them whole);
    a `differs` column where some runs' versions or machine differ from the others'."""
    columns = summary_columns(rows, keys, versus)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row, column) for column in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        cells = dict(row)
        for key, value in row.items():
            if key.startswith("test_vs_"):
                cells.update({key: value.mean, f"{key}_low": value.low, f"{key}_high": value.high} if value else {key: None})
        writer.writerow(cells)
    return buffer.getvalue()


def runs_csv(rows: list[dict[str, Any]], keys: list[str]) -> str:
    """One line a run, with its swept keys' values (`config.KEY`) and its seed."""
    flat = [{**row, **{f"config.{key}": row["config"].get(key) for key in keys}} for row in rows]
    return to_csv(flat, [*COLUMNS, *(f"config.{key}" for key in keys), "seed"])


def output_dir(directories: list[Path], out: Path | None) -> Path:
    """`--out`, else the one directory, else the common parent of several (not the filesystem root)."""
    if out is not None:
        return out
    if len(directories) == 1:
        return directories[0]
    common = Path(os.path.commonpath([str(d.resolve()) for d in directories]))
    if common == Path(common.anchor):
        raise ValueError("the directories share no parent folder; choose where the report goes with --out DIR")
    return common


def main(argv: list[str] | None = None) -> None:
    """Console entry point of finetune-report."""
    parser = argparse.ArgumentParser(prog="finetune-report", description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="+", type=Path, help="run, multirun or outputs directories")
    parser.add_argument("--out", type=Path, help="where the report goes (default: the directory, or the common "
                                                 "parent of several)")
    parser.add_argument("--best", action="store_true", help="one row per model, method and data set: its "
                        "configuration with the best validation mean (best.md, best.csv, best_*.png)")
    parser.add_argument("--html", action="store_true", help="also write one self-contained page: report.html "
                        "(best.html with --best), sortable tables, the figures, links to every run")
    parser.add_argument("--baseline", metavar="METHOD", help="compare every configuration with this method's "
                        "validation-best one (default: the data set's validation-best configuration)")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.directories if not d.is_dir()]
    try:
        if missing:
            raise ValueError(f"not a directory: {', '.join(missing)}")
        out = output_dir(args.directories, args.out)
        rows, warnings = collect(args.directories, out)
        if not rows:
            raise ValueError(f"no results.json under {', '.join(map(str, args.directories))}")
        if args.baseline and args.baseline not in {row["method"] for row in rows}:
            found = ", ".join(sorted({row["method"] for row in rows if row["method"]}))
            raise ValueError(f"--baseline: no run of method '{args.baseline}' (methods here: {found})")
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out: '{out}' is a file, not a directory")
        out.mkdir(parents=True, exist_ok=True)
    except (ValueError, OSError) as error:
        print(f"finetune-report: error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    for warning in warnings:
        print(f"finetune-report: warning: {warning}", file=sys.stderr)
    print(write_report(rows, out, args.best, args.baseline or "best", args.html))


def write_report(rows: list[dict[str, Any]], out: Path, best: bool, versus: str, html: bool = False) -> str:
    """Write the tables and plots of `rows` to `out`; returns what the command prints."""
    mixed = mark_mixed(rows)
    keys = swept_keys(rows)
    configs = configurations(rows, keys)
    summary, counted = table(configs, versus), f"{len(rows)} runs in {len(configs)} configurations"
    name = "report"
    if best:
        chosen = best_per_method(configs)
        summary, configs, name = [summary[index] for index in chosen], [configs[index] for index in chosen], "best"
    text = markdown(summary, keys, versus) + (f"\nWarning: {mixed}.\n" if mixed else "")
    write_text_atomic(out / f"{name}.md", text)
    summary_columns = [column for column in summary[0] if column != "runs"] if summary else []
    versus_columns = [f"test_vs_{versus}_low", f"test_vs_{versus}_high"]
    write_text_atomic(out / f"{name}.csv", to_csv(summary, [*summary_columns, *versus_columns, "runs"]))
    write_text_atomic(out / "runs.csv", runs_csv(rows, keys))
    plots = write_plots(configs, out, prefix="best_" if best else "")
    trace = None if best else write_trace(rows, out / "search_trace.png")
    plots += [trace] if trace else []
    swept = f"; swept: {', '.join(keys)}" if keys else ""
    shown = "; each method's validation-best shown" if best else ""
    reference = "" if versus == "best" else f"; compared with {versus}"
    said = f"{counted}{swept}{shown}{reference}"
    pages = []
    if html:
        notes = ([f"Warning: {mixed}."] if mixed else []) + [said]
        write_text_atomic(out / f"{name}.html", html_page(out, summary, keys, versus, rows, plots, notes))
        pages = [out / f"{name}.html"]
    return (text + f"\n{said}; wrote {out / f'{name}.md'}, {out / f'{name}.csv'}, "
            f"{out / 'runs.csv'}" + "".join(f", {path.name}" for path in plots) + "".join(f", {page}" for page in pages))


def html_page(out: Path, summary: list[dict[str, Any]], keys: list[str], versus: str, rows: list[dict[str, Any]],
              plots: list[Path], notes: list[str]) -> str:
    """report.html's content: the tables as (text, sort value) cells, the run links, the provenance."""
    columns = [column for column in summary_columns(summary, keys, versus) if column != "runs"]
    configurations = [[(_cell(row, column), _sort_value(row[column])) for column in columns] for row in summary]
    run_columns = ["model", "method", "dataset", *keys, "seed", "status", "validation", "test", "train_s",
                   "finetune", "machine", "differs", "error", "run"]
    runs = [[_run_cell(row, column) for column in run_columns] for row in rows]
    problems = [(row["run"], row["status"], row["error"]) for row in rows if row["status"] != "completed"]
    environments: dict[str, dict[str, int]] = {}
    for row in rows:
        for key, value in row["environment"].items():
            counted = environments.setdefault(key, {})
            counted[value] = counted.get(value, 0) + 1
    title = f"finetune-report: {out.resolve().name}"
    return report_html.page(title, notes, (columns, configurations), (run_columns, runs), plots, problems, environments)


def _sort_value(value: Any) -> Any:
    return value.mean if hasattr(value, "mean") else value


def _run_cell(row: dict[str, Any], column: str) -> tuple[str, Any]:
    if column == "run":
        return report_html.links(row["run"]), row["run"]
    if column in ("finetune", "machine"):
        value = row["environment"].get(column, "unrecorded")
        return value, value
    value = row["config"].get(column) if column not in row else row[column]
    if column in ("validation", "test", "train_s") and isinstance(value, (int, float)):
        return FORMATS[column].format(value), value
    return ("–" if value in (None, "") else str(value)), value
