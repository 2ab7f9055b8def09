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

from finetune.batching import make_loader, sorted_batches
from finetune.data import load_splits
from finetune.errors import EXIT_BAD_INPUT, USER_ERRORS, UserError, one_line
from finetune.evaluation import evaluate
from finetune.files import write_json_atomic
from finetune.hardware import loader_workers
from finetune.logs import quiet_libraries
from finetune.plan import Plan, compose_plan
from finetune.tasks.encoding import tokenize
from finetune.trained import TrainedRun, load_run


def evaluation_plan(trained: TrainedRun, overrides: list[str]) -> Plan:
    """The run's config with `overrides` applied: where the other data is and how to read it."""
    return compose_plan([*trained.run.overrides, *overrides], trained.directory)


def evaluate_on(trained: TrainedRun, plan: Plan) -> dict[str, dict[str, float]]:
    """Metrics of the trained model on each evaluation split of `plan`'s data set."""
    run = plan.run
    data = load_splits(run.dataset, plan.kind, run.train.seed, carve=False)  # never score on rows carved from train
    expected = tuple(trained.results.label_names)
    if run.dataset.task != trained.run.dataset.task or data.label_names != expected:
        raise UserError(f"dataset: '{run.dataset.name}' has task {run.dataset.task} and labels {list(data.label_names)}; "
                        f"the run was trained for {trained.run.dataset.task} with labels {list(expected)}")
    roles = [role for role in ("validation", "test") if role in data.splits]
    if not roles:
        raise UserError(f"dataset: '{run.dataset.name}' has no validation or test split to score "
                        "(set dataset.validation_split or dataset.test_split)")
    tokenized = tokenize({role: data.splits[role] for role in roles}, trained.task,
                         run.dataset.max_source_length or run.model.max_length, run.dataset.source_prefix)
    accelerator = Accelerator(cpu=run.hardware.device == "cpu")
    model = accelerator.prepare(trained.model)
    workers = loader_workers(run.hardware, plan.kind.decodes_in_loader)
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
        plan = evaluation_plan(trained, args.overrides)
        metrics = evaluate_on(trained, plan)
    except USER_ERRORS as error:
        print(f"finetune-eval: error: {one_line(error)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    path = args.run_dir / "eval" / f"{plan.run.dataset.name}.json"
    path.parent.mkdir(exist_ok=True)
    write_json_atomic(path, {"dataset": plan.run.dataset.name, "overrides": args.overrides, "metrics": metrics,
                             "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    for role, values in metrics.items():
        print(f"{role:<11} " + "  ".join(f"{k} {v:.4f}" for k, v in values.items() if not k.startswith("f1_")))
    print(f"wrote {path}")
