"""`finetune-export RUN_DIR OUT_DIR [--merge]`: a self-contained Hugging Face model directory.

Full-weight runs are copied; adapter runs keep the adapter with its base model named, or with
--merge (LoRA, IA3) become plain models with the update folded into the base weights. The
tokenizer, the label names (config) and a model card travel along, so
`transformers.pipeline("text-classification", model=OUT_DIR)` loads a classifier (encoder-decoders:
`AutoModelForSeq2SeqLM.from_pretrained(OUT_DIR)`; transformers 5 dropped their pipelines).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from peft import PeftModel
from torch import nn

from finetune.errors import EXIT_BAD_INPUT, UserError
from finetune.loading import load_base_model
from finetune.logs import quiet_libraries
from finetune.methods import METHODS
from finetune.plan import Plan
from finetune.schema import Run
from finetune.trained import TrainedRun, load_run

def merged(model: PeftModel, method: str) -> nn.Module:
    """The adapter folded into the base weights; what peft cannot merge is one line."""
    from peft.utils import ModulesToSaveWrapper

    # the trained heads first: peft's unloading copies a `weight` onto each, which a head of several
    # layers (RoBERTa's, T5's, ModernBERT's classification heads) does not have
    for name, module in list(model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.modules_to_save[module.active_adapter])
    try:
        return model.merge_and_unload()
    except (NotImplementedError, ValueError) as error:  # Lily's layers; BEFT on a layer without a bias
        raise UserError(f"--merge: peft cannot merge {method} into the base weights ({str(error).splitlines()[0]}); "
                        "export without --merge") from error


def export(trained: TrainedRun, out_dir: Path, merge: bool) -> Path:
    """Write the model, tokenizer and model card to `out_dir`."""
    model = trained.model
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserError(f"OUT_DIR: '{out_dir}' exists and is not empty")
    if merge:
        mergeable = sorted(kind for kind, method in METHODS.items() if method.mergeable)
        if not isinstance(model, PeftModel) or not trained.plan.method.mergeable:
            raise UserError(f"--merge: only {', '.join(mergeable)} adapters (and their variants) and the peft types "
                            f"that peft merges merge into the base weights; this run is {trained.run.method.name}")
        model = merged(model, trained.run.method.name)
    generates = trained.plan.kind.generates_text
    if generates:
        _generation_defaults(model.get_base_model() if isinstance(model, PeftModel) else model, trained.run)
    if isinstance(model, PeftModel):
        # the untouched base weights with the run's config, then the adapter beside them: transformers
        # loads such a directory as a complete model with an embedded adapter
        pristine = load_base_model(trained.directory / "model", trained.task.model_class)
        if generates:
            _generation_defaults(pristine, trained.run)
        pristine.save_pretrained(out_dir)
    model.save_pretrained(out_dir)
    trained.task.processor.save_pretrained(out_dir)
    (out_dir / "README.md").write_text(model_card(trained, merged=merge))
    return out_dir


def _pipeline_task(plan: Plan) -> str:
    """The Hub's pipeline tag; transformers 5 runs text-classification and text-generation as pipelines."""
    if plan.run.model.architecture == "seq2seq" and plan.generates_text:
        return "text2text-generation"
    return plan.kind.pipeline_tag


def _usage(task: str, trained: TrainedRun) -> str:
    if task == "text2text-generation":  # transformers 5 has no pipeline for encoder-decoders
        return ('from transformers import AutoModelForSeq2SeqLM, AutoTokenizer\n'
                'tokenizer = AutoTokenizer.from_pretrained("PATH")\n'
                'model = AutoModelForSeq2SeqLM.from_pretrained("PATH")  # generation settings in generation_config.json\n'
                'ids = model.generate(**tokenizer([model.config.prefix + TEXT], return_tensors="pt"))\n'
                'print(tokenizer.batch_decode(ids, skip_special_tokens=True))')
    if task == "zero-shot-image-classification":  # the class prompts are the caller's: the run's are given
        template = trained.run.dataset.prompt_template.replace("{label}", "{}")
        return (f'from transformers import pipeline\nclassify = pipeline("{task}", model="PATH")\n'
                f'classify("IMAGE.jpg", candidate_labels={list(trained.results.label_names)!r}, '
                f'hypothesis_template={template!r})')
    return f'from transformers import pipeline\npredict = pipeline("{task}", model="PATH")'


