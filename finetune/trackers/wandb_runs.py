"""Weights & Biases: one W&B run per finetune run (continued, same id, when the run resumes), grouped
by sweep. Offline unless logger.mode or $WANDB_MODE says otherwise or the user is logged in; never
prompts; offline runs stay in `<run>/wandb` until `wandb sync` uploads them."""

from __future__ import annotations

import netrc
import os
import secrets
from urllib.parse import urlparse

from finetune.record import Outcome
from finetune.trackers.base import Backend, RunContext, headline, provenance_items

STEP = "step"  # W&B's own step must only grow; a resumed run logs from its checkpoint's step again
EXIT_CODES = {"completed": 0, "pruned": 0}


def wandb_mode(requested: str | None) -> str:
    """logger.mode, else $WANDB_MODE, else online only with an API key ($WANDB_API_KEY or ~/.netrc)."""
    if requested:
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if logged_in() else "offline"


def logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbRuns(Backend):
    name = "wandb"

    def __init__(self, context: RunContext) -> None:
        super().__init__(context)
        import wandb

        saved = context.saved_id(self.name) or {}
        run_id = saved.get("id") or secrets.token_hex(4)  # W&B ids: lowercase letters and digits
        settings = wandb.Settings(console="off", silent=True, save_code=False, disable_git=True, x_disable_stats=True,
                                  init_timeout=60)
        self.run = wandb.init(
            project=context.spec.project, group=context.spec.experiment or context.sweep, name=context.name,
            id=run_id, resume="allow", dir=str(context.run_dir), mode=wandb_mode(context.spec.mode),
            config={**context.params, **context.provenance}, settings=settings, reinit="create_new",
            allow_val_change=True,  # a resumed run on another machine records that machine
            tags=[f"swept:{key}" for key in context.swept] or None,
        )
        self.finished = False
        context.save_id(self.name, {"id": run_id})
        self.run.define_metric(STEP)
        self.run.define_metric("*", step_metric=STEP)
        if context.swept:
            self.run.config.update({"swept_keys": list(context.swept)}, allow_val_change=True)

    def log(self, prefix: str, values: dict[str, float], step: int) -> None:
        self.run.log({STEP: step, **{f"{prefix}/{name}": value for name, value in values.items()}})

    def finish(self, status: str, outcome: Outcome | None) -> None:
        self.run.summary["status"] = status
        if outcome:
            self.run.config.update(provenance_items(outcome.provenance), allow_val_change=True)
        self.run.summary.update({f"summary/{key}": value for key, value in headline(outcome).items()} if outcome else {})
        self.run.summary.update({f"artifacts/{key}": path for key, path in self.context.artifacts().items()})
        self.run.finish(exit_code=EXIT_CODES.get(status, 1))
        self.finished = True

    def close(self) -> None:
        if not self.finished:  # ended without finish (a tracker call failed): let W&B close its files
            self.run.finish(exit_code=1)
