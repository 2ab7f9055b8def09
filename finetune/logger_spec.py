"""The logger group's settings (conf/logger): which trackers a run feeds, and theirs. Each option of
the group switches one tracker on, so that options combine: `logger=[csv,mlflow]`."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import List, Optional
from urllib.parse import urlsplit

from finetune.errors import one_of, require

LOGGERS = ("tensorboard", "csv", "mlflow", "wandb")  # finetune.trackers: one module each
OPTIONAL_LOGGERS = ("mlflow", "wandb")  # each its own pip extra, named after its library
WANDB_MODES = ("online", "offline", "disabled")


@dataclass(frozen=True)
class LoggerSpec:
    """Where a run's metrics go besides results.json; not part of what the run computes."""

    tensorboard: bool = True
    csv: bool = False
    mlflow: bool = False
    wandb: bool = False
    # MLflow's store: else $MLFLOW_TRACKING_URI, else a sqlite file under outputs/ (nothing leaves the machine)
    tracking_uri: Optional[str] = None
    experiment: Optional[str] = None  # MLflow's experiment and W&B's group: else the sweep's name, else "finetune"
    project: str = "finetune"  # the W&B project
    mode: Optional[str] = None  # W&B's mode: else $WANDB_MODE or W&B's settings where logged in, else offline

    def __post_init__(self) -> None:
        require(bool(self.backends), "logger", f"switches every tracker off; keep at least one of {', '.join(LOGGERS)}")
        for backend in self.backends:
            require(backend not in OPTIONAL_LOGGERS or importlib.util.find_spec(backend) is not None, f"logger.{backend}",
                    f"{backend} is not installed; install its extra: pip install -c constraints.txt -e \".[{backend}]\"")
        if self.mode is not None:
            one_of(self.mode, WANDB_MODES, "logger.mode")
        require(not (self.tracking_uri and urlsplit(self.tracking_uri).password), "logger.tracking_uri",
                "holds a password, which results.json and the trackers would record; set MLFLOW_TRACKING_URI "
                "(or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD) instead")

    @property
    def backends(self) -> List[str]:
        """The trackers switched on, in LOGGERS' order."""
        return [name for name in LOGGERS if getattr(self, name)]
