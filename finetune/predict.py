"""`finetune-predict RUN_DIR "text" ... | --file FILE [--output OUT.jsonl]`: apply a trained run.

Classification gives the label and every label's probability, multilabel the labels above the
run's threshold, summarization the generated summary. Texts are batched by length. An image run
takes image paths in place of texts.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import torch

from finetune.batching import input_lengths, sorted_batches
from finetune.errors import EXIT_BAD_INPUT, UserError
from finetune.logs import quiet_libraries
from finetune.progress import progress
from finetune.trained import TrainedRun, load_run


def predict(trained: TrainedRun, texts: list[str], batch_size: int = 32, show_progress: bool = False) -> list[dict[str, Any]]:
    """One output dict an input (a text, or an image's path), in the order of `texts`."""
    run, task, kind = trained.run, trained.task, trained.plan.kind
    placeholder = kind.placeholder_target(tuple(trained.results.label_names))
    encoded = task.encode([run.dataset.source_prefix + text for text in texts], [placeholder] * len(texts),
                          run.dataset.max_source_length or run.model.max_length)
    lengths = input_lengths(encoded)
    features = [{key: values[i] for key, values in encoded.items() if key not in ("truncated", "length")}
                for i in range(len(texts))]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = trained.model.to(device).eval()
    outputs: list[dict[str, Any]] = [{} for _ in texts]
    batches = sorted_batches(lengths, batch_size)
    with torch.no_grad():
        for rows in progress(batches, desc="predict", unit="batches", disable=not show_progress):
            batch = {key: value.to(device) for key, value in task.collate_eval([features[row] for row in rows]).items()}
            predictions = task.evaluate_batch(model, batch).predictions.cpu().numpy()
            for row, readable in zip(rows, task.readable(predictions)):
                outputs[row] = {kind.input_name: texts[row], **readable}
    return outputs


def read_texts(path: Path, columns: list[str]) -> list[str]:
    """Texts from a .txt (one a line), or the first of `columns` that a .jsonl or .csv file has."""
    if not path.is_file():
        raise UserError(f"--file: '{path}' is not a file")
    if path.suffix == ".txt":
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        if not lines:
            raise UserError(f"--file: '{path}' has no lines")
        return lines
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    elif path.suffix == ".csv":
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    else:
        raise UserError(f"--file: '{path}' must be .txt, .jsonl or .csv")
    if not rows:
        raise UserError(f"--file: '{path}' has no rows")
    column = next((name for name in columns if rows and name in rows[0]), None)
    if column is None:
        found = ", ".join(rows[0]) if rows else "no rows"
        raise UserError(f"--file: '{path}' has no column {' or '.join(repr(name) for name in columns)} "
                        f"(columns: {found}); name one with --text-column")
    return [str(row[column]) for row in rows]


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def main(argv: list[str] | None = None) -> None:
    """Console entry point of finetune-predict."""
    parser = argparse.ArgumentParser(prog="finetune-predict", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="the directory of a completed run")
    parser.add_argument("texts", nargs="*", help="texts to predict (image runs: image paths)")
    parser.add_argument("--file", type=Path, help="more texts or image paths: .txt (one a line), .jsonl or .csv")
    parser.add_argument("--text-column", help="the --file column (.jsonl, .csv) holding the texts; "
                                              "default: the run's dataset.text_column, else 'text'")
    parser.add_argument("--output", type=Path, help="write jsonl here instead of printing it")
    parser.add_argument("--batch-size", type=_positive, default=32)
    args = parser.parse_intermixed_args(argv)  # options may come before, between or after the texts
    quiet_libraries()
    try:
        trained = load_run(args.run_dir)
        columns = [args.text_column] if args.text_column else list(dict.fromkeys([trained.run.dataset.text_column, "text"]))
        texts = list(args.texts) + (read_texts(args.file, columns) if args.file else [])
        if not texts:
            raise UserError("no texts: give them as arguments or with --file")
        outputs = predict(trained, texts, args.batch_size, show_progress=args.file is not None)
    except UserError as error:
        print(f"finetune-predict: error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    lines = "".join(json.dumps(output, ensure_ascii=False) + "\n" for output in outputs)
    if args.output:
        try:
            args.output.write_text(lines)
        except OSError as error:
            print(f"finetune-predict: error: --output: cannot write '{args.output}' ({error.strerror})", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        print(f"{len(outputs)} predictions written to {args.output}")
    else:
        sys.stdout.write(lines)
