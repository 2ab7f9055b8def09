"""Weights & Biases: one W&B run per finetune run (continued, same id, when the run resumes), grouped
by sweep. Offline unless logger.mode or $WANDB_MODE says otherwise or the user is logged in; never
prompts; offline runs stay in `<run>/wandb` until `wandb sync` uploads them."""

from __future__ import annotations

import netrc
import os
import secrets
from dataclasses import asdict
from typing import Any
from urllib.parse import urlparse

from finetune.errors import UserError
from finetune.record import Outcome
from finetune.trackers.base import Backend, RunContext, headline, provenance_items

STEP = "step"  # W&B's own step must only grow; a resumed run logs from its checkpoint's step again
EXIT_CODES = {"completed": 0, "pruned": 0}
MAX_TAG = 64  # W&B refuses a longer tag, and with it the whole run
# set before wandb starts its service, unless the user set it: no crash reports sent to W&B's Sentry
ENVIRONMENT_DEFAULTS = {"WANDB_ERROR_REPORTING": "false"}


def wandb_mode(requested: str | None) -> str | None:
    """logger.mode, else $WANDB_MODE; where the user is logged in, None lets W&B's own settings decide
    (`wandb offline` included); otherwise offline. Online without a login is refused: W&B would prompt."""
    wanted = requested or os.environ.get("WANDB_MODE") or None
    if os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1"):
        wanted = "disabled"
    if logged_in():
        return wanted
    if wanted == "online":
        raise UserError("logger.mode: online needs a W&B login (`wandb login`, or WANDB_API_KEY); without one, "
                        "W&B would stop to ask for it. Log in, or leave the mode unset to run offline")
    return wanted or "offline"


def logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def native(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1e-3}} -> {'train.lr': 0.001}: numbers stay numbers, so W&B charts them."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(native(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class WandbRuns(Backend):
    name = "wandb"

    def __init__(self, context: RunContext) -> None:
        super().__init__(context)
        for variable, value in ENVIRONMENT_DEFAULTS.items():
            os.environ.setdefault(variable, value)
        mode = wandb_mode(context.spec.mode)
        import wandb

        saved = context.saved_id(self.name) or {}
        run_id = saved.get("id") or secrets.token_hex(4)  # W&B ids: lowercase letters and digits
        context.save_id(self.name, {"id": run_id})  # before W&B starts: a kill during init resumes this id
        self.status: str | None = None
        settings = wandb.Settings(console="off", silent=True, save_code=False, disable_git=True, x_disable_stats=True,
                                  x_disable_meta=True, init_timeout=60)
        config = {key: value for key, value in native(asdict(context.run)).items() if key not in ("output_dir", "overrides")}
        self.run = wandb.init(
            project=context.spec.project, group=context.spec.experiment or context.sweep, name=context.name,
            id=run_id, resume="allow", dir=str(context.run_dir), mode=mode, settings=settings, reinit="create_new",
            config={**config, **context.provenance}, allow_val_change=True,  # a resumed run may be on another machine
            tags=[f"swept:{key}"[:MAX_TAG] for key in context.swept] or None,
        )
        self.run.define_metric(STEP)
        self.run.define_metric("*", step_metric=STEP)
        if context.swept:
            self.run.config.update({"swept_keys": list(context.swept)}, allow_val_change=True)

    def log(self, prefix: str, values: dict[str, float], step: int) -> None:
        self.run.log({STEP: step, **{f"{prefix}/{name}": value for name, value in values.items()}})

    def finish(self, status: str, outcome: Outcome | None) -> None:
        self.status = status
        self.run.summary["status"] = status
        if outcome:
            self.run.config.update(provenance_items(outcome.provenance), allow_val_change=True)
            self.run.summary.update({f"summary/{key}": value for key, value in headline(outcome).items()})
        self.run.summary.update({f"artifacts/{key}": path for key, path in self.context.artifacts().items()})
        self.run.finish(exit_code=EXIT_CODES.get(status, 1))
        self.status = "finished"

    def close(self) -> None:
        if self.status != "finished":  # a call failed first: W&B closes its files, with the status known by then
            self.run.finish(exit_code=EXIT_CODES.get(self.status or "failed", 1))
