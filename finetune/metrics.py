"""Pure metric functions: arrays in, a flat dict of floats out."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and macro F1 of the arg-max predictions; logits are (n, num_labels)."""
    predictions = logits.argmax(axis=-1)
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, average="macro", labels=np.arange(logits.shape[-1]), zero_division=0)),
    }
