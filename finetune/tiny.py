"""Tiny random-weight models of each family (2 layers, width 32) for smoke runs and tests: the
family's real tokenizer (and CLIP's image processor) with a model small enough to train a few steps
in a second.

    python -m finetune.tiny OUT_DIR [--tokenizers ../shared/models]

builds OUT_DIR/<family> for every family, with the tokenizer read from --tokenizers (folders named
after the Hub id, '/' as '-', or its name alone) when given, else from the Hub; `+smoke=tiny` runs use them through
FINETUNE_TINY_MODELS=OUT_DIR.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

import torch
import transformers as t
from torch import nn

_SMALL = dict(num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)

# family -> a random model whose sizes fit the family's real vocabulary and special tokens
TINY_MODELS: dict[str, Callable[[], nn.Module]] = {
    "bert": lambda: t.BertModel(t.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, **_SMALL)),
    "distilbert": lambda: t.DistilBertModel(t.DistilBertConfig(
        vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128)),
    "roberta": lambda: t.RobertaModel(t.RobertaConfig(
        vocab_size=50265, hidden_size=32, num_hidden_layers=2, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, **{**_SMALL, "max_position_embeddings": 130})),
    "albert": lambda: t.AlbertModel(t.AlbertConfig(
        vocab_size=30000, embedding_size=16, hidden_size=32, num_hidden_layers=2, **_SMALL)),
    "flan_t5": lambda: t.T5ForConditionalGeneration(t.T5Config(
        vocab_size=32128, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2,
        feed_forward_proj="gated-gelu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)),
    "gpt_neo": lambda: t.GPTNeoForCausalLM(t.GPTNeoConfig(
        vocab_size=50257, hidden_size=32, num_layers=2, num_heads=2, attention_types=[[["global", "local"], 1]],
        window_size=16, max_position_embeddings=128, bos_token_id=50256, eos_token_id=50256)),
    # CLIP's real image size (224 px in 32 px patches) and vocabulary, so the real preprocessing applies
    "clip": lambda: t.CLIPModel(t.CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                         pad_token_id=49407),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=224, patch_size=32),
        projection_dim=32)),
}
# today's decoders and ModernBERT, with GPT-Neo's vocabulary size: ../shared has no tokenizer of
# theirs, so the tests pair these architectures with GPT-Neo's tokenizer (the YAMLs name the real ones)
_DECODER = dict(vocab_size=50257, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, max_position_embeddings=128, bos_token_id=50256, eos_token_id=50256,
                tie_word_embeddings=True)
TINY_MODELS.update({
    "llama": lambda: t.LlamaForCausalLM(t.LlamaConfig(**_DECODER, head_dim=16)),
    "qwen2": lambda: t.Qwen2ForCausalLM(t.Qwen2Config(**_DECODER)),
    "qwen3": lambda: t.Qwen3ForCausalLM(t.Qwen3Config(**_DECODER, head_dim=16)),
    "gemma3": lambda: t.Gemma3ForCausalLM(t.Gemma3TextConfig(
        **{**_DECODER, "pad_token_id": 50256}, head_dim=16, sliding_window=16, layer_types=["sliding_attention", "full_attention"])),
    "modernbert": lambda: t.ModernBertModel(t.ModernBertConfig(
        vocab_size=50257, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=128, global_attn_every_n_layers=2, local_attention=16, pad_token_id=50256,
        bos_token_id=50256, eos_token_id=50256, cls_token_id=50256, sep_token_id=50256)),
})
TINY_MODELS["smollm2"] = TINY_MODELS["llama"]  # SmolLM2 is a Llama
TINY_MODELS["qwen2_instruct"] = TINY_MODELS["qwen2"]
TINY_MODELS["minilm"] = TINY_MODELS["bert"]  # MiniLM is a BERT with the same vocabulary
TINY_MODELS["flan_t5_small"] = TINY_MODELS["flan_t5"]


def save_tiny_model(family: str, directory: Path, seed: int = 0) -> Path:
    """Write the family's tiny random model (weights only) to `directory`; add the tokenizer files yourself."""
    torch.manual_seed(seed)  # the same weights whoever builds them first
    TINY_MODELS[family]().save_pretrained(directory)
    return directory


# families whose tiny model takes GPT-Neo's tokenizer in place of its own (which ../shared lacks)
STAND_INS = ("llama", "smollm2", "qwen2", "qwen2_instruct", "qwen3", "gemma3", "modernbert")
INSTRUCT = ("qwen2_instruct",)  # of those, the instruct checkpoints: their tokenizers write a chat template
TOKENIZERS = {  # family -> the Hub id of its tokenizer, and image processor (Flan-T5 shares T5's vocabulary)
    "minilm": "bert-base-uncased", "bert": "bert-base-uncased", "distilbert": "distilbert-base-uncased",
    "roberta": "roberta-base", "albert": "albert-base-v2", "flan_t5": "t5-small", "flan_t5_small": "t5-small",
    "gpt_neo": "EleutherAI/gpt-neo-125m", "clip": "openai/clip-vit-base-patch32",
    **{family: "EleutherAI/gpt-neo-125m" for family in STAND_INS},
}
# ChatML, as Qwen2.5's instruct checkpoints write it, for the stand-in tokenizer of qwen2_instruct
CHAT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _local_folder(root: Path, hub_id: str) -> Path | None:
    """The folder under `root` holding `hub_id`'s files: named after the id with '/' as '-', or its name alone."""
    return next((folder for name in (hub_id.replace("/", "-"), hub_id.split("/")[-1])
                 if (folder := root / name).is_dir()), None)


def as_stand_in(family: str, processor: Any) -> Any:
    """GPT-Neo's tokenizer made to stand in for `family`'s: it pads with its end of text, and an
    instruct family's writes the chat template (the real tokenizers have both)."""
    if family in STAND_INS:
        processor.pad_token = processor.eos_token
        if family in INSTRUCT:
            processor.chat_template = CHAT_TEMPLATE
    return processor


def main() -> None:
    """Build every family's tiny model with its real tokenizer under OUT_DIR."""
    parser = argparse.ArgumentParser(prog="python -m finetune.tiny", description="Tiny random models for +smoke=tiny.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--tokenizers", type=Path, help="folder of tokenizer folders, e.g. ../shared/models")
    args = parser.parse_args()
    for family in TINY_MODELS:
        hub_id = TOKENIZERS[family]
        local = _local_folder(args.tokenizers, hub_id) if args.tokenizers else None
        processor = as_stand_in(family, t.AutoProcessor.from_pretrained(local or hub_id))  # or CLIP's processor pair
        directory = save_tiny_model(family, args.out_dir / family)
        processor.save_pretrained(directory)
        print(f"{family}: {directory}")


if __name__ == "__main__":
    main()
