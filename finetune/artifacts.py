"""What a run writes besides its trackers' logs (finetune.trackers): results.json and the final model."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from peft import PeftModel
from torch import nn
from transformers import PreTrainedTokenizerBase, ProcessorMixin

from finetune.environment import code_version, command_line, library_versions
from finetune.errors import UserError
from finetune.files import write_json_atomic
from finetune.hardware import machine
from finetune.record import Outcome, RunRecord
from finetune.plan import Plan

log = logging.getLogger(__name__)



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


def save_model(model: nn.Module, processor: PreTrainedTokenizerBase | ProcessorMixin, directory: Path) -> None:
    """A Hugging Face directory: full weights, or a PEFT adapter plus the base config with the label
    names; the tokenizer (or processor) beside them."""
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    if isinstance(model, PeftModel):  # the base config carries the label names and the model class
        base = model.get_base_model()
        base.config.architectures = [type(base).__name__]
        base.config.save_pretrained(directory)