def _generation_defaults(model, run: Run) -> None:
    """Make `generate` (and so the pipelines) use the run's generation settings and input prefix."""
    spec = run.generation
    model.generation_config.update(max_new_tokens=spec.max_new_tokens, num_beams=spec.num_beams,
                                   length_penalty=spec.length_penalty, no_repeat_ngram_size=spec.no_repeat_ngram_size)
    model.config.prefix = run.dataset.source_prefix or None


def model_card(trained: TrainedRun, merged: bool) -> str:
    """What the model is, how it was trained and how well it did, with the resolved config."""
    run, results = trained.run, trained.results
    task = _pipeline_task(trained.plan)
    form = "full weights" if not (trained.directory / "model" / "adapter_config.json").is_file() else (
        "the adapter update merged into the base weights" if merged else "a peft adapter on its base model")
    metrics = "\n".join(f"| {split} | " + ", ".join(f"{k} {v:.4f}" for k, v in values.items() if not k.startswith("f1_"))
                        + " |" for split, values in results.metrics.items())
    return f"""---
pipeline_tag: {task}
library_name: transformers
---
# {run.model.name} + {run.method.name} on {run.dataset.name}

Fine-tuned with finetune from `{run.model.hub_id}`{_weights_note(run)}; this directory holds {form}.

- task: {run.dataset.task}; labels: {', '.join(results.label_names) or 'none (text generation)'}
- data: {_data_note(run)}
- trainable parameters: {results.params['trainable']:,} of {results.params['total']:,}
- training: {results.train_seconds:.1f} s on {results.device} ({results.precision})

| split | metrics |
|---|---|
{metrics}

```python
{_usage(task, trained)}
```

## Config

```json
{json.dumps(public_config(results.config), indent=2)}
```
"""


LOCAL_PATHS = (("model", "path"), ("dataset", "path"))  # where the run found its files: not the reader's business


def public_config(config: dict) -> dict:
    """The run's config as a model card shows it: no local paths (run dir, model and data folders)."""
    shown = {key: dict(value) if isinstance(value, dict) else value for key, value in config.items()
             if key not in ("output_dir", "overrides")}
    for section, key in LOCAL_PATHS:
        if shown.get(section, {}).get(key):
            shown[section][key] = "(a local folder)"
    return shown


def _weights_note(run: Run) -> str:
    if run.model.path:
        return " (its weights read from a local folder)"
    if run.model.weights_package:
        return f" (weights from the Python package {run.model.weights_package})"
    return ""


def _data_note(run: Run) -> str:
    if run.dataset.path:
        hub = f"; on the Hub: {run.dataset.hub_id}" if run.dataset.hub_id else ""
        return f"{run.dataset.name} (local files{hub})"
    return f"the Hub's {run.dataset.hub_id}" + (f" ({run.dataset.hub_config})" if run.dataset.hub_config else "")


def main(argv: list[str] | None = None) -> None:
    """Console entry point of finetune-export."""
    parser = argparse.ArgumentParser(prog="finetune-export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="the directory of a completed run")
    parser.add_argument("out_dir", type=Path, help="where the model directory goes (new or empty)")
    parser.add_argument("--merge", action="store_true", help="fold a LoRA or IA3 adapter into the base weights")
    args = parser.parse_args(argv)
    quiet_libraries()
    try:
        trained = load_run(args.run_dir)
        try:
            out = export(trained, args.out_dir, args.merge)
        except OSError as error:
            raise UserError(f"OUT_DIR: cannot write '{error.filename or args.out_dir}' ({error.strerror})") from error
    except UserError as error:
        print(f"finetune-export: error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    print(f"exported to {out}")
