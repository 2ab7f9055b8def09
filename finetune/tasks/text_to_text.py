"""The text-to-text route shared by classification and multilabel: an encoder-decoder (Flan-T5
style) learns to write label names, for the methods a family lists in `text_to_text_methods`
(peft's prompt and prefix tuning refuse T5's classification head)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, PreTrainedTokenizerBase

from finetune.tasks.base import ModelParts, attended_tokens, label_config
from finetune.tasks.generation import IGNORE

@dataclass(frozen=True)
class TextToText:
    tokenizer: PreTrainedTokenizerBase
    parts: ModelParts
    label_names: tuple[str, ...]
    model_class: type = AutoModelForSeq2SeqLM
    peft_task_type: str = "SEQ_2_SEQ_LM"

    @property
    def processor(self) -> PreTrainedTokenizerBase:
        return self.tokenizer

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

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return attended_tokens(batch)

    def samples(self, predictions: list[np.ndarray], references: list[np.ndarray]) -> list[dict[str, Any]]:
        return []

    def calibrated(self, validation: dict[str, float]) -> TextToText:
        return self
