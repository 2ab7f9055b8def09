"""Frozen-feature cache: never compute the same frozen activations twice.

A method that trains only the top of the network (head_only, last_layers, and the evaluation of
none) leaves the first blocks of the task's layer stack frozen (`Method.frozen_blocks`). Their
output is computed once per split, in eval mode (so no dropout acts inside them), written to
disk and memory-mapped; every epoch, every evaluation, every run of a sweep and every resumed run
then reads it. While the cache is in use the frozen blocks do not run: each returns the batch's
cached states (`Replay`), and the blocks above them train as before.

A feature set is keyed by everything that changes it: the frozen weights, the model class, the
layer stack and the boundary, the split's token ids, the precision, the device type and the
torch/transformers versions. It is written to a temporary directory and renamed when complete;
on load the key and the file sizes are verified, so a stale or partial set is never used. Before
a set is first written, one batch is run both ways: a model whose blocks cannot be replayed
(their outputs differ) trains without the cache.
"""

from __future__ import annotations

import itertools
import logging
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Callable, Iterator

from accelerate import Accelerator
from datasets import Dataset
from torch import nn

from finetune.cache import cache_root, key_digest, weights_digest
from finetune.environment import COMPUTE, library_versions
from finetune.frozen.loader import WithStates, with_states
from finetune.frozen.replay import Boundary, CacheUnusable, Replay
from finetune.frozen.store import FORMAT, FeatureSet, build, inputs_digest
from finetune.hardware import run_precision
from finetune.models import submodule
from finetune.plan import Plan
from finetune.tasks import Task

log = logging.getLogger(__name__)


class FrozenFeatures:
    """The run's cached splits; `attach` gives a split's loader its states, `replaying` swaps the frozen blocks out."""

    def __init__(self, model: nn.Module | None = None, boundary: Boundary | None = None,
                 sets: dict[str, FeatureSet] | None = None, report: dict[str, dict[str, Any]] | None = None) -> None:
        self.model = model
        self.boundary = boundary
        self.sets = sets or {}
        self.report = report or {}  # per split: computed or reused, megabytes, seconds spent computing

    def seconds(self, role: str) -> float:
        """Seconds this run spent computing `role`'s features (0 if reused, or without a cache)."""
        return self.report.get(role, {}).get("seconds", 0.0)

    def attach(self, role: str, dataset: Dataset, collate: Callable) -> tuple[Any, Callable]:
        """The dataset and collate function of `role`'s loader (unchanged without a cache)."""
        if role not in self.sets:
            return dataset, collate
        return WithStates(dataset, self.sets[role]), with_states(collate)

    @contextmanager
    def replaying(self) -> Iterator[None]:
        """The frozen blocks replay cached states for the duration (nothing changes without a cache)."""
        if not self.sets:
            yield
            return
        with Replay(self.model, self.boundary).installed():
            yield


def frozen_features(plan: Plan, model: nn.Module, task: Task, splits: dict[str, Dataset],
                    accelerator: Accelerator) -> FrozenFeatures:
    """The cached frozen states of `splits` (built where missing), or an empty cache where the method
    freezes no leading block, the task generates text or its inputs are not token ids (images: the
    key is the split's token ids), `train.feature_cache` is off, or the model cannot be replayed."""
    run = plan.run
    if not run.train.feature_cache or plan.generates_text:
        return FrozenFeatures()
    family = run.model
    blocks = submodule(model, task.parts.layers, "layers", family)
    frozen = plan.method.frozen_blocks(len(blocks), family)
    if frozen == 0:
        return FrozenFeatures()
    if any("input_ids" not in dataset.column_names for dataset in splits.values()):
        log.info("Frozen-feature cache: not used, the inputs are not token ids")
        return FrozenFeatures()
    embeddings = submodule(model, family.embeddings, "embeddings", family) if family.embeddings else None
    boundary = Boundary(blocks, frozen, embeddings)
    key = {
        "format": FORMAT, "weights": _frozen_weights_digest(model, blocks, frozen, task, run),
        "model_class": type(model).__qualname__, "layers": task.parts.layers, "frozen_blocks": frozen,
        "precision": run_precision(accelerator), "device": accelerator.device.type,
        **library_versions(COMPUTE, python=False),
    }
    if key["weights"] is None:
        return FrozenFeatures()
    root = cache_root() / "features"
    sets, report = {}, {}
    try:
        with accelerator.main_process_first():  # one process builds, the others find it complete
            for role, dataset in splits.items():
                if len(dataset) == 0:
                    continue
                split_key = key_digest({**key, "inputs": inputs_digest(dataset)})
                directory = root / split_key
                started = time.perf_counter()
                features = FeatureSet.open(directory, split_key)
                status = "reused"
                if features is None:
                    build(model, boundary, dataset, task, run, accelerator, directory, split_key, role)
                    features = FeatureSet.open(directory, split_key)
                    if features is None:
                        raise CacheUnusable(f"{directory} was replaced while this run wrote it")
                    status = "computed"
                boundary = replace(boundary, output_length=features.meta["output_length"])
                sets[role] = features
                megabytes = features.nbytes / 2**20
                report[role] = {"status": status, "megabytes": round(megabytes, 1),
                                "seconds": time.perf_counter() - started if status == "computed" else 0.0}
                log.info("Frozen features (%d of %d blocks) of %s: %s, %.1f MB in %s", frozen, len(blocks), role,
                         status, megabytes, directory)
    except CacheUnusable as reason:
        log.warning("Frozen-feature cache not used: %s; the frozen blocks run every step", reason)
        return FrozenFeatures()
    return FrozenFeatures(model, boundary, sets, report)


def _frozen_weights_digest(model: nn.Module, blocks: nn.ModuleList, frozen: int, task: Task, run: Any) -> str | None:
    """A digest of every tensor the frozen states depend on: all but the trained blocks and the head.
    None if any of them trains (the method froze less than it declared)."""
    above = list(blocks)[frozen:] + [submodule(model, path, "head", run.model) for path in task.parts.head]
    skipped = {id(tensor) for module in above for tensor in itertools.chain(module.parameters(), module.buffers())}
    below = [(name, tensor) for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers())
             if id(tensor) not in skipped]
    training = [name for name, tensor in below if tensor.requires_grad]
    if training:
        log.warning("Frozen-feature cache not used: %s trains although the method freezes it", training[0])
        return None
    return weights_digest(tensor for _, tensor in below)
