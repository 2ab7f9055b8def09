"""peft's types by configuration (kind: peft): every such YAML on every text family's tiny model.

The engine runs each on the tiny BERT (train, save, reload, export, resume); every other family
adapts, trains a step, saves, reloads and merges in process, which is what differs by family; and
each summarizes (a step, then generation) on every family that summarizes.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from finetune.errors import UserError
from finetune.export import export, merged
from finetune.loading import load_trained
from finetune.models import count_parameters, load_model, load_tokenizer, model_source
from finetune.plan import plan as plan_of
from finetune.runner import execute
from finetune.trained import load_run

from conftest import (BY_CONFIG_METHODS, FAMILIES, MODERN_FAMILIES, TINY_SIZES, TOKENIZER_OVERRIDES,
                      SimulatedCrash, compose, crash_after_checkpoint, split_metrics)

# what peft refuses on a family, with the reason the run gives
REFUSED = {
    **{(family, "cartridge"): "attention takes no past key/values" for family in ("distilbert", "albert", "modernbert")},
    ("flan_t5", "cartridge"): "T5's relative position bias does not extend to a key/value prefix",
    ("flan_t5", "p_tuning"): "flan_t5's classification head: T5ForSequenceClassification takes no input embeddings",
}
# BEFT trains biases; where the targeted layers have none, peft cannot fold them into the weights
NOT_MERGED = {(family, "beft"): "Base layer has no bias"
              for family in ("flan_t5", "gpt_neo", "llama", "smollm2", "qwen3", "gemma3", "modernbert")}


def test_the_docs_list_every_peft_type_that_ships_and_each_is_named_after_its_type():
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    root = Path(__file__).parents[2]
    usage = (root / "docs" / "usage.md").read_text()
    shipped = usage[usage.index("Shipped: "):usage.index("Each YAML's first line")]
    assert set(re.findall(r"`(\w+)`", shipped)) - {"targets", "LORA", "use_rslora", "init_lora_weights"} == set(BY_CONFIG_METHODS)
    readme = (root / "README.md").read_text()
    table = readme[readme.index("## Every peft type by configuration"):]
    assert {name for name in BY_CONFIG_METHODS if f"| {name} |" in table} == set(BY_CONFIG_METHODS)

    for name in BY_CONFIG_METHODS:
        yaml = (Path(__file__).parents[2] / "conf" / "method" / f"{name}.yaml").read_text()
        peft_type = next(line.split(":")[1].strip() for line in yaml.splitlines() if line.strip().startswith("peft_type:"))
        assert peft_type in PEFT_TYPE_TO_CONFIG_MAPPING
        assert name == peft_type.lower() or peft_type == "LORA"  # named after its type; LoRA's variants by theirs
    assert {"loha", "lokr", "vera", "oft", "boft", "fourierft", "hra", "vblora", "miss", "c3a", "randlora", "shira",
            "ln_tuning", "rslora", "pissa", "olora"} <= set(BY_CONFIG_METHODS)


@pytest.mark.parametrize("method", BY_CONFIG_METHODS)
def test_each_trains_saves_reloads_and_exports_on_the_tiny_bert(family_plan, method, tmp_path):
    plan = family_plan("bert", method)
    results = execute(plan)

    assert results.status == "completed" and results.training["optimizer_steps"] == 2
    assert 0 < results.params["trainable"] < results.params["total"]
    adapter = json.loads((Path(plan.run.output_dir) / "model" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == plan.run.method.peft_type
    reloaded = split_metrics(plan)
    assert reloaded["accuracy"] == results.metrics["test"]["accuracy"]
    assert reloaded["loss"] == pytest.approx(results.metrics["test"]["loss"], abs=1e-4)
    if plan.method.mergeable:
        merged = export(load_run(Path(plan.run.output_dir)), tmp_path / "merged", merge=True)
        assert not (merged / "adapter_config.json").exists() and (merged / "model.safetensors").exists()
    else:
        with pytest.raises(UserError, match=f"^--merge: .*; this run is {method}$"):
            export(load_run(Path(plan.run.output_dir)), tmp_path / "merged", merge=True)


def runs_by_family(tiny_model, tmp_path_factory, label: str, *overrides: str):
    """family -> (its run composed with `overrides`, its tokenizer), built once per family."""
    built = {}

    def of(family: str):
        if family not in built:
            composed = compose(f"model={family}", f"model.path={tiny_model(family)}", "method=loha", "hardware=cpu",
                               *overrides, *TOKENIZER_OVERRIDES.get(family, ()),
                               output_dir=tmp_path_factory.mktemp(f"{label}-{family}"))
            built[family] = composed.run, load_tokenizer(model_source(composed.run.model), composed.run.model)
        return built[family]

    return of


@pytest.fixture(scope="module")
def family_runs(tiny_model, sentiment_dir, tmp_path_factory):
    return runs_by_family(tiny_model, tmp_path_factory, "adapt", "model.max_length=32", "dataset=local",
                          f"dataset.path={sentiment_dir}", "dataset.label_names=[negative,positive]")


def task_and_batch(plan, tokenizer):
    """The plan's task (a head, or text to text) and a training batch of two rows."""
    task = plan.kind.build(plan.run, tokenizer, ("negative", "positive"))
    encoded = task.encode(["a good and moving film", "a dull boring plot"], [1, 0], 32)
    rows = [{key: values[row] for key, values in encoded.items() if key not in ("truncated", "length")} for row in range(2)]
    return task, task.collate(rows)


