"""model.quantization (QLoRA's 4/8-bit base weights): refused in one line wherever it cannot run.

The quantized path itself needs a CUDA GPU and bitsandbytes, which the suite's machines lack."""

from __future__ import annotations

import pytest
import torch

from finetune.errors import UserError


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("bits,method", [("4bit", "lora"), ("8bit", "lora"), ("4bit", "adalora")])
def test_a_quantized_run_is_refused_on_a_machine_without_cuda(tiny_plan, bits, method):
    with pytest.raises(UserError, match=rf"^model.quantization={bits}: bitsandbytes quantization needs a CUDA GPU"):
        tiny_plan(f"model.quantization={bits}", f"method={method}", "hardware=auto")


@pytest.mark.parametrize("method", ["full", "last_layers", "loha", "prompt_tuning"])
def test_methods_whose_weights_bitsandbytes_freezes_are_refused(tiny_plan, method):
    with pytest.raises(UserError, match=rf"^model.quantization=4bit: method={method} trains weights that bitsandbytes"):
        tiny_plan("model.quantization=4bit", f"method={method}")


def test_an_unknown_quantization_names_the_allowed(tiny_plan):
    with pytest.raises(UserError, match="^model.quantization: '3bit' is not allowed; choose one of 4bit, 8bit"):
        tiny_plan("model.quantization=3bit")


def test_the_quantizable_methods_are_those_peft_runs_on_bitsandbytes_layers():
    from finetune.methods import build_method
    from finetune.methods.by_config import PeftSpec

    assert build_method(PeftSpec(name="rslora", peft_type="LORA")).quantizable
    assert build_method(PeftSpec(name="randlora", peft_type="RANDLORA")).quantizable
    assert not build_method(PeftSpec(name="loha", peft_type="LOHA")).quantizable


def test_quantization_is_part_of_what_a_run_computes(tiny_plan):
    from dataclasses import replace

    from finetune.schema import config_hash

    run = tiny_plan("method=lora").run
    quantized = replace(run, model=replace(run.model, quantization="4bit"))
    assert config_hash(quantized, False) != config_hash(run, False)
