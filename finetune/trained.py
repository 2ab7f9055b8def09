"""A finished run, loaded back from its directory: the validated Run, the trained model, its
tokenizer and task, ready to predict or evaluate."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from finetune.errors import UserError
from finetune.loading import load_trained
from finetune.schema import (
    METHOD_SPECS, DatasetSpec, GenerationSpec, HardwareSpec, ModelSpec, Run, SvmEmbeddingsSpec, SvmTfidfSpec, TrainSpec,
)
from finetune.tasks import Task, build_task


@dataclass(frozen=True)
class TrainedRun:
    """What `finetune` left in a run dir, loaded."""

    directory: Path
    results: dict[str, Any]
    run: Run
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    task: Task  # calibrated with the run's validation metrics (multilabel threshold)


def run_from_record(config: dict[str, Any]) -> Run:
    """The Run that results.json's `config` was written from."""
    method = config["method"]
    return Run(
        model=ModelSpec(**config["model"]), dataset=DatasetSpec(**config["dataset"]),
        method=METHOD_SPECS[method["name"]](**method), hardware=HardwareSpec(**config["hardware"]),
        train=TrainSpec(**config["train"]), generation=GenerationSpec(**config.get("generation", {})),
        output_dir=config["output_dir"], overrides=config["overrides"],
    )


def load_run(directory: Path) -> TrainedRun:
    """Load a completed run; a missing or unfinished run dir is a one-line error."""
    results_path = directory / "results.json"
    if not results_path.is_file():
        raise UserError(f"{directory}: no results.json; is this the directory of a finetune run?")
    results = json.loads(results_path.read_text())
    if results.get("status") != "completed":
        raise UserError(f"{directory}: the run is '{results.get('status')}', not completed; "
                        "run the same command again to finish it")
    run = run_from_record(results["config"])
    if isinstance(run.method, (SvmTfidfSpec, SvmEmbeddingsSpec)):
        raise UserError(f"{directory}: {run.method.name} is a scikit-learn baseline; only transformer runs load here")
    model_dir = directory / "model"
    model = load_trained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    task = build_task(run, tokenizer, tuple(results["label_names"]))
    if "validation" in results["metrics"]:
        task = task.calibrated(results["metrics"]["validation"])
    return TrainedRun(directory, results, run, model, tokenizer, task)
