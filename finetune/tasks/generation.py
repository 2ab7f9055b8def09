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
    else:
        generated = _generate_decoder_only(model, input_ids, attention_mask, settings)
    return generated.masked_fill(generated == tokenizer.pad_token_id, IGNORE)


def _generate_decoder_only(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           settings: dict[str, Any]) -> torch.Tensor:
    """A decoder-only model continues its left-padded prompts from their input embeddings.

    From embeddings, `generate` returns the new tokens only, and `no_repeat_ngram_size` looks at
    them alone, as for an encoder-decoder (not at the document being summarized). A prompt-tuning
    soft prompt goes between each row's left padding and its tokens, and the base model generates:
    positions then come from the attention mask, as for any left-padded batch, and every decoding
    step feeds one new token. (peft's own route gives padded rows shifted positions, since it drops
    position ids, and with transformers 5.24 inserts the soft prompt again at every step.)
    """
    soft_prompted = isinstance(model, PeftModel) and model.active_peft_config.peft_type in (PeftType.PROMPT_TUNING, PeftType.P_TUNING)
    generator = model.get_base_model() if soft_prompted else model
    embeddings = generator.get_input_embeddings()(input_ids)
    if not soft_prompted:
        return generator.generate(inputs_embeds=embeddings, attention_mask=attention_mask, **settings)
    soft_prompt = model.get_prompt(input_ids.shape[0]).to(embeddings.dtype)  # (B, virtual tokens, width)
    virtual = torch.ones(soft_prompt.shape[1], dtype=attention_mask.dtype, device=attention_mask.device)
    rows, masks = [], []
    for row in range(input_ids.shape[0]):
        padding = int((attention_mask[row] == 0).sum())  # left padding: the first `padding` positions
        rows.append(torch.cat([embeddings[row, :padding], soft_prompt[row], embeddings[row, padding:]]))
        masks.append(torch.cat([attention_mask[row, :padding], virtual, attention_mask[row, padding:]]))
    return generator.generate(inputs_embeds=torch.stack(rows), attention_mask=torch.stack(masks), **settings)


def decode(tokenizer: PreTrainedTokenizerBase, batches: list[np.ndarray]) -> list[str]:
    """Text of every row of every batch, without padding and special tokens."""
    return [tokenizer.decode(row[row >= 0], skip_special_tokens=True).strip() for rows in batches for row in rows]
