"""The plan: a composed config resolved once into its run, method and task kind, with every check
that spans parts; and the identity (config_hash) that lets existing runs resume and be recognised."""

from __future__ import annotations

import pytest

from finetune.errors import UserError
from finetune.methods.partial import HeadOnly
from finetune.tasks.summarization import Summarization

# config_hash of these configs as finetune computed it before the plan existed (commit 37c51c6):
# a run dir written then must still resume, and a completed one still be recognised as complete
EARLIER_HASHES = {
    ("dataset.path=/d",): "6127a0f75ea4a4f1",
    ("method=lora", "dataset.path=/d"): "18e56e7554c5ecad",
    ("model=flan_t5", "dataset=cnn_dailymail", "dataset.path=/d", "method=lora"): "13f34b6423136501",
    ("model=gpt_neo", "method=prompt_tuning", "dataset=local", "dataset.path=/d", "train.lr=1e-3"): "465f3fd1426527d7",
    ("model=clip", "dataset=tiny_imagenet", "dataset.path=/d", "method=head_only"): "c6509fcb4bb55ad9",
    ("dataset=semeval_ec", "dataset.path=/d", "method=ia3"): "0fd0548a14675185",
    ("model=flan_t5", "method=prompt_tuning", "dataset.path=/d"): "5f4073a9c161b559",
}


@pytest.mark.parametrize("overrides", sorted(EARLIER_HASHES))
def test_the_config_hash_of_a_run_written_before_is_unchanged(compose_plan, overrides):
    assert compose_plan(*overrides).config_hash == EARLIER_HASHES[overrides]


def test_a_plan_holds_the_run_its_method_and_its_task_kind(compose_plan, article_dir):
    plan = compose_plan("model=flan_t5", "method=lora", "dataset=cnn_dailymail", f"dataset.path={article_dir}")
    assert isinstance(plan.kind, Summarization) and plan.generates_text
    assert plan.method.spec is plan.run.method
    assert not compose_plan("method=head_only").generates_text and isinstance(compose_plan("method=head_only").method,
                                                                                 HeadOnly)


@pytest.mark.parametrize("overrides,message", [
    (("model=albert", "method=prefix_tuning"), "method: prefix_tuning does not apply to model=albert: "),
    (("model=gpt_neo", "method=prefix_tuning", "dataset=cnn_dailymail", "dataset.path=."),
     "method: prefix_tuning does not apply to model=gpt_neo for dataset.task=summarization: "),
    (("model=flan_t5", "method=head_only", "dataset=cnn_dailymail", "dataset.path=."),
     "method: head_only trains a new classification head; a task that generates text has none"),
    (("model=bert", "dataset=cnn_dailymail", "dataset.path=."),
     "dataset.task: summarization needs a seq2seq or causal model; model=bert is encoder"),
    (("model=clip",), "dataset.task: classification takes texts; model=clip classifies images"),
    (("dataset.task=regression",), "dataset.task: 'regression' is not allowed; choose one of "),
])
def test_what_spans_parts_is_refused_by_the_plan_in_one_line(compose_plan, overrides, message):
    with pytest.raises(UserError) as refused:
        compose_plan(*overrides)
    assert str(refused.value).startswith(message)


def test_a_run_split_across_processes_is_checked_before_it_starts(compose_plan, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="^train.skip_nonfinite: not supported with several processes"):
        compose_plan("train.skip_nonfinite=true")
    assert compose_plan("train.batch_size=32").run.train.batch_size == 32
