"""Known upstream breaks: refused when the run is validated, naming the installed versions, and only then."""

from __future__ import annotations

import pytest

import finetune.compat
from finetune.errors import UserError

from conftest import UPSTREAM_BREAK


@pytest.fixture
def installed(monkeypatch):
    def pretend(**versions: str) -> None:
        monkeypatch.setattr(finetune.compat, "_installed", lambda package: versions.get(package))

    return pretend


def compose_prefix(compose_plan, family: str, *overrides: str):
    return compose_plan(f"model={family}", "method=prefix_tuning", "dataset=local", "dataset.path=.", *overrides)


def test_prefix_tuning_classification_is_refused_with_the_versions_that_break_it(compose_plan, installed):
    installed(transformers="5.24.0", peft="0.21.2")
    with pytest.raises(UserError, match=r"^method: prefix_tuning on model=bert does not work with "
                                        r"transformers 5.24.0 and peft 0.21.2: transformers 5.24 renamed"):
        compose_prefix(compose_plan, "bert")


@pytest.mark.parametrize("transformers,peft", [("5.23.0", "0.21.2"), ("5.24.0", "0.22.0")])
def test_releases_outside_the_broken_range_are_not_refused(compose_plan, installed, transformers, peft):
    installed(transformers=transformers, peft=peft)
    assert compose_prefix(compose_plan, "bert").run.method.name == "prefix_tuning"


def test_only_the_broken_route_is_refused(compose_plan, installed):
    installed(transformers="5.24.0", peft="0.21.2")
    assert compose_prefix(compose_plan, "flan_t5").generates_text  # Flan-T5 prefix-tunes text-to-text: works
    assert compose_plan("model=bert", "method=lora", "dataset=local", "dataset.path=.").run.method.name == "lora"


def test_the_refusal_is_what_the_tests_recognise_as_an_upstream_break(compose_plan, installed):
    installed(transformers="5.24.0", peft="0.21.2")
    with pytest.raises(UserError, match=UPSTREAM_BREAK):
        compose_prefix(compose_plan, "roberta")
