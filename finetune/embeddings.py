"""Frozen embeddings of a split's inputs, for the SVM baseline: pooled token states of a frozen
encoder (images: the task kind's own, see TaskKind.frozen_embeddings), computed once and kept in
the cache, keyed by the model's class and weights, its settings and the inputs."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import numpy as np
import torch

from finetune.batching import sorted_batches
from finetune.cache import cache_root, cached_array, token_ids_digest, weights_digest
from finetune.environment import COMPUTE, library_versions
from finetune.models import count_parameters, load_encoder, load_tokenizer
from finetune.progress import progress
from finetune.schema import Run

log = logging.getLogger(__name__)

Features = Callable[[list[Any], str], np.ndarray]  # (inputs, split) -> one row of features an input


@dataclass(frozen=True)
class FeatureSource:
    """How a baseline turns inputs into features, the frozen parameters behind them, and the inputs
    they cut (filled in as the splits are featurised)."""

    features: Features
    frozen_params: int
    truncated: dict[str, Any]


@dataclass(frozen=True)
class EmbeddingCache:
    """A frozen model's embeddings of each split, computed once: with train.feature_cache, kept in the
    cache and keyed by the model's class and weights, its settings (pooling) and the inputs."""

    key: dict[str, Any] | None  # None: train.feature_cache is off

    @classmethod
    def of(cls, run: Run, model: torch.nn.Module, device: torch.device, **settings: Any) -> EmbeddingCache:
        if not run.train.feature_cache:
            return cls(None)
        weights = weights_digest(itertools.chain(model.parameters(), model.buffers()))
        return cls({"model_class": type(model).__qualname__, "device": device.type, "weights": weights,
                    **settings, **library_versions(COMPUTE, python=False)})

    def get(self, split: str, inputs_digest: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The embeddings of `split`, whose inputs have `inputs_digest`: read back, or `compute()`d."""
        if self.key is None:
            return compute()
        vectors, reused = cached_array("embeddings", {**self.key, "inputs": inputs_digest}, compute)
        log.info("Embeddings of %s: %s (%s)", split, "reused" if reused else "computed", cache_root() / "embeddings")
        return vectors


def text_embeddings(run: Run, pooling: str, source: str, device: torch.device) -> FeatureSource:
    """Pooled last hidden states of the family's frozen encoder, and its parameter count."""
    tokenizer = load_tokenizer(source, run.model)
    encoder = load_encoder(source, run.model).to(device).eval()
    batch_size = run.train.evaluation_batch_size
    cache = EmbeddingCache.of(run, encoder, device, pooling=pooling)
    truncated: dict[str, Any] = {"max_length": run.model.max_length}

    def embed(texts: list[str], split: str) -> np.ndarray:
        encoded = tokenizer(texts, truncation=True, max_length=run.model.max_length)["input_ids"]
        truncated[split] = sum(len(ids) == run.model.max_length for ids in encoded)  # as the encoding counts
        compute = partial(_pooled, encoder, tokenizer, encoded, pooling, batch_size, device)
        return cache.get(split, token_ids_digest(encoded), compute)

    return FeatureSource(embed, count_parameters(encoder)["total"], truncated)


def _pooled(encoder: torch.nn.Module, tokenizer, encoded: list[list[int]], pooling: str, batch_size: int,
            device: torch.device) -> np.ndarray:
    """One pooled vector per row of token ids, batched by length."""
    pooled: list[np.ndarray] = [np.empty(0)] * len(encoded)
    for rows in progress(sorted_batches([len(ids) for ids in encoded], batch_size), desc="embed", unit="batches",
                         leave=False):
        batch = tokenizer.pad({"input_ids": [encoded[row] for row in rows]}, return_tensors="pt").to(device)
        with torch.no_grad():
            states = encoder(**batch).last_hidden_state.float()
        if pooling == "first":
            vectors = states[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).float()
            vectors = (states * mask).sum(1) / mask.sum(1)
        for row, vector in zip(rows, vectors.cpu().numpy()):
            pooled[row] = vector
    return np.stack(pooled)
