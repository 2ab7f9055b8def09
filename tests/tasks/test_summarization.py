"""Summarization with tiny random Flan-T5 and GPT-Neo models: every listed method end to end,
the causal model's masking and left padding, and the refusal of encoder-only models."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForCausalLM, AutoTokenizer

from finetune.errors import UserError
from finetune.metrics import ROUGE_TYPES
from finetune.runner import execute
from finetune.schema import DatasetSpec, GenerationSpec
from finetune.tasks import ModelParts
from finetune.tasks.generation import IGNORE, generate
from finetune.tasks.summarization import CausalSummarization

from conftest import NETWORK_METHODS, TOKENIZER_OVERRIDES, article_rows, write_splits

REFUSED = {  # where summarizing is refused, and why (tested below)
    ("flan_t5", "head_only"): "head_only trains a new classification head",
    ("gpt_neo", "head_only"): "head_only trains a new classification head",
    ("gpt_neo", "prefix_tuning"): "prefix_tuning does not apply to model=gpt_neo for dataset.task=summarization",
}
# today's decoders (on GPT-Neo's tokenizer) summarize as GPT-Neo does
for family in ("llama", "qwen3", "gemma3"):
    REFUSED[family, "head_only"] = "head_only trains a new classification head"
    REFUSED[family, "prefix_tuning"] = f"prefix_tuning does not apply to model={family} for dataset.task=summarization"
PAIRS = [(family, method) for family in ("flan_t5", "gpt_neo", "llama", "qwen3", "gemma3") for method in NETWORK_METHODS
         if (family, method) not in REFUSED]


@pytest.fixture
def summary_run(compose_plan, tiny_model, article_dir, tmp_path):
    def make(family: str, method: str, *overrides: str):
        return compose_plan(
            f"model={family}", f"model.path={tiny_model(family)}", f"method={method}", *TOKENIZER_OVERRIDES.get(family, ()),
            "dataset=cnn_dailymail", f"dataset.path={article_dir}", "dataset.max_source_length=32",
            "dataset.max_target_length=12", "generation.max_new_tokens=8", "hardware=cpu",
            "train.batch_size=8", "train.grad_accum=2", "train.max_steps=2", *overrides,
            output_dir=tmp_path / f"run{len(list(tmp_path.iterdir()))}",
        )

    return make


@pytest.mark.parametrize("family,method", sorted(REFUSED))
def test_methods_that_cannot_summarize_are_refused_before_loading(summary_run, family, method):
    with pytest.raises(UserError, match=REFUSED[family, method]):
        summary_run(family, method)


@pytest.mark.parametrize("family,method", PAIRS)
def test_every_method_trains_generates_and_scores_rouge(summary_run, family, method):
    plan = summary_run(family, method)
    results = execute(plan)

    assert results.status == "completed" and results.main_metric == "rougeL"
    for role in ("validation", "test"):
        metrics = results.metrics[role]
        assert all(0.0 <= metrics[kind] <= 100.0 for kind in ROUGE_TYPES), metrics
        assert math.isfinite(metrics["loss"])
    if method != "none":
        assert results.training["optimizer_steps"] == 2
    # articles run to 60 words, over the 32-token limit: most were cut, and counted
    assert results.truncated["max_length"] == 32 and results.truncated["train"] > 24
    samples = [json.loads(line) for line in (Path(plan.run.output_dir) / "samples_test.jsonl").read_text().splitlines()]
    assert len(samples) == 8 and all(set(sample) == {"reference", "generated"} for sample in samples)
    assert all(sample["reference"].endswith(".") for sample in samples)
    events = EventAccumulator(str(Path(plan.run.output_dir) / "tensorboard")).Reload()
    assert {f"samples_test/{index}/text_summary" for index in range(5)} <= set(events.Tags()["tensors"])


def test_gradient_accumulation_sets_the_effective_batch(summary_run):
    results = execute(summary_run("flan_t5", "lora", "train.max_steps=null", "train.epochs=1"))
    assert results.training["optimizer_steps"] == 3  # 48 articles / (8 a batch x 2 batches a step)


def test_encoder_only_models_are_refused_for_summarization(compose_plan, tiny_bert, article_dir):
    with pytest.raises(UserError, match="^dataset.task: summarization needs a seq2seq or causal model; model=bert is encoder"):
        compose_plan("model=bert", f"model.path={tiny_bert}", "dataset=cnn_dailymail", f"dataset.path={article_dir}")


@pytest.fixture
def causal(tiny_model):
    directory = tiny_model("gpt_neo")
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.pad_token = "<|endoftext|>"
    spec = DatasetSpec(name="articles", task="summarization", path=".", summary_separator=" TL;DR:")
    task = CausalSummarization(tokenizer, ModelParts("transformer.h", (), ()), dataset=spec, generation=GenerationSpec())
    return task, AutoModelForCausalLM.from_pretrained(directory).eval()


def test_causal_loss_covers_only_the_summary_and_its_end_token(causal):
    task, _ = causal
    encoded = task.encode(["a dull film", "the plot is weak and the acting bland"], ["bad.", "weak plot."], max_length=6)
    separator = task.tokenizer(" TL;DR:", add_special_tokens=False)["input_ids"]
    for ids, labels, prompt_length, summary in zip(encoded["input_ids"], encoded["labels"], encoded["prompt_length"],
                                                   ["bad.", "weak plot."]):
        assert ids[prompt_length - len(separator):prompt_length] == separator
        assert labels[:prompt_length] == [IGNORE] * prompt_length
        assert labels[prompt_length:] == ids[prompt_length:]
        assert task.tokenizer.decode(ids[prompt_length:-1]) == summary and ids[-1] == task.tokenizer.eos_token_id
    assert encoded["truncated"] == [False, True]


CHAT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_an_instruct_model_prompts_in_its_chat_template(causal):
    task, _ = causal
    task.tokenizer.chat_template = CHAT_TEMPLATE  # the tiny model's GPT-Neo tokenizer has none of its own
    chat = CausalSummarization(task.tokenizer, task.parts, dataset=task.dataset, generation=task.generation, chat=True)
    encoded = chat.encode(["a dull film with a weak plot"], ["bad."], max_length=4)
    prompt = chat.tokenizer.decode(encoded["input_ids"][0][:encoded["prompt_length"][0]])
    assert prompt == "<|im_start|>user\nClassify this text:\n\na dull film with<|im_end|>\n<|im_start|>assistant\n"
    assert chat.tokenizer.decode(encoded["input_ids"][0][encoded["prompt_length"][0]:-1]) == "bad."
    assert encoded["truncated"] == [True]
    after_separator = task.positions_after_source() - len(task._separator())
    assert chat.positions_after_source() == len(chat._chat_prompt([])) + after_separator
    # the template's instruction stands for dataset.source_prefix, which the runner put before the text
    prefixed = CausalSummarization(task.tokenizer, task.parts, dataset=replace(task.dataset, source_prefix="summarize: "),
                                   generation=task.generation, chat=True)
    encoded = prefixed.encode(["summarize: a dull film"], ["bad."], max_length=16)
    prompt = prefixed.tokenizer.decode(encoded["input_ids"][0][:encoded["prompt_length"][0]])
    assert prompt == "<|im_start|>user\nClassify this text:\n\na dull film<|im_end|>\n<|im_start|>assistant\n"


def test_qwen2_instruct_summarizes_through_the_chat_template_and_refuses_a_tokenizer_without_one(
        summary_run, tiny_model, tmp_path):
    import shutil

    model_dir = tmp_path / "instruct"
    shutil.copytree(tiny_model("qwen2"), model_dir)
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    (model_dir / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": CHAT_TEMPLATE}))
    assert execute(summary_run("qwen2_instruct", "lora", f"model.path={model_dir}")).status == "completed"
    with pytest.raises(UserError, match="^model.chat_template: the tokenizer of .* has no chat template; set model.chat_template=false"):
        execute(summary_run("qwen2_instruct", "lora"))


def test_left_padded_prompts_generate_what_each_prompt_generates_alone(causal):
    task, model = causal
    encoded = task.encode(["a short one", "a much longer text about the film and its plot"], ["x", "y"], 32)
    features = [{key: values[row] for key, values in encoded.items()} for row in range(2)]
    batch = task.collate_eval(features)
    assert batch["prompt_mask"][0, 0] == 0 and batch["prompt_mask"][0, -1] == 1  # padded on the left
    spec = GenerationSpec(max_new_tokens=6, no_repeat_ngram_size=0)
    together = generate(model, batch["prompt_ids"], batch["prompt_mask"], task.tokenizer, spec)
    alone = task.collate_eval(features[:1])
    single = generate(model, alone["prompt_ids"], alone["prompt_mask"], task.tokenizer, spec)
    assert torch.equal(together[0, : single.shape[1]], single[0])


@pytest.mark.parametrize("method", ["full", "prompt_tuning"])
def test_a_causal_model_with_too_few_positions_gets_inputs_cut_to_fit(summary_run, method, caplog, tmp_path):
    # the tiny GPT-Neo has 128 positions: 200 source tokens + separator + summary could not fit
    long_articles = write_splits(tmp_path / "long", lambda count, seed: [
        {**row, "article": " ".join([row["article"]] * 4)} for row in article_rows(count, seed)], (16, 8, 8))
    plan = summary_run("gpt_neo", method, "dataset.max_source_length=200", f"dataset.path={long_articles}")
    results = execute(plan)

    assert results.status == "completed"
    virtual = 20 if method == "prompt_tuning" else 0
    kept = results.truncated["max_length"]
    separator = 128 - virtual - 13 - kept  # 13: a 12-token summary and <eos>, more than the 8 new tokens
    assert 1 <= separator <= 8  # "\nTL;DR:\n" in GPT-Neo tokens
    assert f"Inputs cut to {kept} tokens (not 200)" in caplog.text
