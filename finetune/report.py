"""`finetune-report DIR...`: one table of every results.json under the given directories.

A row is a configuration: runs that differ only in `train.seed` are its replicates (mean ± std over
seeds, and n), and every config key that differs among the runs gets a column. Reads only files:
report.md, report.csv (configurations), runs.csv (one row a run) and PNG plots (finetune.plots)
are written in the first directory, and the markdown table is printed. Failed and running runs
are counted, not dropped.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import Any

from finetune.files import write_text_atomic
from finetune.errors import EXIT_BAD_INPUT
from finetune.plots import write_plots
from finetune.record import RunRecord
from finetune.studies import Configuration, best_per_method, configurations, flatten, swept_keys, versus_best

COLUMNS = (
    "model", "method", "dataset", "status", "metric", "validation", "test", "trainable", "trainable_%",
    "train_s", "samples_s", "peak_memory_mb", "run",
)  # runs.csv; report.md and report.csv add the swept keys, n and the comparison with the best


def collect(directories: list[Path]) -> list[dict[str, Any]]:
    """One row per results.json found under `directories`, sorted by model, dataset and method."""
    rows = []
    for directory in directories:
        for path in sorted(directory.rglob("results.json")):
            rows.append(_row(RunRecord.read(path), path.parent.relative_to(directory)))
    return sorted(rows, key=lambda row: (row["model"], row["dataset"], row["method"]))


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
        "run": str(run),
        "config": flatten(record.config),
        "seed": record.config.get("train", {}).get("seed"),
        "train_loss": record.training.get("train_loss", []),
        "validation_curve": record.training.get("validation_curve", []),
    }


FORMATS = {"validation": "{:.4f}", "test": "{:.4f}", "trainable": "{:,}", "trainable_%": "{:.2f}",
           "train_s": "{:,.1f}", "samples_s": "{:,.1f}", "peak_memory_mb": "{:,.0f}"}


def table(configs: list[Configuration], keys: list[str]) -> list[dict[str, Any]]:
    """One row per configuration: its swept keys' values, n, mean ± std and the paired difference."""
    differences = versus_best(configs)
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
            "test_vs_best": differences.get(index),
            "trainable": None if trainable is None else round(trainable), "trainable_%": config.mean("trainable_%"),
            "train_s": config.mean("train_s"), "samples_s": config.mean("samples_s"),
            "peak_memory_mb": config.mean("peak_memory_mb"),
            "runs": " ".join(run["run"] for run in config.runs),
        })
    return rows


def _cell(row: dict[str, Any], column: str) -> str:
    value = row[column]
    if value is None:
        return "–"
    if column in ("validation", "test") and row[f"{column}_std"] is not None:
        return f"{value:.4f} ± {row[f'{column}_std']:.4f}"
    if column == "test_vs_best":
        return f"{value.mean:+.4f} [{value.low:+.4f}, {value.high:+.4f}]"
    return FORMATS.get(column, "{}").format(value)


def markdown(rows: list[dict[str, Any]], keys: list[str]) -> str:
    """The configurations as a markdown table, numbers rounded for reading (the CSV keeps them whole)."""
    columns = ["model", "method", "dataset", *keys, "status", "n", "metric", "validation", "test", "test_vs_best",
               "trainable", "trainable_%", "train_s", "samples_s", "peak_memory_mb", "runs"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row, column) for column in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        difference = row.get("test_vs_best")
        writer.writerow({**row, **({"test_vs_best": difference.mean, "test_vs_best_low": difference.low,
                                    "test_vs_best_high": difference.high} if difference else {"test_vs_best": None})})
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> None:
    """Console entry point of finetune-report."""
    parser = argparse.ArgumentParser(prog="finetune-report", description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="+", type=Path, help="run, multirun or outputs directories")
    parser.add_argument("--best", action="store_true",
                        help="one row per model, method and data set: its configuration with the best validation mean")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.directories if not d.is_dir()]
    if missing:
        print(f"finetune-report: error: not a directory: {', '.join(missing)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    rows = collect(args.directories)
    if not rows:
        print(f"finetune-report: error: no results.json under {', '.join(map(str, args.directories))}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    keys = swept_keys(rows)
    configs = configurations(rows, keys)
    summary, counted = table(configs, keys), f"{len(rows)} runs in {len(configs)} configurations"
    if args.best:
        chosen = best_per_method(configs)
        summary, configs = [summary[index] for index in chosen], [configs[index] for index in chosen]
    text = markdown(summary, keys)
    out = args.directories[0]
    write_text_atomic(out / "report.md", text)
    summary_columns = [column for column in summary[0] if column != "runs"] + ["test_vs_best_low", "test_vs_best_high", "runs"]
    write_text_atomic(out / "report.csv", to_csv(summary, summary_columns))
    write_text_atomic(out / "runs.csv", to_csv(rows, [*COLUMNS, *(f"config.{key}" for key in keys), "seed"]))
    plots = write_plots(configs, out)
    swept = f"; swept: {', '.join(keys)}" if keys else ""
    best = "; each method's validation-best shown" if args.best else ""
    print(text + f"\n{counted}{swept}{best}; wrote {out / 'report.md'}, "
          f"{out / 'report.csv'}, {out / 'runs.csv'}" + "".join(f", {path.name}" for path in plots))
