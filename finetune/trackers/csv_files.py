"""CSV files under `<run>/csv`, for a spreadsheet or the csv module: `params.csv` (the flattened
config, swept keys marked), `metrics.csv` (one row a value: step, name, value, time) and
`summary.csv` (how the run ended, its headline numbers and its files)."""

from __future__ import annotations

import csv
import time
from io import StringIO

from finetune.files import write_text_atomic
from finetune.record import Outcome
from finetune.trackers.base import Backend, RunContext, headline, provenance_items

METRIC_COLUMNS = ("step", "name", "value", "time")


class CsvFiles(Backend):
    name = "csv"

    def __init__(self, context: RunContext) -> None:
        super().__init__(context)
        self.directory = context.run_dir / "csv"
        self.directory.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.directory / "params.csv", _table(
            ("key", "value", "swept"), [(key, value, key in context.swept)
                                        for key, value in {**context.params, **context.provenance}.items()]))
        self.metrics = self.directory / "metrics.csv"
        if context.resumed_from is not None:
            self._drop_after(context.resumed_from)
        new = not self.metrics.exists()
        self.handle = self.metrics.open("a", newline="")
        self.writer = csv.writer(self.handle)
        if new:
            self.writer.writerow(METRIC_COLUMNS)

    def _drop_after(self, step: int) -> None:
        """What the run that died logged after its checkpoint (and a line a kill cut short): the resumed
        run logs it again."""
        try:
            with self.metrics.open(newline="") as handle:
                rows = list(csv.reader(handle))
        except FileNotFoundError:
            return
        kept = [row for row in rows[1:] if len(row) == len(METRIC_COLUMNS) and row[0].isdigit() and int(row[0]) <= step]
        write_text_atomic(self.metrics, _table(METRIC_COLUMNS, kept))

    def log(self, prefix: str, values: dict[str, float], step: int) -> None:
        now = round(time.time(), 3)
        self.writer.writerows((step, f"{prefix}/{name}", value, now) for name, value in values.items())
        self.handle.flush()

    def finish(self, status: str, outcome: Outcome | None) -> None:
        rows = [("status", status), *(headline(outcome).items() if outcome else ())]
        rows += list(provenance_items(outcome.provenance).items()) if outcome else []
        rows += [(f"artifacts.{key}", path) for key, path in self.context.artifacts().items()]
        write_text_atomic(self.directory / "summary.csv", _table(("key", "value"), rows))

    def close(self) -> None:
        self.handle.close()


def _table(header: tuple[str, ...], rows: list) -> str:
    text = StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue()
