"""MLflow: one MLflow run per finetune run (continued when the run resumes), in an experiment named
after the sweep; the store is a local sqlite file under outputs/ unless logger.tracking_uri or
$MLFLOW_TRACKING_URI names another, and MLflow's telemetry is off, so nothing leaves the machine unasked."""

from __future__ import annotations

import fcntl
import os
import re
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

from finetune.record import Outcome
from finetune.trackers.base import Backend, RunContext, headline, provenance_items

STATUSES = {"completed": "FINISHED", "pruned": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
# set before mlflow is imported, unless the user set them: no usage data sent to MLflow's telemetry
# service; a server that is down costs seconds, not MLflow's default of minutes of retries
ENVIRONMENT_DEFAULTS = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "20", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
DEFAULT_EXPERIMENT = "finetune"
MAX_TAG_VALUE = 5000  # MLflow's limit is 8000 characters
NOT_IN_NAMES = re.compile(r"[^\w./ :-]")  # MLflow's metric, param and tag names: letters, digits and _-./ :


def local_store(run_dir: Path) -> Path:
    """outputs/ (or outputs/smoke/ for tiny-model runs) above the run dir, else ./outputs: where the default store lives."""
    for parent in run_dir.resolve().parents:
        if parent.name == "outputs" or (parent.name == "smoke" and parent.parent.name == "outputs"):
            return parent
    return Path("outputs").resolve()


def tracking_uri(context: RunContext) -> tuple[str, bool]:
    """The store's URI, and whether it is finetune's own default (a sqlite file under outputs/)."""
    chosen = context.spec.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if chosen:
        return chosen, False
    store = local_store(context.run_dir)
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}", True


def without_password(uri: str) -> str:
    parts = urlsplit(uri)
    if not parts.password:
        return uri
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.hostname}{f':{parts.port}' if parts.port else ''}"))


@contextmanager
def sqlite_lock(uri: str) -> Iterator[None]:
    """Several processes that first open one sqlite store would race to build its tables: one at a time."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    with open(f"{uri.removeprefix('sqlite:///')}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class MlflowRuns(Backend):
    name = "mlflow"

    def __init__(self, context: RunContext) -> None:
        super().__init__(context)
        for variable, value in ENVIRONMENT_DEFAULTS.items():
            os.environ.setdefault(variable, value)
        from mlflow.tracking import MlflowClient

        uri, own = tracking_uri(context)
        self.finished = False
        with sqlite_lock(uri) if own else nullcontext():
            self.client = MlflowClient(tracking_uri=uri)
            saved = context.saved_id(self.name)
            if saved and saved.get("tracking_uri") == without_password(uri) and self._exists(saved["run_id"]):
                self.run_id = saved["run_id"]
                self.client.update_run(self.run_id, status="RUNNING")
            else:
                self.run_id = self._create(uri, own)
                context.save_id(self.name, {"run_id": self.run_id, "tracking_uri": without_password(uri)})
            self._log_params()

    def _create(self, uri: str, own: bool) -> str:
        context = self.context
        experiment = context.spec.experiment or context.sweep or DEFAULT_EXPERIMENT
        tags = {"finetune.run_dir": str(context.run_dir), "finetune.sweep": context.sweep or ""}
        tags.update({f"swept.{key}": context.params.get(key, "") for key in context.swept})
        tags.update({key: value[:MAX_TAG_VALUE] for key, value in context.provenance.items()})
        tags = {_name(key): value for key, value in tags.items()}
        return self.client.create_run(self._experiment_id(experiment, own), run_name=context.name, tags=tags).info.run_id

    def _exists(self, run_id: str) -> bool:
        """Whether the saved run is still in the store; any other failure is raised (never a second run)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
            return True
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise

    def _experiment_id(self, name: str, own: bool) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = (local_store(self.context.run_dir) / "mlartifacts").as_uri() if own else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # another job of the sweep created it first
            return self.client.get_experiment_by_name(name).experiment_id

    def _log_params(self) -> None:
        """The config's parameters the run does not hold yet (all of a new run; a resumed run's that
        a kill kept from being logged); MLflow refuses to change a logged one."""
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        logged = self.client.get_run(self.run_id).data.params
        params = [Param(_name(key), value[:MAX_PARAM_VAL_LENGTH]) for key, value in self.context.params.items()
                  if _name(key) not in logged]
        for start in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[start:start + MAX_PARAMS_TAGS_PER_BATCH])

    def log(self, prefix: str, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(_name(f"{prefix}/{name}"), float(value), now, step) for name, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, status: str, outcome: Outcome | None) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        tags: dict[str, Any] = {"finetune.status": status}
        tags.update({f"finetune.artifacts.{key}": path for key, path in self.context.artifacts().items()})
        tags.update({key: value[:MAX_TAG_VALUE] for key, value in provenance_items(outcome.provenance).items()}
                    if outcome else {})
        metrics = [Metric(f"summary/{key}", value, now, 0) for key, value in headline(outcome).items()] if outcome else []
        self.client.log_batch(self.run_id, metrics=metrics, tags=[RunTag(_name(key), value) for key, value in tags.items()])
        self.finished = True
        self.client.set_terminated(self.run_id, status=STATUSES.get(status, "FAILED"))

    def close(self) -> None:
        if not self.finished:  # a call failed before the end: not left RUNNING, where the store can be reached
            self.client.set_terminated(self.run_id, status="FAILED")


def _name(key: str) -> str:
    return NOT_IN_NAMES.sub("_", key)
