"""Load a model family's tokenizer and task model from a local path, a weights package or the Hub."""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any

from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from finetune.errors import UserError
from finetune.quantization import parameter_count, prepared_for_training, quantization_config, quantized_parameters
from finetune.schema import ModelSpec

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def model_source(spec: ModelSpec) -> str:
    """Where the weights come from: `model.path`, else the weights package, else the Hub id."""
    if spec.path:
        directory = Path(spec.path).expanduser()
        if not directory.exists():
            raise UserError(f"model.path: '{directory}' does not exist")
        if not directory.is_dir():
            raise UserError(f"model.path: '{directory}' is a file; give the model's directory")
        if not (directory / "config.json").is_file():
            raise UserError(f"model.path: '{directory}' has no config.json; is it a Hugging Face model directory?")
        _check_model_type(directory, spec)
        if not any((directory / name).is_file() for name in WEIGHT_FILES):
            raise UserError(f"model.path: no weights in '{directory}' (expected one of {', '.join(WEIGHT_FILES)})")
        return str(directory)
    if spec.weights_package:
        try:
            return str(importlib.import_module(spec.weights_package).get_model_path())
        except ImportError:
            log.warning("Package %s is not installed; loading %s from the Hub", spec.weights_package, spec.hub_id)
    return spec.hub_id


def _check_model_type(directory: Path, spec: ModelSpec) -> None:
    """A checkpoint of another family is refused by name, before its tokenizer or weights mislead."""
    try:
        found = json.loads((directory / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as error:
        raise UserError(f"model.path: {directory / 'config.json'} cannot be read ({error})") from error
    if spec.model_type and found and found != spec.model_type:
        raise UserError(f"model.path: '{directory}' holds a {found} checkpoint, not a {spec.name} ({spec.model_type}); "
                        f"choose the model=FAMILY that matches it, or another model.path")


def load_tokenizer(source: str, spec: ModelSpec) -> PreTrainedTokenizerBase:
    """The family's tokenizer with its padding quirks applied (pad token, padding side)."""
    tokenizer = _from_pretrained(AutoTokenizer, source, spec)
    if tokenizer.pad_token is None:
        if spec.pad_token is None:
            raise UserError(f"model.pad_token: the {spec.name} tokenizer has no pad token; set one in conf/model/{spec.name}.yaml")
        tokenizer.pad_token = spec.pad_token
    tokenizer.padding_side = spec.padding_side
    return tokenizer


def load_encoder(source: str, spec: ModelSpec) -> nn.Module:
    """The family's bare transformer (no task head), e.g. for frozen embeddings; T5's encoder alone."""
    model = _from_pretrained(AutoModel, source, spec)
    return model.get_encoder() if model.config.is_encoder_decoder else model


def load_model(model_class: type, source: str, spec: ModelSpec, model_config: dict[str, Any], pad_token_id: int) -> nn.Module:
    """The task model; `model_config` sizes its head and puts the label names (and CLIP's class prompts)
    in its config."""
    config = _from_pretrained(AutoConfig, source, spec)
    config.update(model_config)  # set whether or not the family's config class knows the key
    model = _from_pretrained(model_class, source, spec, config=config, **quantization_config(spec))
    model.config.pad_token_id = pad_token_id
    return prepared_for_training(model, spec)


def meta_architecture(spec: ModelSpec) -> nn.Module | None:
    """The family's bare architecture without weights (on the meta device), from a config at hand (the
    model's directory, its weights package, the Hub cache); None where only a download would give it."""
    import torch

    try:
        config = AutoConfig.from_pretrained(model_source(spec), trust_remote_code=spec.trust_remote_code,
                                            local_files_only=True)
        with torch.device("meta"):
            return AutoModel.from_config(config, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError, KeyError, ImportError, UserError):  # unmapped or remote-code architectures too: the load reports it
        return None


def enable_gradient_checkpointing(model: nn.Module, spec: ModelSpec) -> None:
    """Recompute each block's activations in the backward pass (train.gradient_checkpointing)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise UserError(f"train.gradient_checkpointing: {type(model).__name__} ({spec.name}) does not support it; set it false")
    # non-reentrant: gradients reach adapters even where every input of a block is frozen
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameters, counted as peft's print_trainable_parameters counts them."""
    trainable = sum(parameter_count(p) for p in model.parameters() if p.requires_grad)
    total = sum(parameter_count(p) for p in model.parameters())
    quantized = quantized_parameters(model)
    return {"trainable": trainable, "total": total, **({"quantized": quantized} if quantized else {})}


def submodule(model: nn.Module, path: str, key: str, family: ModelSpec) -> nn.Module:
    """`model.get_submodule(path)` (in a peft model's base model, whose `model` attribute peft's own
    wrapper shadows); a path the family's YAML got wrong is a one-line error naming the key."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return base.get_submodule(path)
    except AttributeError as error:
        raise UserError(f"model.{key}: '{path}' is not a module of {type(model).__name__} "
                        f"(conf/model/{family.name}.yaml)") from error


def _from_pretrained(loader, source: str, spec: ModelSpec, **kwargs):
    try:
        return loader.from_pretrained(source, trust_remote_code=spec.trust_remote_code, **kwargs)
    except OSError as error:  # missing files locally, or the Hub out of reach
        raise UserError(
            f"model: cannot load '{source}' ({str(error).splitlines()[0]}); offline? set model.path=DIR"
        ) from error
