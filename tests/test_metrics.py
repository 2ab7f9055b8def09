"""The metric functions against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from finetune.metrics import best_threshold, classification_metrics, multilabel_metrics, rouge_metrics


def test_multilabel_metrics_match_hand_computed_values():
    labels = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 0]])
    predicted = np.array([[1, 1, 1], [0, 1, 0], [0, 0, 0], [0, 0, 1]])
    metrics = multilabel_metrics(predicted, labels, ("a", "b", "c"))
    # rows: |2 of 3|, exact, both empty (counts 1), nothing shared
    assert metrics["jaccard"] == pytest.approx((2 / 3 + 1 + 1 + 0) / 4)
    assert metrics["subset_accuracy"] == pytest.approx(2 / 4)
    # micro: tp 3 (a, c in row 0; b in row 1), fp 2, fn 2 -> P = R = 3/5
    assert metrics["micro_f1"] == pytest.approx(3 / 5)
    # a: tp1 fn1 -> 2/3; b: tp1 fp1 fn1 -> 1/2; c: tp1 fp1 -> 2/3
    assert metrics["f1_a"] == pytest.approx(2 / 3)
    assert metrics["f1_b"] == pytest.approx(1 / 2)
    assert metrics["f1_c"] == pytest.approx(2 / 3)
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)


def test_best_threshold_picks_the_cut_between_the_classes():
    probabilities = np.array([[0.9, 0.2], [0.35, 0.8], [0.3, 0.1]])
    labels = np.array([[1, 0], [1, 1], [0, 0]])
    threshold = best_threshold(probabilities, labels)
    assert 0.3 <= threshold < 0.35  # above 0.3 (a negative), below 0.35 (a positive)
    assert multilabel_metrics(probabilities > threshold, labels, ("a", "b"))["jaccard"] == 1.0


def test_classification_metrics_of_argmax_predictions():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    metrics = classification_metrics(logits, np.array([0, 1, 1, 1]))
    assert metrics["accuracy"] == 0.75
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_rouge_of_identical_disjoint_and_partly_shared_summaries():
    assert rouge_metrics(["the cat sat."], ["the cat sat."])["rouge1"] == pytest.approx(100)
    assert rouge_metrics(["dogs bark"], ["the cat sat."])["rouge2"] == 0
    half = rouge_metrics(["the cat"], ["the cat sat on mats"])  # P 2/2, R 2/5
    assert half["rouge1"] == pytest.approx(100 * 2 * (1 * 0.4) / 1.4)
    assert half["summary_words"] == 2
    # stemming: "running" and "runs" both stem to "run"
    assert rouge_metrics(["dog running"], ["dog runs"])["rouge1"] == pytest.approx(100)


def test_rouge_lsum_compares_sentence_by_sentence():
    reference = "the cat sat.\nthe dog ran."
    swapped = "the dog ran. the cat sat."
    metrics = rouge_metrics([swapped], [reference])
    assert metrics["rougeLsum"] == pytest.approx(100)
    assert metrics["rougeL"] < 100
