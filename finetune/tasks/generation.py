"""Batched generation with the KV cache, and decoding of padded id rows back to text."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from finetune.schema import GenerationSpec

IGNORE = -100  # label padding, and the padding of generated rows gathered across batches


def generate(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             tokenizer: PreTrainedTokenizerBase, spec: GenerationSpec) -> torch.Tensor:
    """Generated token ids (B, new tokens) after the prompt; rows that ended early hold IGNORE."""
    generated = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=spec.max_new_tokens,
        num_beams=spec.num_beams, length_penalty=spec.length_penalty, no_repeat_ngram_size=spec.no_repeat_ngram_size,
        do_sample=False, use_cache=True, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    if not model.config.is_encoder_decoder:  # decoder-only models return the prompt too
        generated = generated[:, input_ids.shape[1]:]
    return generated.masked_fill(generated == tokenizer.pad_token_id, IGNORE)


def decode(tokenizer: PreTrainedTokenizerBase, batches: list[np.ndarray]) -> list[str]:
    """Text of every row of every batch, without padding and special tokens."""
    return [tokenizer.decode(row[row >= 0], skip_special_tokens=True).strip() for rows in batches for row in rows]
