"""Task kinds: how texts are encoded and batched, which model class trains, how outputs are scored.

One class per (task, route); `build_task` picks it from the data set's task, the family's
architecture and whether the method needs the text-to-text route.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from finetune.schema import Run
from finetune.tasks.base import BatchOutput, ModelParts, Task
from finetune.tasks.classification import HeadClassification, HeadMultiLabel
from finetune.tasks.summarization import CausalSummarization, Seq2SeqSummarization
from finetune.tasks.text_to_text import TextToTextClassification, TextToTextMultiLabel

__all__ = ["BatchOutput", "ModelParts", "Task", "build_task"]


def build_task(run: Run, tokenizer: PreTrainedTokenizerBase, label_names: tuple[str, ...]) -> Task:
    """The task for this run; families list the methods that need the text-to-text route."""
    family, dataset = run.model, run.dataset
    head_parts = ModelParts(family.layers, family.head, family.peft_trainable)
    lm_parts = ModelParts(family.lm_layers or family.layers, (), ())
    if dataset.task == "summarization":
        kind = {"seq2seq": Seq2SeqSummarization, "causal": CausalSummarization}[family.architecture]  # Run checked it
        return kind(tokenizer, lm_parts, dataset=dataset, generation=run.generation)
    text_to_text = run.uses_text_to_text()
    if dataset.task == "multilabel":
        if text_to_text:
            return TextToTextMultiLabel(tokenizer, lm_parts, label_names)
        return HeadMultiLabel(tokenizer, head_parts, label_names, threshold=dataset.threshold,
                              tune_threshold=dataset.tune_threshold)
    if text_to_text:
        return TextToTextClassification(tokenizer, lm_parts, label_names)
    return HeadClassification(tokenizer, head_parts, label_names)