@pytest.fixture(scope="module")
def method_specs():
    """method -> its composed spec (with the tiny models' sizes)."""
    return {name: compose(f"method={name}", *TINY_SIZES.get(name, ()), output_dir=Path("unused")).run.method
            for name in BY_CONFIG_METHODS}


def adapted(plan, task, tokenizer, batch):
    """The family's tiny model with the plan's method applied (and initialised from `batch`, as the
    engine does from the training loader); it trains some, not all, parameters."""
    torch.manual_seed(0)
    family = plan.run.model
    model = load_model(task.model_class, family.path, family, task.model_kwargs(), tokenizer.pad_token_id)
    model = plan.method.prepare(model, family, task, total_steps=4)
    plan.method.initialize(model, [batch])
    params = count_parameters(model)
    assert 0 < params["trainable"] < params["total"]
    return model


def train_one_step(model, batch) -> None:
    """One AdamW step on `batch`, leaving the model in eval mode."""
    model.train()
    model(**batch).loss.backward()
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2).step()
    model.eval()


ADAPTED = [(family, method) for family in FAMILIES + MODERN_FAMILIES if family != "bert" for method in BY_CONFIG_METHODS]


@pytest.mark.parametrize("family,method", ADAPTED)
def test_each_adapts_trains_reloads_and_merges_on_every_family(family_runs, method_specs, family, method, tmp_path):
    family_run, tokenizer = family_runs(family)
    if (family, method) in REFUSED:
        with pytest.raises(UserError, match=REFUSED[family, method]):
            plan_of(replace(family_run, method=method_specs[method]))
        return
    plan = plan_of(replace(family_run, method=method_specs[method]))
    task, batch = task_and_batch(plan, tokenizer)
    model = adapted(plan, task, tokenizer, batch)
    model.eval()
    with torch.no_grad():
        before = model(**batch).logits
    train_one_step(model, batch)
    with torch.no_grad():
        trained = model(**batch).logits
    assert not torch.allclose(before, trained)  # the step changed what the model computes

    from finetune.artifacts import save_model

    save_model(model, tokenizer, tmp_path / "model")
    reloaded = load_trained(tmp_path / "model", task.model_class)
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, trained, atol=1e-5)
        if (family, method) in NOT_MERGED:
            with pytest.raises(UserError, match=rf"^--merge: peft cannot merge {method} .*{NOT_MERGED[family, method]}"):
                merged(reloaded, method)
        elif plan.method.mergeable:
            assert torch.allclose(merged(reloaded, method)(**batch).logits, trained, atol=1e-4)


@pytest.mark.parametrize("method", BY_CONFIG_METHODS)
def test_a_crashed_run_resumes_to_identical_metrics(family_plan, method, tmp_path, monkeypatch):
    settings = ("train.epochs=2", "train.save_every_steps=3", "dataset.max_train_samples=160")
    reference = execute(family_plan("bert", method, *settings))
    crashed = family_plan("bert", method, *settings)
    with crash_after_checkpoint(monkeypatch, 6), pytest.raises(SimulatedCrash):
        execute(crashed)
    resumed = execute(family_plan("bert", method, *settings, output_dir=Path(crashed.run.output_dir)))
    assert resumed.training["resumed_from_step"] == 6
    assert resumed.metrics == reference.metrics


@pytest.mark.parametrize("override,message", [
    ("+method.args.rank=4", r"^method.args.rank: not an argument of peft's LoHaConfig; allowed: .*\balpha\b.*\br\b"),
    ("method.peft_type=LOHAA", r"^method.peft_type: 'LOHAA' is not a peft type; known: .*LOHA"),
    ("method.peft_type=ADALORA", r"^method.peft_type: ADALORA does not run by configuration: method=adalora"),
    ("method.targets=[feedforward]", r"^method.targets: model=bert has no role 'feedforward'; its roles \(model.roles\): attention, mlp, norms"),
    ("+method.args.layers_pattern=layer", r"^method: peft refuses loha \(LoHaConfig\): When `layers_pattern` is specified"),
])
def test_bad_peft_settings_are_one_line_before_anything_loads(family_plan, override, message):
    with pytest.raises(UserError, match=message):
        family_plan("bert", "loha", override)


