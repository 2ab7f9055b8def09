"""`finetune-eval RUN_DIR [OVERRIDES...]`: score a trained run on other data.

The overrides are Hydra's, applied on top of the run's own (`dataset=sst2 dataset.path=DIR`,
`dataset.test_split=validation`); the model is the run's. Metrics go to RUN_DIR/eval/<dataset>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from accelerate import Accelerator
from hydra import compose, initialize_config_dir

from finetune.files import write_json_atomic
from finetune.batching import make_loader, sorted_batches, tokenize
from finetune.cli import CONF_DIR
from finetune.data import load_splits
from finetune.engine import evaluate
from finetune.errors import EXIT_BAD_INPUT, USER_ERRORS, UserError, one_line
from finetune.hardware import loader_workers
from finetune.logs import quiet_libraries
from finetune.schema import Run, build_run
from finetune.tasks import task_kind
from finetune.trained import TrainedRun, load_run


def evaluation_run(trained: TrainedRun, overrides: list[str]) -> Run:
    """The run's config with `overrides` applied: where the other data is and how to read it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        config = compose(config_name="config", overrides=[*trained.run.overrides, *overrides])
    # set, not passed as an override: a run dir's name may hold what Hydra's override grammar parses
    # (a sweep job's `lr=0.01,seed=1`)
    config.output_dir, config.overrides = str(trained.directory), []
    return build_run(config)


def evaluate_on(trained: TrainedRun, run: Run) -> dict[str, dict[str, float]]:
    """Metrics of the trained model on each evaluation split of `run.dataset`."""
    data = load_splits(run.dataset, run.train.seed)
    expected = tuple(trained.results.label_names)
    if run.dataset.task != trained.run.dataset.task or data.label_names != expected:
        raise UserError(f"dataset: '{run.dataset.name}' has task {run.dataset.task} and labels {list(data.label_names)}; "
                        f"the run was trained for {trained.run.dataset.task} with labels {list(expected)}")
    roles = [role for role in ("validation", "test") if role in data.splits]
    tokenized = tokenize({role: data.splits[role] for role in roles}, trained.task,
                         run.dataset.max_source_length or run.model.max_length, run.dataset.source_prefix)
    accelerator = Accelerator(cpu=run.hardware.device == "cpu")
    model = accelerator.prepare(trained.model)
    workers = loader_workers(run.hardware, task_kind(run.dataset.task).decodes_in_loader)
    metrics = {}
    for role in roles:
        split = tokenized.splits[role]
        batches = sorted_batches(split["length"], run.train.evaluation_batch_size)
        loader = make_loader(split.remove_columns("length"), trained.task.collate_eval, batches, workers)
        loader = accelerator.prepare(loader)
        metrics[role] = evaluate(model, loader, trained.task, accelerator).metrics
    return metrics


def main(argv: list[str] | None = None) -> None:
    """Console entry point of finetune-eval."""
    parser = argparse.ArgumentParser(prog="finetune-eval", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="the directory of a completed run")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. dataset=sst2 dataset.path=DIR")
    args = parser.parse_args(argv)
    quiet_libraries()
    try:
        trained = load_run(args.run_dir)
        run = evaluation_run(trained, args.overrides)
        metrics = evaluate_on(trained, run)
    except USER_ERRORS as error:
        print(f"finetune-eval: error: {one_line(error)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    path = args.run_dir / "eval" / f"{run.dataset.name}.json"
    path.parent.mkdir(exist_ok=True)
    write_json_atomic(path, {"dataset": run.dataset.name, "overrides": args.overrides, "metrics": metrics,
                             "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    for role, values in metrics.items():
        print(f"{role:<11} " + "  ".join(f"{k} {v:.4f}" for k, v in values.items() if not k.startswith("f1_")))
    print(f"wrote {path}")
