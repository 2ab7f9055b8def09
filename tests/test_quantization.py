"""model.quantization (QLoRA's 4/8-bit base weights): refused in one line wherever it cannot run.

The quantized path itself needs a CUDA GPU and bitsandbytes, which the suite's machines lack."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from finetune.errors import UserError

from conftest import METHOD_KINDS, compose


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("bits,method", [("4bit", "lora"), ("8bit", "lora"), ("4bit", "adalora")])
def test_a_quantized_run_is_refused_on_a_machine_without_cuda(tiny_plan, bits, method):
    with pytest.raises(UserError, match=rf"^model.quantization={bits}: bitsandbytes quantization needs a CUDA GPU"):
        tiny_plan(f"model.quantization={bits}", f"method={method}", "hardware=auto")


@pytest.mark.parametrize("method", ["full", "last_layers", "loha", "prompt_tuning"])
def test_methods_peft_does_not_run_on_quantized_layers_are_refused(tiny_plan, method):
    with pytest.raises(UserError, match=rf"^model.quantization=4bit: peft does not train method={method} on bitsandbytes' quantized layers; use one it does: lora, dora"):
        tiny_plan("model.quantization=4bit", f"method={method}")


def test_an_unknown_quantization_names_the_allowed(tiny_plan):
    with pytest.raises(UserError, match="^model.quantization: '3bit' is not allowed; choose one of 4bit, 8bit"):
        tiny_plan("model.quantization=3bit")


def test_the_refusal_lists_exactly_the_methods_peft_runs_on_bitsandbytes_layers():
    from finetune.methods import build_method
    from finetune.methods import QUANTIZABLE_METHODS as QUANTIZABLE

    quantizable = {name for name in METHOD_KINDS
                   if build_method(compose(f"method={name}", output_dir=Path("unused")).run.method).quantizable}
    assert quantizable == set(QUANTIZABLE)
    assert "pissa" not in quantizable and "loha" not in quantizable  # PiSSA's SVD needs full-precision weights


def test_4bit_parameters_count_as_peft_counts_them():
    from finetune.models import count_parameters

    class Params4bit(torch.nn.Parameter):  # bitsandbytes' class name: two 4-bit values in each stored byte
        pass

    class Linear4bit(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = Params4bit(torch.zeros(8, 1, dtype=torch.uint8), requires_grad=False)  # a 4 x 4 weight

    model = torch.nn.Sequential(Linear4bit(), torch.nn.Linear(4, 2))
    assert count_parameters(model) == {"trainable": 10, "total": 26, "quantized": 16}


def test_quantization_is_part_of_what_a_run_computes(tiny_plan):
    from dataclasses import replace

    from finetune.schema import config_hash

    run = tiny_plan("method=lora").run
    quantized = replace(run, model=replace(run.model, quantization="4bit"))
    assert config_hash(quantized, False) != config_hash(run, False)
