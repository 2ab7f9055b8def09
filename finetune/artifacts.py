"""Everything a run writes: results.json, TensorBoard events, the best checkpoint, the final model."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from peft import PeftModel
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries
from transformers import PreTrainedTokenizerBase, ProcessorMixin

from finetune.environment import code_version, command_line, library_versions
from finetune.errors import UserError
from finetune.files import write_json_atomic
from finetune.hardware import machine
from finetune.record import Outcome, RunRecord
from finetune.plan import Plan
from finetune.schema import Run

log = logging.getLogger(__name__)

HPARAM_TRAIN_KEYS = ("lr", "epochs", "batch_size", "grad_accum", "seed", "weight_decay", "warmup_ratio")
HPARAM_DATA_KEYS = ("max_train_samples", "max_eval_samples", "max_source_length")


class ResultsFile:
    """results.json: `running` from the start, `completed` only at the end, `failed` with the error.

    With `write=False` (processes other than the main one) the record is kept but never written.
    """

    def __init__(self, plan: Plan, write: bool = True) -> None:
        run = plan.run
        self.path, self.write = Path(run.output_dir) / "results.json", write
        self.record: dict[str, Any] = asdict(RunRecord(
            status="running", model=run.model.name, method=run.method.name, dataset=run.dataset.name,
            task=run.dataset.task, overrides=list(run.overrides), config_hash=plan.config_hash, config=asdict(run),
            versions=library_versions(), started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            provenance={"code": code_version(), "command": command_line(), "machine": machine()},
        ))  # every field, empty until the run reaches it
        if not write:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, self.record)
        except OSError as error:
            raise UserError(f"output_dir: cannot write to '{self.path.parent}' ({error.strerror})") from error

    def complete(self, outcome: Outcome) -> dict[str, Any]:
        """The one place a run's measurements enter results.json."""
        fields = asdict(outcome)
        fields["provenance"] = {**self.record["provenance"], **fields["provenance"]}
        return self._finish("completed", fields)

    def fail(self, error: BaseException) -> dict[str, Any]:
        return self._finish("failed", {"error": f"{type(error).__name__}: {error}"}, must_write=False)

    def prune(self, training: dict[str, Any], validation: dict[str, float]) -> dict[str, Any]:
        """A search's pruner stopped the run: its curves so far, and its best validation."""
        return self._finish("pruned", {"training": training, "metrics": {"validation": validation}})

    def interrupt(self, error: BaseException) -> dict[str, Any]:
        return self._finish("interrupted", {"error": str(error)}, must_write=False)

    def _finish(self, status: str, fields: dict[str, Any], must_write: bool = True) -> dict[str, Any]:
        """Record the end; a run that is already failing (a full disk) keeps its own error if this write fails."""
        self.record.update(fields, status=status, finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        if self.write:
            try:
                write_json_atomic(self.path, self.record)
            except OSError as error:
                if must_write:
                    raise
                log.warning("%s could not be updated to '%s' (%s)", self.path, status, error.strerror)
        return self.record


class Tracker:
    """TensorBoard scalars under `<run>/tensorboard`, tagged `split/metric`; a no-op with `write=False`."""

    def __init__(self, directory: Path, purge_step: int | None = None, write: bool = True) -> None:
        self.writer = SummaryWriter(log_dir=str(directory), purge_step=purge_step) if write else None

    def log(self, prefix: str, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for name, value in values.items():
            self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def hparams(self, run: Run, outcome: Outcome) -> None:
        """The run's settings and headline results for TensorBoard's HParams tab (one row a run)."""
        if self.writer is None:
            return
        settings: dict[str, Any] = {"model": run.model.name, "dataset": run.dataset.name}
        settings.update({f"method.{key}": value for key, value in asdict(run.method).items()})
        settings.update({f"train.{key}": getattr(run.train, key) for key in HPARAM_TRAIN_KEYS})
        settings.update({f"dataset.{key}": getattr(run.dataset, key) for key in HPARAM_DATA_KEYS})
        main = outcome.main_metric
        results = {f"hparam/{role}_{main}": values[main] for role, values in outcome.metrics.items()}
        results.update({"hparam/trainable_params": outcome.params["trainable"],
                        "hparam/train_seconds": outcome.train_seconds, "hparam/peak_memory_mb": outcome.peak_memory_mb})
        # TensorBoard takes numbers, text and booleans: unset keys read "null", lists as JSON
        kept = {key: value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
                for key, value in settings.items()}
        # The session's hparams and status only, not SummaryWriter.add_hparams' per-run experiment
        # record: without one, TensorBoard builds the experiment from every run's session, marks the
        # keys whose values differ (a sweep's swept keys) and shows those first.
        # Written into the run's own event files, so that TensorBoard lists each run once.
        _experiment, session_start, session_end = hparams_summaries(kept, results)
        self.writer.file_writer.add_summary(session_start)
        self.writer.file_writer.add_summary(session_end)
        for name, value in results.items():
            self.writer.add_scalar(name, value)

    def text(self, tag: str, markdown: str, step: int) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, markdown, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def save_model(model: nn.Module, processor: PreTrainedTokenizerBase | ProcessorMixin, directory: Path) -> None:
    """A Hugging Face directory: full weights, or a PEFT adapter plus the base config with the label
    names; the tokenizer (or processor) beside them."""
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    if isinstance(model, PeftModel):  # the base config carries the label names and the model class
        base = model.get_base_model()
        base.config.architectures = [type(base).__name__]
        base.config.save_pretrained(directory)
