"""A finished run, loaded back from its directory: the validated Run, the trained model, its
tokenizer and task, ready to predict or evaluate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from finetune.errors import UserError
from finetune.loading import load_trained
from finetune.methods import METHODS, build_method
from finetune.record import RunRecord
from finetune.schema import DatasetSpec, GenerationSpec, HardwareSpec, ModelSpec, Run, TrainSpec
from finetune.tasks import Task, build_task


@dataclass(frozen=True)
class TrainedRun:
    """What `finetune` left in a run dir, loaded."""

    directory: Path
    results: RunRecord
    run: Run
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    task: Task  # calibrated with the run's validation metrics (multilabel threshold)


def run_from_record(config: dict[str, Any]) -> Run:
    """The Run that results.json's `config` was written from."""
    method = dict(config["method"])
    method.setdefault("kind", method["name"])  # runs from before methods had kinds were named by theirs
    if method["kind"] not in METHODS:
        raise UserError(f"results.json: method kind '{method['kind']}' is not one this finetune knows")
    return Run(
        model=ModelSpec(**config["model"]), dataset=DatasetSpec(**config["dataset"]),
        method=METHODS[method["kind"]].spec_class(**method), hardware=HardwareSpec(**config["hardware"]),
        train=TrainSpec(**config["train"]), generation=GenerationSpec(**config.get("generation", {})),
        output_dir=config["output_dir"], overrides=config["overrides"],
    )


def load_run(directory: Path) -> TrainedRun:
    """Load a completed run; a missing or unfinished run dir is a one-line error."""
    results_path = directory / "results.json"
    if not results_path.is_file():
        raise UserError(f"{directory}: no results.json; is this the directory of a finetune run?")
    results = RunRecord.read(results_path)
    if results.status == "failed":
        raise UserError(f"{directory}: the run failed ({results.error or 'no reason recorded'}), so it has no "
                        "trained model; fix what the error names, then run its command again")
    if results.status != "completed":
        raise UserError(f"{directory}: the run is '{results.status}', not completed; "
                        "run the same command again to finish it")
    run = run_from_record(results.config)
    if build_method(run.method).standalone:
        raise UserError(f"{directory}: {run.method.name} is a scikit-learn baseline; only transformer runs load here")
    model_dir = directory / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    task = build_task(run, tokenizer, tuple(results.label_names))
    model = build_method(run.method).loaded(load_trained(model_dir, task.model_class))
    if "validation" in results.metrics:
        task = task.calibrated(results.metrics["validation"])
    return TrainedRun(directory, results, run, model, tokenizer, task)
