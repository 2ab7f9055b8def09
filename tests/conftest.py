"""Shared fixtures: a tiny random BERT built from the real bert-base-uncased vocabulary, small data
sets written on the fly, and `compose_run`, which composes the real conf/ the way `finetune` does."""

from __future__ import annotations

import gzip
import json
import random
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch
from hydra import compose, initialize_config_dir

from finetune.cli import CONF_DIR
from finetune.schema import Run, build_run

FIXTURES = Path(__file__).parent / "fixtures"
POSITIVE = "good great wonderful superb moving delightful charming brilliant fun touching".split()
NEGATIVE = "bad awful boring dull tedious clumsy stupid bland lifeless weak".split()
FILLER = "the movie film story plot acting a an is was this that it and".split()


def sentiment_rows(count: int, seed: int) -> list[dict]:
    """Short texts whose label is given by the polarity words they contain: easy to learn."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        label = index % 2
        words = rng.sample(FILLER, rng.randint(2, 8)) + rng.sample(POSITIVE if label else NEGATIVE, rng.randint(1, 3))
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _tiny_models():
    """family -> (tokenizer folders, random model): 2 layers, width 32, the family's real vocabulary."""
    import transformers as t

    small = dict(num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    return {
        "bert": (["bert"], lambda: t.BertModel(t.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, **small))),
        "distilbert": (["bert", "distilbert"], lambda: t.DistilBertModel(t.DistilBertConfig(
            vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128))),
        "roberta": (["roberta"], lambda: t.RobertaModel(t.RobertaConfig(
            vocab_size=50265, hidden_size=32, num_hidden_layers=2, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
            eos_token_id=2, **{**small, "max_position_embeddings": 130}))),
        "albert": (["albert"], lambda: t.AlbertModel(t.AlbertConfig(
            vocab_size=30000, embedding_size=16, hidden_size=32, num_hidden_layers=2, **small))),
        "flan_t5": (["t5"], lambda: t.T5ForConditionalGeneration(t.T5Config(
            vocab_size=32128, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2,
            feed_forward_proj="gated-gelu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))),
        "gpt_neo": (["roberta", "gpt_neo"], lambda: t.GPTNeoForCausalLM(t.GPTNeoConfig(
            vocab_size=50257, hidden_size=32, num_layers=2, num_heads=2, attention_types=[[["global", "local"], 1]],
            window_size=16, max_position_embeddings=128, bos_token_id=50256, eos_token_id=50256))),
    }


FAMILIES = ("bert", "distilbert", "roberta", "albert", "flan_t5", "gpt_neo")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Callable[[str], Path]:
    """tiny_model(family) -> a directory with a random-weight model and the family's real tokenizer files.

    Later tokenizer folders override earlier ones (gpt_neo takes roberta's byte-identical merges.txt).
    """
    built: dict[str, Path] = {}

    def build(family: str) -> Path:
        if family not in built:
            folders, make_model = _tiny_models()[family]
            directory = tmp_path_factory.mktemp(f"tiny-{family}")
            torch.manual_seed(0)  # the same weights whichever test builds the model first
            make_model().save_pretrained(directory)
            for folder in folders:
                for source in (FIXTURES / "tokenizers" / folder).iterdir():
                    if source.suffix == ".gz":
                        with gzip.open(source) as packed:
                            (directory / source.stem).write_bytes(packed.read())
                    else:
                        shutil.copy(source, directory / source.name)
            built[family] = directory
        return built[family]

    return build


@pytest.fixture(scope="session")
def tiny_bert(tiny_model) -> Path:
    """A 2-layer, 32-wide random BERT (about 1M parameters) with the real uncased vocabulary."""
    return tiny_model("bert")


@pytest.fixture(scope="session")
def sentiment_dir(tmp_path_factory) -> Path:
    """train/validation/test jsonl with 160/48/48 separable rows."""
    directory = tmp_path_factory.mktemp("sentiment")
    for split, count, seed in (("train", 160, 0), ("validation", 48, 1), ("test", 48, 2)):
        write_jsonl(directory / f"{split}.jsonl", sentiment_rows(count, seed))
    return directory


@pytest.fixture
def compose_run(tmp_path) -> Callable[..., Run]:
    """Compose conf/ with overrides, as `finetune OVERRIDES` would, into a Run writing to tmp_path."""

    def compose_with(*overrides: str, output_dir: Path | None = None) -> Run:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            config = compose(
                config_name="config",
                overrides=[*overrides, f"output_dir={output_dir or tmp_path / 'run'}", "overrides=[]"],
            )
        return build_run(config)

    return compose_with


@pytest.fixture
def tiny_run(compose_run, tiny_bert, sentiment_dir) -> Callable[..., Run]:
    """A Run of the tiny BERT on the sentiment data; extra overrides come last and win."""

    def make(*overrides: str, output_dir: Path | None = None) -> Run:
        return compose_run(
            "model=bert", f"model.path={tiny_bert}", "model.max_length=32",
            "dataset=local", f"dataset.path={sentiment_dir}",
            "hardware=cpu", "train.batch_size=16", "train.lr=2e-3", "train.epochs=2",
            *overrides, output_dir=output_dir,
        )

    return make


EMOTION_WORDS = {"joy": "happy glad delighted", "anger": "furious angry mad", "fear": "scared afraid terrified"}


def emotion_rows(count: int, seed: int) -> list[dict]:
    """Texts carrying any subset of three emotions, each signalled by its own words; `labels` is 0/1 per emotion."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        flags = [rng.random() < 0.4 for _ in EMOTION_WORDS]
        words = rng.sample(FILLER, rng.randint(1, 4))
        words += [word for name, on in zip(EMOTION_WORDS, flags) if on for word in rng.sample(EMOTION_WORDS[name].split(), 2)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "labels": [int(flag) for flag in flags]})
    return rows


@pytest.fixture(scope="session")
def emotion_dir(tmp_path_factory) -> Path:
    """train/validation/test jsonl (160/48/48) of multilabel rows with a `labels` list column."""
    directory = tmp_path_factory.mktemp("emotions")
    for split, count, seed in (("train", 160, 0), ("validation", 48, 1), ("test", 48, 2)):
        write_jsonl(directory / f"{split}.jsonl", emotion_rows(count, seed))
    return directory


def article_rows(count: int, seed: int) -> list[dict]:
    """CNN/DailyMail-shaped rows: an `article` of 20-60 words whose first sentence is its `highlights`."""
    rng = random.Random(seed)
    vocabulary = POSITIVE + NEGATIVE + FILLER
    rows = []
    for _ in range(count):
        lead = " ".join(rng.choices(vocabulary, k=5)) + "."
        body = " ".join(rng.choices(vocabulary, k=rng.randint(15, 55))) + "."
        rows.append({"article": f"{lead} {body}", "highlights": lead})
    return rows


@pytest.fixture(scope="session")
def article_dir(tmp_path_factory) -> Path:
    """train/validation/test jsonl (48/8/8) with article and highlights columns."""
    directory = tmp_path_factory.mktemp("articles")
    for split, count, seed in (("train", 48, 0), ("validation", 8, 1), ("test", 8, 2)):
        write_jsonl(directory / f"{split}.jsonl", article_rows(count, seed))
    return directory
