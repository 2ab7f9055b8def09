"""Build tiny random-weight models of every family for `+smoke=tiny` runs.

    python scripts/make_tiny_models.py OUT_DIR [--tokenizers ../shared/models]

Each OUT_DIR/<family> gets a 2-layer, 32-wide random model and the family's real tokenizer, read
from --tokenizers (folders named after the Hub id, '/' as '-') when given, else from the Hub.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from transformers import AutoTokenizer

from finetune.tiny import TINY_MODELS, save_tiny_model

TOKENIZERS = {  # family -> the Hub id of its tokenizer (Flan-T5 shares T5's vocabulary)
    "minilm": "bert-base-uncased", "bert": "bert-base-uncased", "distilbert": "distilbert-base-uncased",
    "roberta": "roberta-base", "albert": "albert-base-v2", "flan_t5": "t5-small", "flan_t5_small": "t5-small",
    "gpt_neo": "EleutherAI/gpt-neo-125m",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--tokenizers", type=Path, help="folder of tokenizer folders, e.g. ../shared/models")
    args = parser.parse_args()
    for family in TINY_MODELS:
        hub_id = TOKENIZERS[family]
        local = args.tokenizers / hub_id.replace("/", "-") if args.tokenizers else None
        tokenizer = AutoTokenizer.from_pretrained(local if local and local.is_dir() else hub_id)
        directory = save_tiny_model(family, args.out_dir / family)
        tokenizer.save_pretrained(directory)
        print(f"{family}: {directory}")


if __name__ == "__main__":
    main()
