"""What every task provides the engine and the methods."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from finetune.tasks.columns import SplitSource, require_column, require_strings, warn_empty_texts

from finetune.embeddings import FeatureSource, text_embeddings

if TYPE_CHECKING:
    from pathlib import Path

    from datasets import Dataset

    from finetune.schema import DatasetSpec, Run
    from finetune.tasks.columns import LabelledSplits


@dataclass(frozen=True)
class ModelParts:
    """Module paths in the task's model class, which the methods freeze or train."""

    layers: str  # the ModuleList of transformer blocks (last_layers)
    head: tuple[str, ...]  # trained by head_only and last_layers; empty for language-model heads
    new_modules: tuple[str, ...]  # initialised at load time: peft keeps them trainable


@dataclass(frozen=True)
class BatchOutput:
    """One evaluation batch: mean loss, predictions and references (rows padded with -100 where ragged)."""

    loss: torch.Tensor
    predictions: torch.Tensor
    references: torch.Tensor


class Task(Protocol):
    """What the engine needs to know about a task."""

    tokenizer: PreTrainedTokenizerBase
    parts: ModelParts
    model_class: type  # a transformers Auto class, or a model class of the task's own
    peft_task_type: str | None  # peft's TaskType name; None: a plain PeftModel around the task's own class
    main_metric: str  # higher is better; selects the best epoch and early-stops

    @property
    def processor(self) -> Any:
        """What turns raw inputs into model inputs and is saved beside the model: the tokenizer, or a
        processor holding it and an image processor."""
        ...

    def positions_after_source(self) -> int:
        """Positions a sequence uses beyond its source tokens (a causal model's summary, say)."""
        ...

    def model_kwargs(self) -> dict[str, Any]:
        """Keys set in the model's config before loading: head size and label names for classifiers
        (CLIP: the class prompts' token ids)."""
        ...

    def encode(self, texts: list[str], targets: list[Any], max_length: int) -> dict[str, list]:
        """Token ids and training labels; `truncated` flags inputs cut at max_length. A `length` list,
        where given, orders batches (else the token count does)."""
        ...

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """A training batch: exactly the model's keyword arguments."""
        ...

    def collate_eval(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]: ...

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | int:
        """Non-padding tokens in a training batch, for tokens/s (0 where inputs are not tokens)."""
        ...

    def evaluate_batch(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> BatchOutput: ...

    def metrics(self, predictions: list[np.ndarray], references: list[np.ndarray]) -> dict[str, float]:
        """Metrics over all evaluation batches."""
        ...

    def samples(self, predictions: list[np.ndarray], references: list[np.ndarray]) -> list[dict[str, Any]]:
        """Readable predictions next to references (generated text); empty where not useful."""
        ...

    def readable(self, predictions: np.ndarray) -> list[dict[str, Any]]:
        """One evaluation batch's predictions as users read them: label and probabilities, or text."""
        ...

    def calibrated(self, validation: dict[str, float]) -> Task:
        """The task as the test split should see it, given the validation metrics (tuned threshold)."""
        ...


def attended_tokens(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Tokens a text batch attends to: its attention mask's sum, counted on the device (no sync)."""
    return batch["attention_mask"].sum()


def label_config(label_names: tuple[str, ...]) -> dict[str, Any]:
    """The label names as a model config carries them (and pipelines read them)."""
    return {"id2label": dict(enumerate(label_names)), "label2id": {name: index for index, name in enumerate(label_names)}}


def single_label_outputs(logits: np.ndarray, label_names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The arg-max label and the softmax probability of every label, per row."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
    return [{"label": label_names[int(row.argmax())],
             "probabilities": dict(zip(label_names, row.astype(float).round(6).tolist()))} for row in probabilities]


class TaskKind:
    """A kind of task (`dataset.task`), one module each: which data columns it reads and how its
    labels are made, what it refuses, which model route (a `Task`) runs it, what `finetune-predict`
    encodes and what `finetune-export` tags. Nothing outside the module switches on its name."""

    name: ClassVar[str]
    generates_text: ClassVar[bool] = False  # evaluation generates text, so generation.* matters
    pipeline_tag: ClassVar[str]  # the Hub pipeline an export declares (text2text-generation for seq2seq LMs)
    input_name: ClassVar[str] = "text"  # what an input is; finetune-predict echoes it under this key
    decodes_in_loader: ClassVar[bool] = False  # inputs are decoded per batch (images), in loader worker processes

    def generates(self, run: Run) -> bool:
        """Whether evaluating `run` generates text (the kind does, or the family's text-to-text route),
        so that `generation.*` changes its results."""
        return self.generates_text or run.uses_text_to_text()

    def refusal(self, run: Run) -> str | None:
        """Why this kind cannot run `run` (e.g. a family of the wrong architecture), or None. The
        default: a text task refuses a vision-language family."""
        if run.model.architecture == "vision_language":
            return (f"dataset.task: {run.dataset.task} takes texts; model={run.model.name} classifies images "
                    "(use dataset.task=image_classification, e.g. dataset=tiny_imagenet)")
        return None

    def read_local(self, directory: Path, spec: DatasetSpec) -> dict[str, Dataset] | None:
        """Splits from a layout of the kind's own under `dataset.path` (an image folder), or None for
        the usual train/validation/test files."""
        return None

    def input_column(self, dataset: Dataset, spec: DatasetSpec, source: SplitSource) -> tuple[Dataset, str]:
        """The split (checked, with any column the kind derives) and the name of its input column."""
        require_column(dataset, "text_column", spec.text_column, source)
        require_strings(dataset, "text_column", spec.text_column, source)
        warn_empty_texts(dataset, "text_column", spec.text_column, source)
        return dataset, spec.text_column

    def target_column(self, dataset: Dataset, spec: DatasetSpec, source: SplitSource) -> tuple[Dataset, str]:
        """The split (with any column the kind derives) and the name of the column holding its targets."""
        raise NotImplementedError

    def labelled(self, splits: dict[str, Dataset], spec: DatasetSpec) -> LabelledSplits:
        """The splits with `raw_label` turned into `labels`, and the label names."""
        raise NotImplementedError

    def placeholder_target(self, label_names: tuple[str, ...]) -> Any:
        """A target for encoding inputs that have none (finetune-predict)."""
        raise NotImplementedError

    def frozen_embeddings(self, run: Run, pooling: str, source: str, device: torch.device) -> FeatureSource:
        """The frozen model's embedding of each input, for the SVM baseline: pooled token states of texts."""
        return text_embeddings(run, pooling, source, device)

    def build(self, run: Run, tokenizer: PreTrainedTokenizerBase, label_names: tuple[str, ...]) -> Task:
        """The model route for this run (head or text-to-text, seq2seq or causal)."""
        raise NotImplementedError


def head_parts(run: Run) -> ModelParts:
    """The family's modules in its classification-head model."""
    family = run.model
    return ModelParts(family.layers, family.head, family.peft_trainable)


def lm_parts(run: Run) -> ModelParts:
    """The family's modules in its language-model class (no head of ours to train)."""
    return ModelParts(run.model.lm_layers or run.model.layers, (), ())
