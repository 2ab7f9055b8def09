"""`finetune-report DIR...`: one table of every results.json under the given directories.

Reads only files: report.md, report.csv and PNG plots (finetune.plots) are written in the first
directory, and the markdown table is printed. Failed and running runs are listed, not dropped.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from finetune.artifacts import write_text_atomic
from finetune.errors import EXIT_BAD_INPUT
from finetune.plots import write_plots

COLUMNS = (
    "model", "method", "dataset", "status", "metric", "validation", "test", "trainable", "trainable_%",
    "train_s", "samples_s", "peak_memory_mb", "run",
)


def collect(directories: list[Path]) -> list[dict[str, Any]]:
    """One row per results.json found under `directories`, sorted by model, dataset and method."""
    rows = []
    for directory in directories:
        for path in sorted(directory.rglob("results.json")):
            rows.append(_row(json.loads(path.read_text()), path.parent.relative_to(directory)))
    return sorted(rows, key=lambda row: (row["model"], row["dataset"], row["method"]))


def _row(record: dict[str, Any], run: Path) -> dict[str, Any]:
    metric = record.get("main_metric", "")
    metrics = record.get("metrics", {})
    params = record.get("params", {})
    total = params.get("total") or 0
    return {
        "model": record.get("model", ""),
        "method": record.get("method", ""),
        "dataset": record.get("dataset", ""),
        "status": record.get("status", "unknown"),
        "metric": metric,
        "validation": metrics.get("validation", {}).get(metric),
        "test": metrics.get("test", {}).get(metric),
        "trainable": params.get("trainable"),
        "trainable_%": 100 * params["trainable"] / total if total else None,
        "train_s": record.get("train_seconds"),
        "samples_s": record.get("train_samples_per_second"),
        "peak_memory_mb": record.get("peak_memory_mb"),
        "run": str(run),
    }


FORMATS = {"validation": "{:.4f}", "test": "{:.4f}", "trainable": "{:,}", "trainable_%": "{:.2f}",
           "train_s": "{:,.1f}", "samples_s": "{:,.1f}", "peak_memory_mb": "{:,.0f}"}


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "–"
    return FORMATS.get(column, "{}").format(value)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table, numbers rounded for reading (the CSV keeps them whole)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(column, row[column]) for column in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> None:
    """Console entry point of finetune-report."""
    parser = argparse.ArgumentParser(prog="finetune-report", description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="+", type=Path, help="run, multirun or outputs directories")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.directories if not d.is_dir()]
    if missing:
        print(f"finetune-report: error: not a directory: {', '.join(missing)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    rows = collect(args.directories)
    if not rows:
        print(f"finetune-report: error: no results.json under {', '.join(map(str, args.directories))}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    table = markdown(rows)
    out = args.directories[0]
    write_text_atomic(out / "report.md", table)
    write_text_atomic(out / "report.csv", to_csv(rows))
    plots = write_plots(rows, out)
    print(table + f"\n{len(rows)} runs; wrote {out / 'report.md'}, {out / 'report.csv'}"
          + "".join(f", {path.name}" for path in plots))
