"""finetune.tiny: the stand-in tokenizers of today's families work as the real ones do, without overrides."""

from __future__ import annotations

from transformers import AutoTokenizer

from finetune.runner import execute
from finetune.tiny import CHAT_TEMPLATE, as_stand_in, save_tiny_model


def test_a_stand_in_pads_with_its_end_of_text_and_an_instruct_one_writes_its_chat_template(tiny_model):
    def gpt_neo_tokenizer():
        return AutoTokenizer.from_pretrained(tiny_model("gpt_neo"))

    assert gpt_neo_tokenizer().pad_token is None
    assert as_stand_in("gpt_neo", gpt_neo_tokenizer()).pad_token is None  # GPT-Neo's YAML names its pad token
    qwen = as_stand_in("qwen2", gpt_neo_tokenizer())
    assert qwen.pad_token == qwen.eos_token == "<|endoftext|>" and not qwen.chat_template
    assert as_stand_in("qwen2_instruct", gpt_neo_tokenizer()).chat_template == CHAT_TEMPLATE


def test_an_instruct_stand_in_summarizes_through_its_chat_template_with_no_overrides(tiny_model, compose_plan,
                                                                                      article_dir, tmp_path):
    directory = save_tiny_model("qwen2_instruct", tmp_path / "qwen2_instruct")
    as_stand_in("qwen2_instruct", AutoTokenizer.from_pretrained(tiny_model("gpt_neo"))).save_pretrained(directory)
    plan = compose_plan("model=qwen2_instruct", f"model.path={directory}", "method=lora", "dataset=cnn_dailymail",
                        f"dataset.path={article_dir}", "dataset.max_source_length=32", "dataset.max_target_length=12",
                        "generation.max_new_tokens=4", "hardware=cpu", "train.max_steps=1")
    assert execute(plan).status == "completed"
