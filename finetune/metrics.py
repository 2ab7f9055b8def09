"""Pure metric functions: arrays or strings in, a flat dict of floats out."""

from __future__ import annotations

import re

import numpy as np
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, f1_score, jaccard_score, precision_recall_fscore_support

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and macro precision, recall and F1 of the arg-max predictions; logits are (n, num_labels)."""
    predictions = logits.argmax(axis=-1)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, average="macro", labels=np.arange(logits.shape[-1]), zero_division=0)
    return {"accuracy": float(accuracy_score(labels, predictions)), "macro_precision": float(precision),
            "macro_recall": float(recall), "macro_f1": float(f1)}


def multilabel_metrics(predicted: np.ndarray, labels: np.ndarray, label_names: tuple[str, ...]) -> dict[str, float]:
    """Jaccard index (SemEval E-c's score), micro/macro F1, subset accuracy and F1 per label.

    `predicted` and `labels` are (n, num_labels) 0/1 arrays. A row where both are empty counts as
    full agreement (Jaccard 1).
    """
    predicted, labels = predicted.astype(int), labels.astype(int)
    metrics = {
        "jaccard": float(jaccard_score(labels, predicted, average="samples", zero_division=1.0)),
        "micro_f1": float(f1_score(labels, predicted, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(labels, predicted, average="macro", zero_division=0)),
        "subset_accuracy": float(accuracy_score(labels, predicted)),
    }
    per_label = f1_score(labels, predicted, average=None, zero_division=0)
    metrics.update({f"f1_{name}": float(score) for name, score in zip(label_names, per_label)})
    return metrics


def best_threshold(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The threshold on the grid 0.05..0.95 with the highest Jaccard index; ties go to the lowest."""
    scores = [jaccard_score(labels.astype(int), (probabilities > t).astype(int), average="samples", zero_division=1.0)
              for t in THRESHOLD_GRID]
    return float(THRESHOLD_GRID[int(np.argmax(scores))])


def rouge_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L/Lsum F-measures (x100) with Porter stemming, and the mean summary length in words.

    ROUGE-Lsum compares sentence by sentence, so both sides are split into one sentence a line.
    """
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(_sentence_lines(reference), _sentence_lines(prediction))
        for kind in ROUGE_TYPES:
            totals[kind] += scores[kind].fmeasure
    count = max(len(predictions), 1)
    metrics = {kind: 100 * total / count for kind, total in totals.items()}
    metrics["summary_words"] = sum(len(p.split()) for p in predictions) / count
    return metrics


def _sentence_lines(text: str) -> str:
    return "\n".join(line for line in re.split(r"(?<=[.!?])\s+|\n+", text.strip()) if line)
