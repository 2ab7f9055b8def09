"""Task kinds: how texts are encoded and batched, which model class trains, how outputs are scored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    DataCollatorForSeq2Seq,
    DataCollatorWithPadding,
    PreTrainedTokenizerBase,
)

from finetune.errors import UserError
from finetune.metrics import classification_metrics
from finetune.schema import Run


class Task(Protocol):
    """What the engine needs to know about a task."""

    tokenizer: PreTrainedTokenizerBase
    model_class: type  # a transformers Auto class
    peft_task_type: str  # peft's TaskType name
    main_metric: str  # higher is better; selects the best epoch and early-stops

    def encode(self, texts: list[str], labels: list[int], max_length: int) -> dict[str, list]: ...

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]: ...

    def scores(self, output: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits per class, class ids) of one batch."""
        ...

    def metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]: ...


@dataclass(frozen=True)
class HeadClassification:
    """A classification head on the model; logits come from one forward pass."""

    tokenizer: PreTrainedTokenizerBase
    model_class: type = AutoModelForSequenceClassification
    peft_task_type: str = "SEQ_CLS"
    main_metric: str = "accuracy"

    def encode(self, texts: list[str], labels: list[int], max_length: int) -> dict[str, list]:
        return {**self.tokenizer(texts, truncation=True, max_length=max_length), "labels": labels}

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return DataCollatorWithPadding(self.tokenizer)(features)

    def scores(self, output: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return output.logits, batch["labels"]

    def metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return classification_metrics(logits, labels)


@dataclass(frozen=True)
class TextToTextClassification:
    """Encoder-decoder classification by generating the label's name (Flan-T5 style).

    The class logits are the decoder's first-step logits of each label name's first token, so the
    metrics are those of the head route; the loss is the usual sequence-to-sequence loss.
    """

    tokenizer: PreTrainedTokenizerBase
    label_names: tuple[str, ...]
    model_class: type = AutoModelForSeq2SeqLM
    peft_task_type: str = "SEQ_2_SEQ_LM"
    main_metric: str = "accuracy"

    def __post_init__(self) -> None:
        targets = self.tokenizer(list(self.label_names), add_special_tokens=False)["input_ids"]
        first = [ids[0] for ids in targets]
        if len(set(first)) != len(first):
            raise UserError(f"dataset.label_names: {list(self.label_names)} do not start with distinct tokens; rename them")
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "first_tokens", torch.tensor(first))

    def encode(self, texts: list[str], labels: list[int], max_length: int) -> dict[str, list]:
        encoding = self.tokenizer(texts, truncation=True, max_length=max_length)
        eos = [self.tokenizer.eos_token_id]
        return {**encoding, "labels": [self.targets[label] + eos for label in labels]}

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return DataCollatorForSeq2Seq(self.tokenizer, label_pad_token_id=-100)(features)

    def scores(self, output: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.first_tokens.to(output.logits.device)
        class_ids = (batch["labels"][:, :1] == first).int().argmax(dim=-1)
        return output.logits[:, 0, first], class_ids

    def metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return classification_metrics(logits, labels)


def build_task(run: Run, tokenizer: PreTrainedTokenizerBase, label_names: tuple[str, ...]) -> Task:
    """The task for this run; families list the methods that need the text-to-text route."""
    if run.method.name in run.model.text_to_text_methods:
        return TextToTextClassification(tokenizer, label_names)
    return HeadClassification(tokenizer)
