"""Length-grouped batches: complete, reproducible, and with little padding."""

from __future__ import annotations

import random

from finetune.batching import LengthGroupedBatches, sorted_batches


def padding(batches: list[list[int]], lengths: list[int]) -> int:
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


def test_every_index_once_per_epoch_and_order_fixed_by_seed_and_epoch():
    lengths = [random.Random(i).randint(5, 80) for i in range(1000)]
    sampler = LengthGroupedBatches(lengths, batch_size=32, seed=3)
    first = list(sampler)
    assert sorted(i for b in first for i in b) == list(range(1000))
    assert len(first) == len(sampler) == 32
    assert [len(b) for b in first[-2:]] == [32, 1000 % 32]  # the one short batch last
    assert list(LengthGroupedBatches(lengths, 32, seed=3)) == first
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_grouping_by_length_cuts_padding_against_random_batches():
    rng = random.Random(0)
    lengths = [rng.randint(5, 80) for _ in range(3200)]
    grouped = list(LengthGroupedBatches(lengths, batch_size=32, seed=0))
    order = list(range(3200))
    rng.shuffle(order)
    shuffled = [order[i : i + 32] for i in range(0, 3200, 32)]
    assert padding(grouped, lengths) < 0.2 * padding(shuffled, lengths)


def test_evaluation_batches_are_sorted_longest_first():
    lengths = [3, 9, 1, 7, 5]
    assert sorted_batches(lengths, 2) == [[1, 3], [4, 0], [2]]


def test_long_texts_are_truncated_and_counted_in_the_log(tiny_bert, caplog):
    import logging

    from datasets import Dataset
    from transformers import AutoTokenizer

    from finetune.tasks.encoding import tokenize
    from finetune.tasks import ModelParts
    from finetune.tasks.classification import HeadClassification

    texts = ["short one", "a much longer text " * 20, "another very long text " * 20]
    splits = {"train": Dataset.from_dict({"text": texts, "labels": [0, 1, 0]})}
    with caplog.at_level(logging.INFO, logger="finetune.tasks.encoding"):
        task = HeadClassification(AutoTokenizer.from_pretrained(tiny_bert), ModelParts("bert.encoder.layer", (), ()), ("a", "b"))
        tokenized = tokenize(splits, task, max_length=16)
    assert max(tokenized.splits["train"]["length"]) == 16
    assert tokenized.truncated == {"train": 2}
    assert "train: 2 of 3 texts reached max_length=16 tokens and were truncated" in caplog.text
