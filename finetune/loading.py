"""Load what a run saved in `<run>/model`: a full model, or its base model plus the PEFT adapter."""

from __future__ import annotations

import json
from pathlib import Path

from peft import PeftModel
from torch import nn
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification,
                          PretrainedConfig)

from finetune.errors import UserError

AUTO_CLASSES = {
    "ForSequenceClassification": AutoModelForSequenceClassification,
    "ForConditionalGeneration": AutoModelForSeq2SeqLM,
    "ForCausalLM": AutoModelForCausalLM,
}


def load_trained(model_dir: Path) -> nn.Module:
    """The trained model in eval mode, with the label names in its config."""
    if not (model_dir / "adapter_config.json").is_file():
        auto_class, _ = _model_class(model_dir)
        return auto_class.from_pretrained(model_dir).eval()
    return PeftModel.from_pretrained(load_base_model(model_dir), model_dir).eval()


def load_base_model(model_dir: Path) -> nn.Module:
    """The base model an adapter in `model_dir` was trained on, with the run's config (label names)."""
    auto_class, config = _model_class(model_dir)
    base_name = json.loads((model_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    return auto_class.from_pretrained(base_name, config=config)


def _model_class(model_dir: Path) -> tuple[type, PretrainedConfig]:
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir}: no config.json; is this the model/ folder of a completed run?")
    config = AutoConfig.from_pretrained(model_dir)
    architecture = (config.architectures or [""])[0]
    auto_class = next((auto for suffix, auto in AUTO_CLASSES.items() if architecture.endswith(suffix)), None)
    if auto_class is None:
        raise UserError(f"{model_dir}/config.json: architecture '{architecture}' is not one finetune trains")
    return auto_class, config
