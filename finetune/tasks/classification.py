"""Classification with a head on the model: single-label (softmax) and multilabel (sigmoid)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, PreTrainedTokenizerBase

from finetune.metrics import best_threshold, classification_metrics, multilabel_metrics
from finetune.tasks.base import BatchOutput, ModelParts, label_config, single_label_outputs


@dataclass(frozen=True)
class HeadClassification:
    """One label a text; logits come from one forward pass through the classification head."""

    tokenizer: PreTrainedTokenizerBase
    parts: ModelParts
    label_names: tuple[str, ...]
    model_class: type = AutoModelForSequenceClassification
    peft_task_type: str = "SEQ_CLS"
    main_metric: str = "accuracy"

    def positions_after_source(self) -> int:
        return 0

    def model_kwargs(self) -> dict[str, Any]:
        return {"num_labels": len(self.label_names), **label_config(self.label_names)}

    def encode(self, texts: list[str], targets: list[Any], max_length: int) -> dict[str, list]:
        encoding = self.tokenizer(texts, truncation=True, max_length=max_length)
        truncated = [len(ids) >= max_length for ids in encoding["input_ids"]]
        return {**encoding, "labels": targets, "truncated": truncated}

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return DataCollatorWithPadding(self.tokenizer)(features)

    def collate_eval(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.collate(features)

    def evaluate_batch(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> BatchOutput:
        output = model(**batch)
        return BatchOutput(output.loss, output.logits.float(), batch["labels"])

    def metrics(self, predictions: list[np.ndarray], references: list[np.ndarray]) -> dict[str, float]:
        return classification_metrics(np.concatenate(predictions), np.concatenate(references))

    def samples(self, predictions: list[np.ndarray], references: list[np.ndarray]) -> list[dict[str, Any]]:
        return []

    def readable(self, predictions: np.ndarray) -> list[dict[str, Any]]:
        return single_label_outputs(predictions, self.label_names)

    def calibrated(self, validation: dict[str, float]) -> HeadClassification:
        return self


@dataclass(frozen=True)
class HeadMultiLabel(HeadClassification):
    """Any number of labels a text: BCE-with-logits loss, a label is on when sigmoid > threshold.

    With `tune_threshold`, each evaluation reports the threshold with the best Jaccard index on its
    own split; the test split is then scored at the validation's threshold (`calibrated`).
    """

    threshold: float = 0.5
    tune_threshold: bool = False
    main_metric: str = "jaccard"

    def model_kwargs(self) -> dict[str, Any]:
        return {**super().model_kwargs(), "problem_type": "multi_label_classification"}

    def metrics(self, predictions: list[np.ndarray], references: list[np.ndarray]) -> dict[str, float]:
        probabilities = 1 / (1 + np.exp(-np.concatenate(predictions)))
        labels = np.concatenate(references)
        threshold = best_threshold(probabilities, labels) if self.tune_threshold else self.threshold
        return {**multilabel_metrics(probabilities > threshold, labels, self.label_names), "threshold": threshold}

    def readable(self, predictions: np.ndarray) -> list[dict[str, Any]]:
        probabilities = 1 / (1 + np.exp(-predictions))
        return [{"labels": [name for name, p in zip(self.label_names, row) if p > self.threshold],
                 "probabilities": dict(zip(self.label_names, row.astype(float).round(6).tolist()))} for row in probabilities]

    def calibrated(self, validation: dict[str, float]) -> HeadMultiLabel:
        return replace(self, threshold=validation["threshold"], tune_threshold=False)
