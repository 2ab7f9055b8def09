"""The classic baselines' machinery (their method classes are in finetune/methods/svm.py): features
(TF-IDF, or frozen embeddings), a linear SVM on them, scored like every other run.

The SVM's decision values stand in for logits, so the task's own metrics (accuracy, Jaccard with
its threshold) apply unchanged: a decision value above 0 is a sigmoid above 0.5.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import LinearSVC

from finetune.batching import sorted_batches
from finetune.feature_cache import cache_root, cached_array, library_versions, token_ids_digest, weights_digest
from finetune.methods import count_parameters
from finetune.models import load_encoder, load_tokenizer
from finetune.schema import Run
from finetune.tasks import Task
from finetune.tasks.columns import LabelledSplits
from finetune.progress import progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaselineOutcome:
    """What a baseline run reports, in the fields a trained run uses."""

    metrics: dict[str, dict[str, float]]
    params: dict[str, int]  # trainable: SVM weights and biases; total: plus the frozen encoder's
    train_seconds: float  # features of the training split plus the SVM fit
    train_samples_per_second: float
    truncated: dict[str, Any]  # as for a trained run: max_length and the texts cut per split; {} for TF-IDF


Features = Callable[[list[str], str], np.ndarray]  # (texts, split) -> one row of features a text


@dataclass(frozen=True)
class FeatureSource:
    """How a baseline turns texts into features, the frozen parameters behind them, and the inputs
    they cut (filled in as the splits are featurised)."""

    features: Features
    frozen_params: int
    truncated: dict[str, Any]


def fit_svm(run: Run, data: LabelledSplits, task: Task, make_features: Callable[[], FeatureSource],
            model_dir: Path) -> BaselineOutcome:
    """Build the features, fit a linear SVM on train, score every evaluation split, save its weights
    to `model_dir`."""
    started = time.perf_counter()
    source = make_features()
    features = source.features
    labels = _labels(data, "train")
    svm = LinearSVC(C=run.method.C)  # every SVM spec has C
    classifier = OneVsRestClassifier(svm) if labels.ndim == 2 else svm
    classifier.fit(features(_texts(data, "train"), "train"), labels)
    seconds = time.perf_counter() - started
    weights = _save_svm(classifier, model_dir, data.label_names)

    metrics = {}
    for role in ("validation", "test"):
        if role in data.splits:
            scores = _decision_values(classifier, features(_texts(data, role), role))
            metrics[role] = task.metrics([scores], [_labels(data, role)])
            if role == "validation":
                task = task.calibrated(metrics[role])
    rows = len(data.splits["train"])
    return BaselineOutcome(metrics, {"trainable": weights, "total": weights + source.frozen_params}, seconds,
                           rows / max(seconds, 1e-9), source.truncated)


def train_texts(data: LabelledSplits) -> list[str]:
    return _texts(data, "train")


def _texts(data: LabelledSplits, role: str) -> list[str]:
    return list(data.splits[role]["text"])


def _labels(data: LabelledSplits, role: str) -> np.ndarray:
    return np.array(list(data.splits[role]["labels"]))


def tfidf_features(ngram_max: int, min_df: int, texts: list[str], model_dir: Path) -> FeatureSource:
    """TF-IDF of word n-grams fitted on `texts`; its vocabulary and idf saved to `model_dir`."""
    vectorizer = TfidfVectorizer(ngram_range=(1, ngram_max), min_df=min_df, sublinear_tf=True)
    vectorizer.fit(texts)
    log.info("TF-IDF: %d n-grams (1..%d, in at least %d texts)", len(vectorizer.vocabulary_), ngram_max, min_df)
    model_dir.mkdir(parents=True, exist_ok=True)
    vocabulary = {term: int(index) for term, index in vectorizer.vocabulary_.items()}
    (model_dir / "tfidf.json").write_text(json.dumps({"vocabulary": vocabulary, "idf": vectorizer.idf_.tolist()}))
    return FeatureSource(lambda texts, split: vectorizer.transform(texts), 0, {})


def embedding_features(run: Run, pooling: str, source: str, device: torch.device) -> FeatureSource:
    """Pooled last hidden states of the family's frozen encoder, and its parameter count. With
    train.feature_cache they are kept in the cache and reused by every run with the same encoder,
    pooling and token ids."""
    tokenizer = load_tokenizer(source, run.model)
    encoder = load_encoder(source, run.model).to(device).eval()
    batch_size = run.train.evaluation_batch_size
    cache = EmbeddingCache.of(run, encoder, device, pooling=pooling)
    truncated: dict[str, Any] = {"max_length": run.model.max_length}

    def embed(texts: list[str], split: str) -> np.ndarray:
        encoded = tokenizer(texts, truncation=True, max_length=run.model.max_length)["input_ids"]
        truncated[split] = sum(len(ids) == run.model.max_length for ids in encoded)  # as finetune.batching counts
        compute = partial(_pooled, encoder, tokenizer, encoded, pooling, batch_size, device)
        return cache.get(split, token_ids_digest(encoded), compute)

    return FeatureSource(embed, count_parameters(encoder)["total"], truncated)


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
                    **settings, **library_versions()})

    def get(self, split: str, inputs_digest: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The embeddings of `split`, whose inputs have `inputs_digest`: read back, or `compute()`d."""
        if self.key is None:
            return compute()
        vectors, reused = cached_array("embeddings", {**self.key, "inputs": inputs_digest}, compute)
        log.info("Embeddings of %s: %s (%s)", split, "reused" if reused else "computed", cache_root() / "embeddings")
        return vectors


def _pooled(encoder: torch.nn.Module, tokenizer, encoded: list[list[int]], pooling: str, batch_size: int,
            device: torch.device) -> np.ndarray:
    """One pooled vector per row of token ids, batched by length."""
    pooled: list[np.ndarray] = [np.empty(0)] * len(encoded)
    for rows in progress(sorted_batches([len(ids) for ids in encoded], batch_size), desc="embed", unit="batches", leave=False):
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


def _decision_values(classifier, features) -> np.ndarray:
    scores = classifier.decision_function(features)
    return np.stack([-scores, scores], axis=1) if scores.ndim == 1 else scores  # binary: one column per class


def _save_svm(classifier, model_dir: Path, label_names: tuple[str, ...]) -> int:
    """Weights and biases as arrays (no pickle); returns their number."""
    estimators = getattr(classifier, "estimators_", [classifier])
    coef = np.concatenate([estimator.coef_ for estimator in estimators])
    intercept = np.concatenate([estimator.intercept_ for estimator in estimators])
    model_dir.mkdir(parents=True, exist_ok=True)
    np.savez(model_dir / "svm.npz", coef=coef, intercept=intercept, label_names=np.array(label_names))
    return coef.size + intercept.size
