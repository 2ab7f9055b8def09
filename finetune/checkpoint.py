"""Resumable training checkpoints: weights, optimizer, scheduler, RNG states and loop position.

Each checkpoint is a directory `checkpoints/step-NNNNNNNN`, written under a temporary name and
renamed when complete, so a run killed mid-write leaves no checkpoint that looks whole.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from finetune.errors import UserError

log = logging.getLogger(__name__)

PREFIX = "step-"
METHOD_STATE = "method.safetensors"


@dataclass
class LoopState:
    """Where the training loop is; enough, with the weights and RNG states, to continue exactly."""

    epoch: int = 0  # 0-based epoch in progress
    batches_done: int = 0  # batches of that epoch already consumed
    step: int = 0  # optimizer steps so far
    samples: int = 0
    tokens: int = 0  # non-padding tokens
    train_seconds: float = 0.0
    best_score: float = float("-inf")
    best_epoch: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    bad_epochs: int = 0
    stopped_early: bool = False
    config_hash: str = ""
    train_loss: list[list[float]] = field(default_factory=list)  # [optimizer step, mean loss since the last point]
    validation_curve: list[dict[str, float]] = field(default_factory=list)  # per epoch: epoch, step, metrics


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the parameters that train: the only weights a checkpoint needs."""
    return {name: p.detach().to("cpu", copy=True).contiguous() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: nn.Module, path: Path) -> None:
    result = model.load_state_dict(load_file(str(path)), strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"{path} does not match the model: {result.unexpected_keys[:3]}")


class BestCheckpoint:
    """The trainable weights of the best epoch so far (only those change during training)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "best" / "trainable.safetensors"

    def save(self, model: nn.Module) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        save_file(trainable_state(model), str(temporary))
        os.replace(temporary, self.path)

    def restore(self, model: nn.Module) -> None:
        if self.path.is_file():
            load_trainable(model, self.path)


class Checkpoints:
    """The checkpoints of one run directory, newest last; keeps the last `keep`."""

    def __init__(self, directory: Path, keep: int) -> None:
        self.directory, self.keep = directory, keep

    def complete(self) -> list[Path]:
        found = [p for p in self.directory.glob(f"{PREFIX}*") if p.is_dir() and (p / "state.json").is_file()]
        return sorted(found, key=lambda p: int(p.name.removeprefix(PREFIX)))

    def latest(self) -> Path | None:
        found = self.complete()
        return found[-1] if found else None

    @staticmethod
    def step(checkpoint: Path | None) -> int | None:
        """The optimizer step a checkpoint was taken at."""
        return int(checkpoint.name.removeprefix(PREFIX)) if checkpoint else None

    def save(self, model: nn.Module, optimizer, scheduler, state: LoopState,
             method_state: dict[str, torch.Tensor] | None = None) -> Path:
        """Write a checkpoint; `method_state`: the method's own loop state (finetune.methods.Method.state_dict)."""
        final = self.directory / f"{PREFIX}{state.step:08d}"
        temporary = self.directory / f".{final.name}.tmp"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
        save_file(trainable_state(model), str(temporary / "trainable.safetensors"))
        if method_state:
            save_file({key: value.detach().to("cpu").contiguous() for key, value in method_state.items()},
                      str(temporary / METHOD_STATE))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
                   temporary / "training.pt")
        numpy_state = np.random.get_state()
        rng = {"python": _jsonable(random.getstate()),
               "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]]}
        (temporary / "rng.json").write_text(json.dumps(rng))
        (temporary / "state.json").write_text(json.dumps(asdict(state)))  # written last: marks it complete
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        for old in self.complete()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def read_state(path: Path) -> LoopState:
        """The loop position a checkpoint holds, read without touching the model."""
        return LoopState(**json.loads((path / "state.json").read_text()))

    @staticmethod
    def method_state(path: Path) -> dict[str, torch.Tensor]:
        """The method's loop state saved with a checkpoint; empty for methods that keep none."""
        file = path / METHOD_STATE
        return load_file(str(file)) if file.is_file() else {}

    def resume(self, path: Path | None, config_hash: str, model: nn.Module, optimizer, scheduler) -> LoopState:
        """The loop state to start from: fresh without a checkpoint, else `path`'s, loaded into the
        model, optimizer and scheduler, once its config is known to be this run's."""
        if path is None:
            return LoopState(config_hash=config_hash)
        if self.read_state(path).config_hash != config_hash:  # before any weight is loaded
            raise UserError(f"{path.parent.parent}: its checkpoints belong to another config; "
                            "use a new hydra.run.dir, or add restart=true to start over")
        state = self.load(path, model, optimizer, scheduler)
        log.info("Resuming from %s: epoch %d, step %d", path, state.epoch + 1, state.step)
        return state

    def load(self, path: Path, model: nn.Module, optimizer, scheduler) -> LoopState:
        load_trainable(model, path / "trainable.safetensors")
        training = torch.load(path / "training.pt", weights_only=True)
        optimizer.load_state_dict(training["optimizer"])
        scheduler.load_state_dict(training["scheduler"])
        torch.set_rng_state(training["torch_rng"])
        if training["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(training["cuda_rng"])
        rng = json.loads((path / "rng.json").read_text())
        random.setstate(_tupled(rng["python"]))
        name, keys, *rest = rng["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
        return self.read_state(path)


def _jsonable(value):
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tupled(value):
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value
