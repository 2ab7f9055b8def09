"""The frozen-feature cache: what runs on cached states is what runs through the frozen blocks; the
states are computed once and shared; a stale or partial set is never used."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from finetune.frozen.store import FeatureSet
from finetune.runner import execute

from conftest import FAMILIES

COMPUTED, REUSED = ": computed,", ": reused,"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv("FINETUNE_CACHE", str(directory))
    return directory


def feature_log(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "finetune.frozen"]


@pytest.mark.parametrize("method", ["method=head_only", "method=last_layers method.num_layers=1"])
def test_training_on_cached_states_matches_running_the_frozen_blocks(tiny_plan, tiny_bert_without_dropout, cache,
                                                                    tmp_path, caplog, method):
    caplog.set_level(logging.INFO)
    overrides = (*method.split(), f"model.path={tiny_bert_without_dropout}", "train.log_every_steps=1")
    cached = execute(tiny_plan(*overrides, output_dir=tmp_path / "cached"))
    assert sum(COMPUTED in line for line in feature_log(caplog)) == 3  # train, validation, test
    caplog.clear()
    uncached = execute(tiny_plan(*overrides, "train.feature_cache=false", output_dir=tmp_path / "uncached"))
    assert feature_log(caplog) == []

    losses = [loss for _, loss in cached.training["train_loss"]]
    assert losses == pytest.approx([loss for _, loss in uncached.training["train_loss"]], rel=1e-4)
    for split in ("validation", "test"):
        assert cached.metrics[split] == pytest.approx(uncached.metrics[split], rel=1e-4, abs=1e-6)


def test_none_evaluates_the_same_on_cached_states(tiny_plan, cache, tmp_path):
    cached = execute(tiny_plan("method=none", output_dir=tmp_path / "cached"))
    uncached = execute(tiny_plan("method=none", "train.feature_cache=false", output_dir=tmp_path / "uncached"))
    for split in ("validation", "test"):
        assert cached.metrics[split] == pytest.approx(uncached.metrics[split], rel=1e-5)


def test_runs_share_the_features_and_a_stale_or_partial_set_is_rebuilt(tiny_plan, cache, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    first = execute(tiny_plan("method=head_only", output_dir=tmp_path / "first"))
    assert sum(COMPUTED in line for line in feature_log(caplog)) == 3
    computed = first.frozen_features["train"]
    assert computed["status"] == "computed" and computed["seconds"] > 0 and computed["megabytes"] >= 0
    assert first.train_seconds == pytest.approx(first.training["train_seconds"] + computed["seconds"])
    sets = sorted(path for path in (cache / "features").iterdir())
    assert len(sets) == 3 and all((path / "meta.json").exists() for path in sets)

    caplog.clear()  # another seed and lr, and the evaluation of `none`: the same frozen weights and data
    second = execute(tiny_plan("method=head_only", "train.seed=7", "train.lr=1e-2", output_dir=tmp_path / "second"))
    assert second.frozen_features["train"] == {"status": "reused", "megabytes": computed["megabytes"], "seconds": 0.0}
    assert second.train_seconds == second.training["train_seconds"]
    execute(tiny_plan("method=none", output_dir=tmp_path / "third"))
    assert sum(REUSED in line for line in feature_log(caplog)) == 5
    assert not any(COMPUTED in line for line in feature_log(caplog))

    truncated = sets[0] / "states.bin"
    truncated.write_bytes(truncated.read_bytes()[:-4])
    meta = json.loads((sets[1] / "meta.json").read_text())
    (sets[1] / "meta.json").write_text(json.dumps({**meta, "key": "another"}))
    caplog.clear()
    execute(tiny_plan("method=head_only", output_dir=tmp_path / "fourth"))
    assert sum(COMPUTED in line for line in feature_log(caplog)) == 2
    assert all(FeatureSet.open(path, path.name) is not None for path in sets)


def test_what_changes_the_features_changes_the_key(tiny_plan, cache, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    execute(tiny_plan("method=head_only", "dataset.max_eval_samples=16", output_dir=tmp_path / "a"))
    caplog.clear()
    execute(tiny_plan("method=head_only", "dataset.max_eval_samples=16", "model.max_length=8", output_dir=tmp_path / "b"))
    assert sum(COMPUTED in line for line in feature_log(caplog)) == 3  # truncation changes every split
    caplog.clear()
    execute(tiny_plan("method=last_layers", "method.num_layers=1", "dataset.max_eval_samples=16", output_dir=tmp_path / "c"))
    assert sum(COMPUTED in line for line in feature_log(caplog)) == 3  # another boundary


@pytest.mark.parametrize("family", FAMILIES)
def test_last_layers_caches_the_blocks_below_where_replaying_them_is_exact(family_plan, family, cache, caplog):
    caplog.set_level(logging.INFO)
    results = execute(family_plan(family, "last_layers", "method.num_layers=1"))
    assert results.status == "completed"
    lines = feature_log(caplog)
    if family == "albert":  # one shared block: it trains whole, nothing below it is frozen
        assert lines == []
    elif family == "flan_t5":  # T5's later blocks take the relative position bias the first block computes
        assert len(lines) == 1 and "gives other logits with its first 1 blocks replayed" in lines[0]
    else:
        assert sum("(1 of 2 blocks)" in line and COMPUTED in line for line in lines) == 3, lines
    assert not list((cache / "features").glob("*.partial-*"))  # a set that failed its check leaves nothing


def test_svm_embeddings_reuse_the_pooled_embeddings_of_an_earlier_run(tiny_plan, cache, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    first = execute(tiny_plan("method=svm_embeddings", output_dir=tmp_path / "first"))
    second = execute(tiny_plan("method=svm_embeddings", "method.C=1.0", "train.seed=3", output_dir=tmp_path / "second"))
    uncached = execute(tiny_plan("method=svm_embeddings", "train.feature_cache=false", output_dir=tmp_path / "uncached"))
    embeddings = [record.getMessage() for record in caplog.records if record.getMessage().startswith("Embeddings of")]
    assert [line.split(":")[1].split()[0] for line in embeddings] == ["computed"] * 3 + ["reused"] * 3
    assert len(list((cache / "embeddings").glob("*.npy"))) == 3
    assert first.metrics == second.metrics
    for split in ("validation", "test"):
        assert uncached.metrics[split] == pytest.approx(first.metrics[split], rel=1e-4)

    execute(tiny_plan("method=svm_embeddings", "method.pooling=first", output_dir=tmp_path / "other"))
    assert len(list((cache / "embeddings").glob("*.npy"))) == 6  # another pooling, other vectors
