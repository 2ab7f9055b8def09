"""MLflow: one MLflow run per finetune run (continued when the run resumes), in an experiment named
after the sweep; the store is a local sqlite file under outputs/ unless logger.tracking_uri or
$MLFLOW_TRACKING_URI names another, so nothing leaves the machine unasked."""

from __future__ import annotations

import os
import time
from pathlib import Path

from finetune.record import Outcome
from finetune.trackers.base import Backend, RunContext, headline, provenance_items

STATUSES = {"completed": "FINISHED", "pruned": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
# a server that is down costs seconds, not MLflow's default of minutes of retries; the user's settings win
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
DEFAULT_EXPERIMENT = "finetune"
MAX_TAG_VALUE = 5000  # MLflow's limit is 8000 characters


def local_store(run_dir: Path) -> Path:
    """outputs/ (or outputs/smoke/ for tiny-model runs) above the run dir, else ./outputs: where the default store lives."""
    for parent in run_dir.resolve().parents:
        if parent.name == "outputs" or (parent.name == "smoke" and parent.parent.name == "outputs"):
            return parent
    return Path("outputs").resolve()


def tracking_uri(context: RunContext) -> str:
    if context.spec.tracking_uri:
        return context.spec.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    store = local_store(context.run_dir)
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


class MlflowRuns(Backend):
    name = "mlflow"

    def __init__(self, context: RunContext) -> None:
        super().__init__(context)
        from mlflow.tracking import MlflowClient

        for variable, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(variable, value)
        uri = tracking_uri(context)
        self.client = MlflowClient(tracking_uri=uri)
        saved = context.saved_id(self.name)
        if saved and saved.get("tracking_uri") == uri and self._exists(saved["run_id"]):
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        experiment = context.spec.experiment or context.sweep or DEFAULT_EXPERIMENT
        tags = {"finetune.run_dir": str(context.run_dir), "finetune.sweep": context.sweep or ""}
        tags.update({f"swept.{key}": context.params.get(key, "") for key in context.swept})
        tags.update({key: value[:MAX_TAG_VALUE] for key, value in context.provenance.items()})
        run = self.client.create_run(self._experiment_id(experiment, uri), run_name=context.name, tags=tags)
        self.run_id = run.info.run_id
        context.save_id(self.name, {"run_id": self.run_id, "tracking_uri": uri})
        self._log_params()

    def _exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
            return True
        except MlflowException:
            return False

    def _experiment_id(self, name: str, uri: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if uri.startswith("sqlite:///") and not self.context.spec.tracking_uri:  # our own store: artifacts beside it
            location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # another job of the sweep created it first
            return self.client.get_experiment_by_name(name).experiment_id

    def _log_params(self) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        params = [Param(key, value[:MAX_PARAM_VAL_LENGTH]) for key, value in self.context.params.items()]
        for start in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[start:start + MAX_PARAMS_TAGS_PER_BATCH])

    def log(self, prefix: str, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"{prefix}/{name}", float(value), now, step) for name, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, status: str, outcome: Outcome | None) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        tags = [RunTag("finetune.status", status)]
        if outcome:
            tags += [RunTag(key, value[:MAX_TAG_VALUE]) for key, value in provenance_items(outcome.provenance).items()]
        tags += [RunTag(f"finetune.artifacts.{key}", path) for key, path in self.context.artifacts().items()]
        metrics = [Metric(f"summary/{key}", value, now, 0) for key, value in headline(outcome).items()] if outcome else []
        self.client.log_batch(self.run_id, metrics=metrics, tags=tags)
        self.client.set_terminated(self.run_id, status=STATUSES.get(status, "FAILED"))
