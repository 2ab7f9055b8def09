"""Load what a run saved in `<run>/model`: a full model, or its base model plus the PEFT adapter."""

from __future__ import annotations

import json
from pathlib import Path

from peft import PeftModel
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

from finetune.errors import UserError

AUTO_CLASSES = {
    "ForSequenceClassification": AutoModelForSequenceClassification,
    "ForConditionalGeneration": AutoModelForSeq2SeqLM,
    "ForCausalLM": AutoModelForCausalLM,
}


def load_trained(model_dir: Path) -> nn.Module:
    """The trained model in eval mode, with the label names in its config."""
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir}: no config.json; is this the model/ folder of a completed run?")
    config = AutoConfig.from_pretrained(model_dir)
    architecture = (config.architectures or [""])[0]
    auto_class = next((auto for suffix, auto in AUTO_CLASSES.items() if architecture.endswith(suffix)), None)
    if auto_class is None:
        raise UserError(f"{model_dir}/config.json: architecture '{architecture}' is not one finetune trains")
    adapter_config = model_dir / "adapter_config.json"
    if not adapter_config.is_file():
        return auto_class.from_pretrained(model_dir).eval()
    base_name = json.loads(adapter_config.read_text())["base_model_name_or_path"]
    base = auto_class.from_pretrained(base_name, config=config)
    return PeftModel.from_pretrained(base, model_dir).eval()
