"""Summarization (`dataset.task=summarization`): documents and reference summaries (two text
columns), scored by ROUGE. An encoder-decoder maps the document to its summary; a causal model
continues "document + separator" with the summary, trained on the summary tokens only."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, PreTrainedTokenizerBase

from finetune.errors import UserError
from finetune.metrics import rouge_metrics
from finetune.schema import DatasetSpec, GenerationSpec
from finetune.tasks import register_task
from finetune.tasks.base import BatchOutput, ModelParts, TaskKind, attended_tokens, lm_parts
from finetune.tasks.columns import LabelledSplits, SplitSource, require_column, require_strings
from finetune.tasks.generation import IGNORE, decode, generate


@dataclass(frozen=True)
class _Summarization:
    tokenizer: PreTrainedTokenizerBase
    parts: ModelParts
    dataset: DatasetSpec
    generation: GenerationSpec
    main_metric: str = "rougeL"

    @property
    def processor(self) -> PreTrainedTokenizerBase:
        return self.tokenizer

    def model_kwargs(self) -> dict[str, Any]:
        return {}

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return attended_tokens(batch)

    def positions_after_source(self) -> int:
        return 0

    def metrics(self, predictions: list[np.ndarray], references: list[np.ndarray]) -> dict[str, float]:
        return rouge_metrics(decode(self.tokenizer, predictions), decode(self.tokenizer, references))

    def samples(self, predictions: list[np.ndarray], references: list[np.ndarray]) -> list[dict[str, Any]]:
        pairs = zip(decode(self.tokenizer, references), decode(self.tokenizer, predictions))
        return [{"reference": reference, "generated": generated} for reference, generated in pairs]

    def readable(self, predictions: np.ndarray) -> list[dict[str, Any]]:
        return [{"summary": text} for text in decode(self.tokenizer, [predictions])]

    def calibrated(self, validation: dict[str, float]) -> _Summarization:
        return self

    def _targets(self, summaries: list[str]) -> list[list[int]]:
        return self.tokenizer(text_target=summaries, truncation=True, max_length=self.dataset.max_target_length)["input_ids"]


@dataclass(frozen=True)
class Seq2SeqSummarization(_Summarization):
    """Flan-T5 and other encoder-decoders: document in, summary out."""

    model_class: type = AutoModelForSeq2SeqLM
    peft_task_type: str = "SEQ_2_SEQ_LM"

    def encode(self, texts: list[str], targets: list[Any], max_length: int) -> dict[str, list]:
        encoding = self.tokenizer(texts, truncation=True, max_length=max_length)
        truncated = [len(ids) >= max_length for ids in encoding["input_ids"]]
        return {**encoding, "labels": self._targets(targets), "truncated": truncated}

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return DataCollatorForSeq2Seq(self.tokenizer, label_pad_token_id=IGNORE)(features)

    def collate_eval(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.collate(features)

    def evaluate_batch(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> BatchOutput:
        loss = model(**batch).loss
        generated = generate(model, batch["input_ids"], batch["attention_mask"], self.tokenizer, self.generation)
        return BatchOutput(loss, generated, batch["labels"])


@dataclass(frozen=True)
class CausalSummarization(_Summarization):
    """GPT-style decoders: one sequence `document separator summary <eos>`; the loss covers the
    summary only. Training batches pad on the right; generation prompts pad on the left, so that
    every row continues from its last real token."""

    model_class: type = AutoModelForCausalLM
    peft_task_type: str = "CAUSAL_LM"
    chat: bool = False  # model.chat_template: the prompt in the tokenizer's chat template

    def positions_after_source(self) -> int:
        # training: separator (or the chat template's tokens) + summary + <eos>; generation: the same + the new tokens
        after_separator = max(self.dataset.max_target_length + 1, self.generation.max_new_tokens)
        return len(self._chat_prompt([]) if self.chat else self._separator()) + after_separator

    def _chat_prompt(self, source: list[int]) -> list[int]:
        """An instruct checkpoint's prompt: the instruction and the (truncated) document as the user's
        turn in the tokenizer's chat template, up to where the assistant's answer starts."""
        before, after = self._chat_parts
        return before + source + after

    @cached_property
    def _chat_parts(self) -> tuple[list[int], list[int]]:
        """The template's tokens before and after the document, which goes in as its own token ids
        (decoding and re-encoding them could come out longer than the length budget)."""
        if not self.tokenizer.chat_template:
            raise UserError(f"model.chat_template: the tokenizer of {self.tokenizer.name_or_path} has no chat template; "
                            "set model.chat_template=false")
        marker = "\u2063DOCUMENT\u2063"  # invisible separators: no template or instruction writes them
        turn = [{"role": "user", "content": f"{self.dataset.instruction}\n\n{marker}"}]
        before, after = self.tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=False).split(marker)
        before_ids, after_ids = (self.tokenizer(part, add_special_tokens=False)["input_ids"] for part in (before, after))
        return before_ids, after_ids

    def _separator(self) -> list[int]:
        return self.tokenizer(self.dataset.summary_separator, add_special_tokens=False)["input_ids"]

    def encode(self, texts: list[str], targets: list[Any], max_length: int) -> dict[str, list]:
        if self.chat:  # the template's instruction says what dataset.source_prefix would
            texts = [text.removeprefix(self.dataset.source_prefix) for text in texts]
        sources = self.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        eos = [self.tokenizer.eos_token_id]
        prompts = [self._chat_prompt(source) for source in sources] if self.chat else \
            [source + self._separator() for source in sources]
        summaries = [ids + eos for ids in self._targets(targets)]
        return {
            "input_ids": [prompt + summary for prompt, summary in zip(prompts, summaries)],
            "labels": [[IGNORE] * len(prompt) + summary for prompt, summary in zip(prompts, summaries)],
            "prompt_length": [len(prompt) for prompt in prompts],
            "truncated": [len(source) >= max_length for source in sources],
        }

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids = [f["input_ids"] for f in features]
        return {
            "input_ids": _pad(input_ids, self.tokenizer.pad_token_id, left=False),
            "attention_mask": _pad([[1] * len(ids) for ids in input_ids], 0, left=False),
            "labels": _pad([f["labels"] for f in features], IGNORE, left=False),
        }

    def collate_eval(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        prompts = [f["input_ids"][: f["prompt_length"]] for f in features]
        return {
            **self.collate(features),
            "prompt_ids": _pad(prompts, self.tokenizer.pad_token_id, left=True),
            "prompt_mask": _pad([[1] * len(ids) for ids in prompts], 0, left=True),
            "references": _pad([f["labels"][f["prompt_length"]:] for f in features], IGNORE, left=False),
        }

    def evaluate_batch(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> BatchOutput:
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        generated = generate(model, batch["prompt_ids"], batch["prompt_mask"], self.tokenizer, self.generation)
        return BatchOutput(loss, generated, batch["references"])


def _pad(rows: list[list[int]], value: int, left: bool) -> torch.Tensor:
    width = max(len(row) for row in rows)
    padded = [[value] * (width - len(row)) + row if left else row + [value] * (width - len(row)) for row in rows]
    return torch.tensor(padded, dtype=torch.long)


@register_task
class Summarization(TaskKind):
    name = "summarization"
    generates_text = True
    pipeline_tag = "text-generation"

    def refusal(self, run) -> str | None:
        if run.model.architecture not in ("seq2seq", "causal"):
            return (f"dataset.task: summarization needs a seq2seq or causal model; model={run.model.name} is "
                    f"{run.model.architecture} (try model=flan_t5 or model=gpt_neo)")
        return None

    def target_column(self, dataset: Dataset, spec: DatasetSpec, source: SplitSource) -> tuple[Dataset, str]:
        require_column(dataset, "summary_column", spec.summary_column, source)
        require_strings(dataset, "summary_column", spec.summary_column, source)
        return dataset, spec.summary_column

    def labelled(self, splits: dict[str, Dataset], spec: DatasetSpec) -> LabelledSplits:
        return LabelledSplits({role: split.rename_column("raw_label", "labels") for role, split in splits.items()}, ())

    def placeholder_target(self, label_names: tuple[str, ...]) -> Any:
        return ""

    def build(self, run, tokenizer: PreTrainedTokenizerBase, label_names: tuple[str, ...]):
        if run.model.architecture == "causal":  # refusal checked it is this or seq2seq
            return CausalSummarization(tokenizer, lm_parts(run), dataset=run.dataset, generation=run.generation,
                                       chat=run.model.chat_template)
        return Seq2SeqSummarization(tokenizer, lm_parts(run), dataset=run.dataset, generation=run.generation)
