"""Single-label classification (`dataset.task=classification`): one label a text, from a label
column of ints (named by dataset.label_names) or of any values (their sorted distinct values name
the classes). A classification head (softmax) by default; the text-to-text route for the methods a
family lists in `text_to_text_methods`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from datasets import ClassLabel, Dataset
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, PreTrainedTokenizerBase

from finetune.errors import UserError
from finetune.metrics import classification_metrics
from finetune.tasks import register_task
from finetune.tasks.base import (BatchOutput, ModelParts, TaskKind, attended_tokens, head_parts, label_config, lm_parts,
                                 single_label_outputs)
from finetune.tasks.columns import BadLabel, LabelledSplits, SplitSource, map_labels, require_column, require_labels
from finetune.tasks.text_to_text import TextToText


class SingleLabelScoring:
    """A route whose model returns the loss and one logit per class: evaluation, metrics and what
    predict prints, shared by the head route and CLIP's prompt route."""

    label_names: tuple[str, ...]

    def collate_eval(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.collate(features)

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | int:
        return attended_tokens(batch)

    def evaluate_batch(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> BatchOutput:
        output = model(**batch)
        return BatchOutput(output.loss, output.logits.float(), batch["labels"])

    def metrics(self, predictions: list[np.ndarray], references: list[np.ndarray]) -> dict[str, float]:
        return classification_metrics(np.concatenate(predictions), np.concatenate(references))

    def samples(self, predictions: list[np.ndarray], references: list[np.ndarray]) -> list[dict[str, Any]]:
        return []

    def readable(self, predictions: np.ndarray) -> list[dict[str, Any]]:
        return single_label_outputs(predictions, self.label_names)

    def calibrated(self, validation: dict[str, float]) -> SingleLabelScoring:
        return self


@dataclass(frozen=True)
class HeadClassification(SingleLabelScoring):
    """One label a text; logits come from one forward pass through the classification head."""

    tokenizer: PreTrainedTokenizerBase
    parts: ModelParts
    label_names: tuple[str, ...]
    model_class: type = AutoModelForSequenceClassification
    peft_task_type: str = "SEQ_CLS"
    main_metric: str = "accuracy"

    @property
    def processor(self) -> PreTrainedTokenizerBase:
        return self.tokenizer

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



@dataclass(frozen=True)
class TextToTextClassification(TextToText):
    """The target is the label's name; the class logits are the decoder's first-step logits of each
    name's first token, so the metrics are those of the head route."""

    main_metric: str = "accuracy"

    def __post_init__(self) -> None:
        targets = self.tokenizer(list(self.label_names), add_special_tokens=False)["input_ids"]
        first = [ids[0] for ids in targets]
        if len(set(first)) != len(first):
            raise UserError(f"dataset.label_names: {list(self.label_names)} do not start with distinct tokens; rename them")
        object.__setattr__(self, "first_tokens", torch.tensor(first))

    def encode(self, texts: list[str], targets: list[Any], max_length: int) -> dict[str, list]:
        return self._encode_targets(texts, [self.label_names[label] for label in targets], max_length)

    def evaluate_batch(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> BatchOutput:
        output = model(**batch)
        first = self.first_tokens.to(output.logits.device)
        class_ids = (batch["labels"][:, :1] == first).int().argmax(dim=-1)
        return BatchOutput(output.loss, output.logits[:, 0, first].float(), class_ids)

    def metrics(self, predictions: list[np.ndarray], references: list[np.ndarray]) -> dict[str, float]:
        return classification_metrics(np.concatenate(predictions), np.concatenate(references))

    def readable(self, predictions: np.ndarray) -> list[dict[str, Any]]:
        return single_label_outputs(predictions, self.label_names)


@register_task
class Classification(TaskKind):
    name = "classification"
    pipeline_tag = "text-classification"

    def target_column(self, dataset: Dataset, spec, source: SplitSource) -> tuple[Dataset, str]:
        require_column(dataset, "label_column", spec.label_column, source)
        require_labels(dataset, "label_column", spec.label_column, source)
        return dataset, spec.label_column

    def labelled(self, splits: dict[str, Dataset], spec) -> LabelledSplits:
        names, to_id = _single_label_ids(splits["train"], spec)
        return map_labels(splits, to_id, "label_column", names)

    def placeholder_target(self, label_names: tuple[str, ...]) -> Any:
        return 0

    def build(self, run, tokenizer: PreTrainedTokenizerBase, label_names: tuple[str, ...]):
        if run.uses_text_to_text():
            return TextToTextClassification(tokenizer, lm_parts(run), label_names)
        return HeadClassification(tokenizer, head_parts(run), label_names)


def _single_label_ids(train: Dataset, spec) -> tuple[tuple[str, ...], Callable[[object], int]]:
    """Label names and the value -> id mapping: ints index label_names, other values sort into ids."""
    values = sorted(set(train["raw_label"]), key=_label_order)
    if spec.label_names is not None:
        names = tuple(spec.label_names)
        if not all(isinstance(v, int) and 0 <= v < len(names) for v in values):
            raise UserError(
                f"dataset.label_names: {len(names)} names given, so labels must be ints 0..{len(names) - 1}; found {values[:10]}"
            )
        # a Hub set's ClassLabel declares its classes; names the user gives must each have their label
        unused = [f"{names[index]!r} ({index})" for index in range(len(names)) if index not in values]
        if unused and not isinstance(train.features["raw_label"], ClassLabel):
            raise UserError(f"dataset.label_names: {len(names)} names given, but the train split has no label "
                            f"{', '.join(unused[:5])}{', ...' if len(unused) > 5 else ''} (its labels: {values[:10]}); "
                            "give one name per label the data has")
        if len(set(names)) < len(names):
            twice = sorted({name for name in names if names.count(name) > 1})
            raise UserError(f"dataset.label_names: {', '.join(map(repr, twice))} named twice; each class needs a name of its own")
        ids = {index: index for index in range(len(names))}
    else:
        if len(values) < 2:
            raise UserError(f"dataset.label_column: the train split has {len(values)} distinct label(s); need at least 2")
        names = tuple(str(v) for v in values)
        ids = {value: index for index, value in enumerate(values)}

    def to_id(value: object) -> int:
        if value not in ids:
            raise BadLabel(f"label {value!r} outside the label set {list(names)}")
        return ids[value]

    return names, to_id


def _label_order(value: object) -> tuple[int, object]:
    # numbers sort numerically, everything else as text; the two kinds never compare
    return (0, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, str(value))
