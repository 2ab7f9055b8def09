"""Load what a run saved in `<run>/model`: a full model, or its base model plus the PEFT adapter."""

from __future__ import annotations

import json
from pathlib import Path

from peft import PeftModel
from torch import nn
from transformers import AutoConfig

from finetune.errors import UserError


def load_trained(model_dir: Path, model_class: type) -> nn.Module:
    """The trained model (of the task's `model_class`) in eval mode, with the label names in its config."""
    if not (model_dir / "adapter_config.json").is_file():
        _require_config(model_dir)
        return model_class.from_pretrained(model_dir).eval()
    return PeftModel.from_pretrained(load_base_model(model_dir, model_class), model_dir).eval()


def load_base_model(model_dir: Path, model_class: type) -> nn.Module:
    """The base model an adapter in `model_dir` was trained on, with the run's config (label names)."""
    _require_config(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    base_name = json.loads((model_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    return model_class.from_pretrained(base_name, config=config)


def _require_config(model_dir: Path) -> None:
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir}: no config.json; is this the model/ folder of a completed run?")
