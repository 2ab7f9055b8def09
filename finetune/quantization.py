"""4-bit and 8-bit base weights through bitsandbytes (QLoRA): `model.quantization=4bit|8bit`.

Only on a CUDA machine, with bitsandbytes installed, and only for methods whose adapters peft runs
on bitsandbytes layers (the base weights stay frozen); anything else is refused in one line when
the run is validated, before anything loads.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Sequence

import torch
from torch import nn

from finetune.errors import UserError
from finetune.schema import HardwareSpec, ModelSpec

QUANTIZED_LAYERS = ("Linear4bit", "Linear8bitLt")  # bitsandbytes' layer classes


def check_quantization(spec: ModelSpec, hardware: HardwareSpec, method_name: str, quantizable: bool,
                       quantizable_methods: Sequence[str]) -> None:
    """Refuse, in one line, a quantized run this machine or this method cannot do (naming the
    methods that can)."""
    if spec.quantization is None:
        return
    key = f"model.quantization={spec.quantization}"
    if not quantizable:
        raise UserError(f"{key}: peft does not train method={method_name} on bitsandbytes' quantized layers; use one it "
                        f"does: {', '.join(quantizable_methods)}")
    if hardware.device == "cpu" or not torch.cuda.is_available():
        raise UserError(f"{key}: bitsandbytes quantization needs a CUDA GPU, and "
                        f"{'hardware=cpu was chosen' if hardware.device == 'cpu' else 'this machine has none'}; "
                        "drop model.quantization to train in full precision")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(f"{key}: bitsandbytes is not installed; pip install bitsandbytes")


def quantization_config(spec: ModelSpec) -> dict[str, Any]:
    """`from_pretrained` keyword arguments for the family's quantization (none when it is off)."""
    if spec.quantization is None:
        return {}
    from transformers import BitsAndBytesConfig

    if spec.quantization == "8bit":
        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True)}
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"quantization_config": BitsAndBytesConfig(  # QLoRA's: NormalFloat4, double quantization
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)}


def prepared_for_training(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """peft's preparation of a quantized model: the base weights frozen, norms and head in fp32."""
    if spec.quantization is None:
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def parameter_count(parameter: nn.Parameter) -> int:
    """The parameters a tensor holds: bitsandbytes packs 4-bit ones two to a byte of its storage (as
    peft's print_trainable_parameters counts them)."""
    if type(parameter).__name__ != "Params4bit":
        return parameter.numel()
    return parameter.numel() * 2 * parameter.element_size()


def quantized_parameters(model: nn.Module) -> int:
    """Parameters stored by bitsandbytes' quantized layers (0 for a model in full precision)."""
    return sum(parameter_count(parameter) for module in model.modules() if type(module).__name__ in QUANTIZED_LAYERS
               for parameter in module.parameters(recurse=False))
