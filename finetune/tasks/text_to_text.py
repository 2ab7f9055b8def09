"""Classification by generating label names with an encoder-decoder (Flan-T5 style).

Used for the methods a family lists in `text_to_text_methods` (peft's prompt and prefix tuning
refuse T5's classification head).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, PreTrainedTokenizerBase

from finetune.errors import UserError
from finetune.metrics import classification_metrics, multilabel_metrics
from finetune.schema import GenerationSpec
from finetune.tasks.base import BatchOutput, ModelParts, label_config, single_label_outputs
from finetune.tasks.generation import IGNORE, decode, generate

NO_LABEL = "none"  # the target of a multilabel row without labels


@dataclass(frozen=True)
class _TextToText:
    tokenizer: PreTrainedTokenizerBase
    parts: ModelParts
    label_names: tuple[str, ...]
    model_class: type = AutoModelForSeq2SeqLM
    peft_task_type: str = "SEQ_2_SEQ_LM"

    def positions_after_source(self) -> int:
        return 0

    def model_kwargs(self) -> dict[str, Any]:
        # not used by the language-model head; saved with the model so that the label names travel
        return label_config(self.label_names)

    def _encode_targets(self, texts: list[str], targets: list[str], max_length: int) -> dict[str, list]:
        encoding = self.tokenizer(texts, truncation=True, max_length=max_length)
        truncated = [len(ids) >= max_length for ids in encoding["input_ids"]]
        labels = self.tokenizer(text_target=targets)["input_ids"]
        return {**encoding, "labels": labels, "truncated": truncated}

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return DataCollatorForSeq2Seq(self.tokenizer, label_pad_token_id=IGNORE)(features)

    def collate_eval(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.collate(features)

    def samples(self, predictions: list[np.ndarray], references: list[np.ndarray]) -> list[dict[str, Any]]:
        return []

    def calibrated(self, validation: dict[str, float]) -> _TextToText:
        return self


@dataclass(frozen=True)
class TextToTextClassification(_TextToText):
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


@dataclass(frozen=True)
class TextToTextMultiLabel(_TextToText):
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
