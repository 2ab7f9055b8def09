"""Multilabel classification (`dataset.task=multilabel`): any number of labels a text, from one
0/1 column per label (dataset.label_columns) or one list column (0/1 flags, or label names). A
sigmoid head by default; the text-to-text route writes the label names."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from transformers import PreTrainedTokenizerBase

from finetune.errors import UserError
from finetune.metrics import best_threshold, multilabel_metrics
from finetune.schema import GenerationSpec
from finetune.tasks import register_task
from finetune.tasks.base import BatchOutput, TaskKind, head_parts, lm_parts
from finetune.tasks.classification import HeadClassification
from finetune.tasks.columns import BadLabel, LabelledSplits, SplitSource, map_labels, require_column, require_labels
from finetune.tasks.generation import decode, generate
from finetune.tasks.text_to_text import TextToText

NO_LABEL = "none"  # the text-to-text target of a row without labels


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


@dataclass(frozen=True)
class TextToTextMultiLabel(TextToText):
    """The target lists the row's label names, comma-separated in label order ("none" if empty);
    evaluation generates it and parses the names back."""

    main_metric: str = "jaccard"

    def encode(self, texts: list[str], targets: list[Any], max_length: int) -> dict[str, list]:
        return self._encode_targets(texts, [self._names(flags) for flags in targets], max_length)

    def _names(self, flags: list[float]) -> str:
        return ", ".join(name for name, flag in zip(self.label_names, flags) if flag) or NO_LABEL

    def evaluate_batch(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> BatchOutput:
        output = model(**batch)
        longest = len(self.tokenizer(self._names([1.0] * len(self.label_names)))["input_ids"])
        spec = GenerationSpec(max_new_tokens=longest + 1, no_repeat_ngram_size=0)
        generated = generate(model, batch["input_ids"], batch["attention_mask"], self.tokenizer, spec)
        return BatchOutput(output.loss, generated, batch["labels"])

    def metrics(self, predictions: list[np.ndarray], references: list[np.ndarray]) -> dict[str, float]:
        predicted = np.array([self._flags(text) for text in decode(self.tokenizer, predictions)])
        labels = np.array([self._flags(text) for text in decode(self.tokenizer, references)])
        return multilabel_metrics(predicted, labels, self.label_names)

    def readable(self, predictions: np.ndarray) -> list[dict[str, Any]]:
        return [{"labels": [n for n, flag in zip(self.label_names, self._flags(text)) if flag]}
                for text in decode(self.tokenizer, [predictions])]

    def _flags(self, text: str) -> list[int]:
        said = {part.strip() for part in text.split(",")}
        return [int(name in said) for name in self.label_names]


@register_task
class MultiLabel(TaskKind):
    name = "multilabel"
    pipeline_tag = "text-classification"

    def target_column(self, dataset: Dataset, spec, source: SplitSource) -> tuple[Dataset, str]:
        if spec.label_columns and set(spec.label_columns) <= set(dataset.column_names):
            packed = dataset.map(lambda batch: {"packed_labels": _pack_flags(batch, spec.label_columns)}, batched=True)
            return packed, "packed_labels"
        if spec.label_columns and spec.label_column not in dataset.column_names:
            raise UserError(f"dataset.label_columns: {source} has neither the columns {list(spec.label_columns)} "
                            f"nor a list column '{spec.label_column}' (columns: {', '.join(dataset.column_names)})")
        require_column(dataset, "label_column", spec.label_column, source)
        if spec.label_columns and not isinstance(dataset[0][spec.label_column], list):
            missing = [column for column in spec.label_columns if column not in dataset.column_names]
            raise UserError(f"dataset.label_columns: no column {', '.join(map(repr, missing))} in {source}, and "
                            f"'{spec.label_column}' is not a list column (columns: {', '.join(dataset.column_names)})")
        require_labels(dataset, "label_column", spec.label_column, source)
        return dataset, spec.label_column

    def labelled(self, splits: dict[str, Dataset], spec) -> LabelledSplits:
        names = tuple(spec.label_names or spec.label_columns or ())
        if len(set(names)) < len(names):
            twice = sorted({name for name in names if names.count(name) > 1})
            raise UserError(f"dataset.label_names: {', '.join(map(repr, twice))} named twice; each label needs a name of its own")
        if not names:
            raise UserError("dataset.label_names: a multilabel data set needs the names of its labels "
                            "(or dataset.label_columns, one column per label)")
        return map_labels(splits, _multi_hot(names), "label_names", names)

    def placeholder_target(self, label_names: tuple[str, ...]) -> Any:
        return [0.0] * len(label_names)

    def build(self, run, tokenizer: PreTrainedTokenizerBase, label_names: tuple[str, ...]):
        if run.uses_text_to_text():
            return TextToTextMultiLabel(tokenizer, lm_parts(run), label_names)
        return HeadMultiLabel(tokenizer, head_parts(run), label_names, threshold=run.dataset.threshold,
                              tune_threshold=run.dataset.tune_threshold)


def _pack_flags(batch: dict[str, list], columns: tuple[str, ...]) -> list[list[int]]:
    return [[int(flag) for flag in row] for row in zip(*(batch[column] for column in columns))]


def _multi_hot(names: tuple[str, ...]) -> Callable[[object], list[float]]:
    """Multilabel values -> 0/1 floats per label: from a list of 0/1 flags or a list of label names."""
    index = {name: position for position, name in enumerate(names)}

    def to_flags(value: object) -> list[float]:
        if not isinstance(value, list):
            raise BadLabel(f"a label {value!r} that is not a list (0/1 per label, or label names)")
        if not value:  # a list of names, none of them
            return [0.0] * len(names)
        if all(isinstance(v, str) for v in value):
            unknown = [v for v in value if v not in index]
            if unknown:
                raise BadLabel(f"label names {unknown[:5]} outside {list(names)}")
            return [float(name in value) for name in names]
        if len(value) != len(names) or any(v not in (0, 1) for v in value):
            raise BadLabel(f"a label list {value[:12]} that is not {len(names)} flags of 0/1 (one per label: {list(names)})")
        return [float(v) for v in value]

    return to_flags
