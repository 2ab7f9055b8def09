"""Peak memory of full fine-tuning against LoRA and prompt tuning: same model, data and batch.

Each method is one `finetune` run in its own process, so each peak is its own (GPU: max allocated;
CPU: max resident memory of the process). The last lines are the ratios to full fine-tuning.

  python scripts/bench_memory.py                         # MiniLM, 1,024 rotten_tomatoes samples
  python scripts/bench_memory.py --train-samples 0 hardware=gpu train.batch_size=128
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import DEFAULT_DATA, ROOT, write_subset

SEED = 42
METHODS = ("full", "lora", "prompt_tuning")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="a directory with train.jsonl and validation.jsonl")
    parser.add_argument("--train-samples", type=int, default=1024, help="seeded subset of train; 0: all")
    parser.add_argument("overrides", nargs="*", help="finetune overrides for every method, e.g. model=distilbert")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="finetune-memory-") as scratch:
        data = write_subset(Path(args.data), args.train_samples, SEED, Path(scratch) / "data")
        peaks = {method: _peak(method, data, Path(scratch) / method, args.overrides) for method in METHODS}
    print("| method | trainable parameters | peak memory MB | validation accuracy |\n|---|---|---|---|")
    for method, (trainable, peak, accuracy) in peaks.items():
        print(f"| {method} | {trainable:,} | {peak:,.0f} | {accuracy:.4f} |")
    full = peaks["full"][1]
    for method in METHODS[1:]:
        print(f"{method} / full peak memory: {peaks[method][1] / full:.2f}")


def _peak(method: str, data: Path, run_dir: Path, overrides: list[str]) -> tuple[int, float, float]:
    command = [sys.executable, "-m", "finetune", f"method={method}", "dataset=local", f"dataset.path={data}",
               f"hydra.run.dir={run_dir}", *overrides]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    results = json.loads((run_dir / "results.json").read_text())
    return results["params"]["trainable"], results["peak_memory_mb"], results["metrics"]["validation"]["accuracy"]


if __name__ == "__main__":
    main()
