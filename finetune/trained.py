"""A finished run, loaded back from its directory: the validated Run, the trained model, its
tokenizer and task, ready to predict or evaluate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from finetune.errors import UserError
from finetune.loading import load_trained
from finetune.plan import Plan, plan_from_record
from finetune.record import RunRecord
from finetune.schema import Run
from finetune.tasks import Task


@dataclass(frozen=True)
class TrainedRun:
    """What `finetune` left in a run dir, loaded."""

    directory: Path
    results: RunRecord
    plan: Plan
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    task: Task  # calibrated with the run's validation metrics (multilabel threshold)

    @property
    def run(self) -> Run:
        return self.plan.run


def load_run(directory: Path) -> TrainedRun:
    """Load a completed run; a missing or unfinished run dir is a one-line error."""
    results_path = directory / "results.json"
    if not results_path.is_file():
        raise UserError(f"{directory}: no results.json; is this the directory of a finetune run?")
    try:
        results = RunRecord.read(results_path)
    except (OSError, ValueError, TypeError) as error:
        raise UserError(f"{results_path}: cannot be read ({error})") from error
    if results.status == "failed":
        raise UserError(f"{directory}: the run failed ({results.error or 'no reason recorded'}), so it has no "
                        "trained model; fix what the error names, then run its command again")
    if results.status != "completed":
        raise UserError(f"{directory}: the run is '{results.status}', not completed; "
                        "run the same command again to finish it")
    plan = plan_from_record(results.config)
    if plan.method.standalone:
        raise UserError(f"{directory}: {plan.run.method.name} is a scikit-learn baseline; only transformer runs load here")
    model_dir = directory / "model"
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{directory}: results.json says completed, but {model_dir} holds no model; "
                        "run its command with restart=true to train it again")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    task = plan.kind.build(plan.run, tokenizer, tuple(results.label_names))
    model = plan.method.loaded(load_trained(model_dir, task.model_class))
    if "validation" in results.metrics:
        task = task.calibrated(results.metrics["validation"])
    return TrainedRun(directory, results, plan, model, tokenizer, task)
