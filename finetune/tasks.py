"""Task kinds: which model class they train and how their predictions are scored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
from transformers import AutoModelForSequenceClassification

from finetune.metrics import classification_metrics


class Task(Protocol):
    """What the engine needs to know about a task."""

    model_class: type  # a transformers Auto class
    peft_task_type: str  # peft's TaskType name
    main_metric: str  # higher is better; selects the best epoch and early-stops

    def metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]: ...


@dataclass(frozen=True)
class LogitsTask:
    """A task scored from the logits of one forward pass."""

    model_class: type
    peft_task_type: str
    main_metric: str
    score: Callable[[np.ndarray, np.ndarray], dict[str, float]]

    def metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return self.score(logits, labels)


TASKS: dict[str, Task] = {
    "classification": LogitsTask(AutoModelForSequenceClassification, "SEQ_CLS", "accuracy", classification_metrics),
}
