"""The classic baselines' machinery (their method classes are in finetune/methods/svm.py): features
(TF-IDF, or frozen embeddings), a linear SVM on them, scored like every other run.

The SVM's decision values stand in for logits, so the task's own metrics (accuracy, Jaccard with
its threshold) apply unchanged: a decision value above 0 is a sigmoid above 0.5.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import LinearSVC

from finetune.embeddings import FeatureSource
from finetune.schema import Run
from finetune.tasks import Task
from finetune.tasks.columns import LabelledSplits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaselineOutcome:
    """What a baseline run reports, in the fields a trained run uses."""

    metrics: dict[str, dict[str, float]]
    params: dict[str, int]  # trainable: SVM weights and biases; total: plus the frozen encoder's
    train_seconds: float  # features of the training split plus the SVM fit
    train_samples_per_second: float
    truncated: dict[str, Any]  # as for a trained run: max_length and the texts cut per split; {} for TF-IDF


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
    classifier.fit(features(inputs(data, "train"), "train"), labels)
    seconds = time.perf_counter() - started
    weights = _save_svm(classifier, model_dir, data.label_names)

    metrics = {}
    for role in ("validation", "test"):
        if role in data.splits:
            scores = _decision_values(classifier, features(inputs(data, role), role))
            metrics[role] = task.metrics([scores], [_labels(data, role)])
            if role == "validation":
                task = task.calibrated(metrics[role])
    rows = len(data.splits["train"])
    return BaselineOutcome(metrics, {"trainable": weights, "total": weights + source.frozen_params}, seconds,
                           rows / max(seconds, 1e-9), source.truncated)


def inputs(data: LabelledSplits, role: str) -> list[Any]:
    """A split's inputs (texts, or image references)."""
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