@pytest.mark.parametrize("method,override,message", [
    ("c3a", "method.args.block_size=7", "The block size should be a factor of the input size. However, the input size is 32"),
    ("fourierft", "method.args.n_frequency=5000", "`n_frequency` should be less than or equal to the product"),
])
def test_what_peft_refuses_for_a_layer_width_is_one_line_before_anything_loads(family_plan, method, override, message,
                                                                                monkeypatch):
    monkeypatch.setattr("finetune.runner.load_model", lambda *args, **kwargs: pytest.fail("loaded the model"))
    with pytest.raises(UserError, match=rf"^method: peft refuses {method} on model=bert: {re.escape(message)}"):
        family_plan("bert", method, override)


def test_a_hub_model_not_at_hand_is_checked_when_it_loads(family_plan):
    """Without the architecture's config.json (a Hub model not downloaded), validation cannot build the
    adapter; the run is not refused for it (peft's own check runs when the model loads)."""
    plan = family_plan("bert", "c3a", "model.path=null", "model.hub_id=nobody/not-downloaded", "method.args.block_size=7")
    assert plan.run.method.args["block_size"] == 7


def test_target_modules_by_name_win_over_roles(family_plan):
    results = execute(family_plan("bert", "loha", "method.target_modules=[query]", "train.max_steps=1"))
    roles = execute(family_plan("bert", "loha", "train.max_steps=1")).params["trainable"]
    assert 0 < results.params["trainable"] < roles


@pytest.fixture(scope="module")
def summary_runs(tiny_model, article_dir, tmp_path_factory):
    return runs_by_family(tiny_model, tmp_path_factory, "summarize", "dataset=cnn_dailymail", f"dataset.path={article_dir}",
                          "dataset.max_source_length=32", "dataset.max_target_length=12", "generation.max_new_tokens=6")


# what peft refuses for summarization on these families, with the reason the run gives
REFUSED_SUMMARIES = {
    ("flan_t5", "cartridge"): "T5's relative position bias does not extend to a key/value prefix",
    ("gpt_neo", "cartridge"): "for dataset.task=summarization: peft generates from a key/value prefix through input embeddings",
    **{(family, "cartridge"): "for dataset.task=summarization: peft generates from a key/value prefix through input embeddings"
       for family in ("llama", "smollm2", "qwen2", "qwen3", "gemma3")},
}
SUMMARIZED = [(family, method) for family in ("flan_t5", "gpt_neo", "llama", "smollm2", "qwen2", "qwen3", "gemma3")
              for method in BY_CONFIG_METHODS]


@pytest.mark.parametrize("family,method", SUMMARIZED)
def test_each_summarizes_on_every_family_that_summarizes(summary_runs, method_specs, family, method):
    summary_run, tokenizer = summary_runs(family)
    if (family, method) in REFUSED_SUMMARIES:
        with pytest.raises(UserError, match=REFUSED_SUMMARIES[family, method]):
            plan_of(replace(summary_run, method=method_specs[method]))
        return
    plan = plan_of(replace(summary_run, method=method_specs[method]))
    task = plan.kind.build(plan.run, tokenizer, ())
    encoded = task.encode(["the film was good and the plot moving. it ran long.", "a dull plot. the cast was weak."],
                          ["the film was good.", "a dull plot."], 32)
    rows = [{key: values[row] for key, values in encoded.items() if key != "truncated"} for row in range(2)]
    batch = task.collate([{key: value for key, value in row.items() if key != "prompt_length"} for row in rows])
    model = adapted(plan, task, tokenizer, batch)
    model.eval()
    with torch.no_grad():
        before = model(**batch).loss
    train_one_step(model, batch)
    with torch.no_grad():
        output = task.evaluate_batch(model, task.collate_eval(rows))
    assert torch.isfinite(output.loss) and output.loss != before  # the step changed the summaries' loss
    if not model.config.is_encoder_decoder:  # left-padded prompts write what each writes alone
        with torch.no_grad():
            alone = task.evaluate_batch(model, task.collate_eval(rows[1:]))
        assert torch.equal(output.predictions[1, :alone.predictions.shape[1]], alone.predictions[0])
    start = int(model.config.is_encoder_decoder)  # an encoder-decoder's output starts with its decoder start token
    assert output.predictions.shape[0] == 2 and output.predictions.shape[1] <= 6 + start  # within max_new_tokens
