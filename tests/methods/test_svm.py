"""Classic baselines: TF-IDF + SVM and frozen embeddings + SVM, scored and saved like every run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

from finetune.errors import UserError
from finetune.runner import execute

from conftest import EMOTION_WORDS


def _rows(directory: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (directory / f"{split}.jsonl").read_text().splitlines()]


def test_tfidf_svm_scores_what_scikit_learn_scores_and_saves_its_weights(tiny_plan, sentiment_dir):
    plan = tiny_plan("method=svm_tfidf", "method.min_df=1")
    results = execute(plan)

    assert results.status == "completed" and results.main_metric == "accuracy"
    train, test = _rows(sentiment_dir, "train"), _rows(sentiment_dir, "test")
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True).fit([r["text"] for r in train])
    svm = LinearSVC().fit(vectorizer.transform([r["text"] for r in train]), [r["label"] for r in train])
    expected = np.mean(svm.predict(vectorizer.transform([r["text"] for r in test])) == [r["label"] for r in test])
    assert results.metrics["test"]["accuracy"] == pytest.approx(expected)
    assert results.metrics["test"]["accuracy"] > 0.9  # the polarity words separate the classes

    saved = np.load(Path(plan.run.output_dir) / "model" / "svm.npz")
    vocabulary = json.loads((Path(plan.run.output_dir) / "model" / "tfidf.json").read_text())["vocabulary"]
    assert saved["coef"].shape == (1, len(vocabulary))
    assert results.params == {"trainable": len(vocabulary) + 1, "total": len(vocabulary) + 1}
    assert results.train_seconds > 0
    # the same results fields as a trained run: nothing is cut (no token limit), fp32, no model loaded
    assert (results.truncated, results.precision, results.model_source, results.training) == ({}, "fp32", None, {})


def test_tfidf_svm_is_one_vs_rest_for_multilabel(compose_plan, emotion_dir):
    plan = compose_plan("method=svm_tfidf", "method.min_df=1", "dataset=local", f"dataset.path={emotion_dir}",
                      "dataset.task=multilabel", "dataset.label_column=labels",
                      f"dataset.label_names=[{','.join(EMOTION_WORDS)}]", "hardware=cpu")
    results = execute(plan)
    assert results.main_metric == "jaccard"
    assert results.metrics["test"]["jaccard"] > 0.9
    assert np.load(Path(plan.run.output_dir) / "model" / "svm.npz")["coef"].shape[0] == len(EMOTION_WORDS)


@pytest.mark.parametrize("pooling", ["mean", "first"])
def test_frozen_embeddings_svm_counts_the_encoder_as_frozen(tiny_plan, tiny_bert, pooling):
    from transformers import AutoModel

    results = execute(tiny_plan("method=svm_embeddings", f"method.pooling={pooling}"))
    assert results.status == "completed"
    assert 0.0 <= results.metrics["test"]["accuracy"] <= 1.0
    assert results.params["trainable"] == 32 + 1  # one weight per embedding dimension, one bias
    encoder = sum(p.numel() for p in AutoModel.from_pretrained(tiny_bert).parameters())
    assert results.params["total"] == 32 + 1 + encoder  # plus the tiny BERT's frozen weights


def test_frozen_embeddings_svm_counts_the_texts_it_cut(tiny_plan):
    results = execute(tiny_plan("method=svm_embeddings", "model.max_length=6"))
    truncated = results.truncated
    assert truncated["max_length"] == 6 and set(truncated) == {"max_length", "train", "validation", "test"}
    assert 0 < truncated["train"] <= 160  # texts of 3 to 11 words: many reach 6 tokens with [CLS] and [SEP]


def test_baselines_refuse_summarization(compose_plan, article_dir):
    with pytest.raises(UserError, match="^method: svm_tfidf is a classifier; it does not apply to dataset.task=summarization$"):
        compose_plan("method=svm_tfidf", "dataset=cnn_dailymail", f"dataset.path={article_dir}")
