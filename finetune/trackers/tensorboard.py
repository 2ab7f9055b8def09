"""TensorBoard event files under `<run>/tensorboard`, tagged `split/metric`, and the run's settings
and headline results for the HParams tab."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from finetune.record import Outcome
from finetune.trackers.base import Backend, RunContext, headline, provenance_items

HPARAM_TRAIN_KEYS = ("lr", "epochs", "batch_size", "grad_accum", "seed", "weight_decay", "warmup_ratio")
HPARAM_DATA_KEYS = ("max_train_samples", "max_eval_samples", "max_source_length")


class TensorBoard(Backend):
    name = "tensorboard"

    def __init__(self, context: RunContext) -> None:
        super().__init__(context)
        # purge_step drops the events the run that died wrote after its checkpoint (the checkpoint's own step is
        # logged before it is saved, and the resumed run goes on from the next)
        purge = None if context.resumed_from is None else context.resumed_from + 1
        self.writer = SummaryWriter(log_dir=str(context.run_dir / "tensorboard"), purge_step=purge)
        self._provenance("provenance/run", context.provenance)

    def _provenance(self, tag: str, items: dict[str, str]) -> None:
        if items:
            self.writer.add_text(tag, "\n".join(f"    {key}: {value}" for key, value in items.items()), 0)

    def log(self, prefix: str, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def text(self, tag: str, markdown: str, step: int) -> None:
        self.writer.add_text(tag, markdown, step)

    def finish(self, status: str, outcome: Outcome | None) -> None:
        if outcome is not None:
            self._hparams(outcome)
            self._provenance("provenance/inputs", provenance_items(outcome.provenance))

    def _hparams(self, outcome: Outcome) -> None:
        """The run's settings and headline results for TensorBoard's HParams tab (one row a run)."""
        run = self.context.run
        settings: dict[str, Any] = {"model": run.model.name, "dataset": run.dataset.name}
        settings.update({f"method.{key}": value for key, value in asdict(run.method).items()})
        settings.update({f"train.{key}": getattr(run.train, key) for key in HPARAM_TRAIN_KEYS})
        settings.update({f"dataset.{key}": getattr(run.dataset, key) for key in HPARAM_DATA_KEYS})
        results = {f"hparam/{key}": value for key, value in headline(outcome).items()}
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

    def close(self) -> None:
        self.writer.close()
