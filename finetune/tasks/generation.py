"""Batched generation with the KV cache, and decoding of padded id rows back to text."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from peft import PeftModel, PeftType
from torch import nn
from transformers import PreTrainedTokenizerBase

from finetune.schema import GenerationSpec

IGNORE = -100  # label padding, and the padding of generated rows gathered across batches


def generate(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             tokenizer: PreTrainedTokenizerBase, spec: GenerationSpec) -> torch.Tensor:
    """Generated token ids (B, new tokens) after the prompt; rows that ended early hold IGNORE."""
    settings = dict(
        max_new_tokens=spec.max_new_tokens, num_beams=spec.num_beams, length_penalty=spec.length_penalty,
        no_repeat_ngram_size=spec.no_repeat_ngram_size, do_sample=False, use_cache=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    if model.config.is_encoder_decoder:
        generated = model.generate(input_ids=input_ids, attention_mask=attention_mask, **settings)
    elif _has_soft_prompt(model):
        generated = _generate_after_soft_prompt(model, input_ids, attention_mask, settings)
    else:  # decoder-only models return the prompt too
        generated = model.generate(input_ids=input_ids, attention_mask=attention_mask, **settings)[:, input_ids.shape[1]:]
    return generated.masked_fill(generated == tokenizer.pad_token_id, IGNORE)


def _has_soft_prompt(model: nn.Module) -> bool:
    return isinstance(model, PeftModel) and model.active_peft_config.peft_type == PeftType.PROMPT_TUNING


def _generate_after_soft_prompt(model: PeftModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                settings: dict[str, Any]) -> torch.Tensor:
    """A decoder-only model continues [left padding][soft prompt][prompt tokens], row by row.

    Generating through the base model with the soft prompt already in the input embeddings gives
    every token the position the attention mask says (as for any left-padded batch) and feeds one
    new token per decoding step. peft's own route gives padded rows shifted positions (it drops
    position ids) and, with transformers 5.24, inserts the soft prompt again at every step.
    """
    base = model.get_base_model()
    soft_prompt = model.get_prompt(input_ids.shape[0]).to(base.dtype)  # (B, virtual tokens, width)
    embeddings = base.get_input_embeddings()(input_ids)
    virtual = torch.ones(soft_prompt.shape[1], dtype=attention_mask.dtype, device=attention_mask.device)
    rows, masks = [], []
    for row in range(input_ids.shape[0]):
        padding = int((attention_mask[row] == 0).sum())  # left padding: the first `padding` positions
        rows.append(torch.cat([embeddings[row, :padding], soft_prompt[row], embeddings[row, padding:]]))
        masks.append(torch.cat([attention_mask[row, :padding], virtual, attention_mask[row, padding:]]))
    return base.generate(inputs_embeds=torch.stack(rows), attention_mask=torch.stack(masks), **settings)


def decode(tokenizer: PreTrainedTokenizerBase, batches: list[np.ndarray]) -> list[str]:
    """Text of every row of every batch, without padding and special tokens."""
    return [tokenizer.decode(row[row >= 0], skip_special_tokens=True).strip() for rows in batches for row in rows]
