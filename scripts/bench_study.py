"""`bench.py --study`: a small method study run as `finetune -m` sweeps, with and without the
frozen-feature cache, side by side in one process; then the issue's targets for head_only and
last_layers. Every figure printed is measured in this run."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from finetune.record import RunRecord

ROOT = Path(__file__).resolve().parent.parent
STUDY = {  # method -> learning rates around its default (svm_embeddings ignores lr; a sweep reruns it anyway)
    "head_only": (3e-3, 1e-2, 3e-2),
    "last_layers": (1e-4, 3e-4, 1e-3),
    "svm_embeddings": (1e-4, 3e-4, 1e-3),
}
SEEDS = (1, 2)
EPOCHS = 3


@dataclass(frozen=True)
class Sweep:
    method: str
    cached: bool
    wall_seconds: float  # the whole `finetune -m` command
    runs: list[RunRecord]


def run_study(train_samples: int, family: str, machine: str) -> None:
    """Run every sweep without and with the cache (a fresh cache folder), print the comparison."""
    with tempfile.TemporaryDirectory(prefix="finetune-study-") as scratch:
        scratch_dir = Path(scratch)
        print(f"{machine}\nstudy: {family}, bundled rotten_tomatoes with {train_samples} training samples, "
              f"{EPOCHS} epochs, seeds {SEEDS}, hardware=auto", flush=True)
        sweeps = []
        for method, lrs in STUDY.items():
            for cached in (False, True):
                overrides = [f"method={method}", "train.lr=" + ",".join(map(str, lrs)),
                             "train.seed=" + ",".join(map(str, SEEDS)), f"train.epochs={EPOCHS}"]
                sweeps.append(_sweep(method, cached, family, train_samples, overrides, scratch_dir))
                print(f"{method} {'with' if cached else 'without'} the cache: {sweeps[-1].wall_seconds:.0f} s", flush=True)
        head_only = [_single(cached, family, train_samples, epochs, scratch_dir) for cached, epochs in ((True, 5), (False, 1))]
    _print_accuracies(sweeps)
    _print_times(sweeps, head_only)


def _finetune(arguments: list[str], cached: bool, family: str, train_samples: int, cache_dir: Path, log: Path) -> float:
    """Run `finetune ARGUMENTS`; returns its wall-clock seconds."""
    command = [sys.executable, "-m", "finetune", *arguments, f"model={family}", f"dataset.max_train_samples={train_samples}",
               f"train.feature_cache={str(cached).lower()}", "hardware=auto"]
    started = time.perf_counter()
    with log.open("w") as output:
        finished = subprocess.run(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
                                  env={**os.environ, "FINETUNE_CACHE": str(cache_dir)})
    if finished.returncode:
        sys.exit(f"{' '.join(command)} failed; its output: {log}\n{log.read_text()[-3000:]}")
    return time.perf_counter() - started


def _sweep(method: str, cached: bool, family: str, train_samples: int, overrides: list[str], scratch: Path) -> Sweep:
    name = f"{method}-{'cache' if cached else 'no-cache'}"
    seconds = _finetune(["-m", *overrides, f"hydra.sweep.dir={scratch / name}"], cached, family, train_samples,
                        scratch / "cache", scratch / f"{name}.log")
    runs = [RunRecord.read(path) for path in sorted((scratch / name).glob("*/results.json"))]
    return Sweep(method, cached, seconds, runs)


def _single(cached: bool, family: str, train_samples: int, epochs: int, scratch: Path) -> RunRecord:
    """head_only for `epochs` epochs (no early stop), with a cache folder of its own."""
    name = f"head_only-{epochs}-epochs-{'cache' if cached else 'no-cache'}"
    _finetune(["method=head_only", f"train.epochs={epochs}", "train.early_stopping_patience=null", "train.seed=1",
               f"hydra.run.dir={scratch / name}"], cached, family, train_samples, scratch / f"{name}-cache",
              scratch / f"{name}.log")
    return RunRecord.read(scratch / name / "results.json")


def _setting(run: RunRecord, key: str) -> float:
    return run.config["train"][key]


def _print_accuracies(sweeps: list[Sweep]) -> None:
    print("\n| method | lr | test accuracy, seeds 1 and 2: without the cache | with the cache | "
          "difference of the means (points) | seed spread without (points) |")
    print("|---|---|---|---|---|---|")
    widest = 0.0
    for method in STUDY:
        without, with_cache = (next(s for s in sweeps if s.method == method and s.cached == c) for c in (False, True))
        for lr in STUDY[method]:
            scores = [[run.score("test") for run in sorted(sweep.runs, key=lambda r: _setting(r, "seed"))
                       if _setting(run, "lr") == lr] for sweep in (without, with_cache)]
            difference = 100 * (statistics.mean(scores[1]) - statistics.mean(scores[0]))
            spread = 100 * (max(scores[0]) - min(scores[0]))
            widest = max(widest, abs(difference))
            print(f"| {method} | {lr:g} | {', '.join(f'{s:.4f}' for s in scores[0])} | "
                  f"{', '.join(f'{s:.4f}' for s in scores[1])} | {difference:+.2f} | {spread:.2f} |")
    print(f"largest difference of the means with the cache: {widest:.2f} points")


def _print_times(sweeps: list[Sweep], head_only: list[RunRecord]) -> None:
    print("\n| method | sweep s without the cache | with | speed-up | training loop s/epoch without | with |")
    print("|---|---|---|---|---|---|")
    per_epoch = {}
    for method in STUDY:
        without, with_cache = (next(s for s in sweeps if s.method == method and s.cached == c) for c in (False, True))
        loop = [_loop_seconds_per_epoch(sweep.runs) for sweep in (without, with_cache)]
        per_epoch[method] = loop
        shown = [f"{value:.2f}" if value else "-" for value in loop]
        print(f"| {method} | {without.wall_seconds:.0f} | {with_cache.wall_seconds:.0f} | "
              f"{without.wall_seconds / with_cache.wall_seconds:.2f}x | {shown[0]} | {shown[1]} |")
    cached_run, one_epoch = head_only
    print(f"\nhead_only, 5 epochs with the cache (its training features computed: "
          f"{cached_run.frozen_features['train']['seconds']:.1f} s): {cached_run.train_seconds:.1f} s; one epoch without: "
          f"{one_epoch.train_seconds:.1f} s; ratio {cached_run.train_seconds / one_epoch.train_seconds:.2f} (target <= 1.3)")
    without, with_cache = per_epoch["last_layers"]
    print(f"last_layers (2 of 6 blocks), an epoch of the training loop: {with_cache:.2f} s with the cache, "
          f"{without:.2f} s without: {without / with_cache:.2f}x faster (target >= 1.5)")
    total = [sum(s.wall_seconds for s in sweeps if s.cached == c) for c in (False, True)]
    print(f"end to end, every sweep: {total[0]:.0f} s without the cache, {total[1]:.0f} s with (speed-up: without / with)")
    print(f"study with cache / without: {total[0] / total[1]:.2f}x")


def _loop_seconds_per_epoch(runs: list[RunRecord]) -> float | None:
    """Mean seconds of an epoch of the training loop (evaluation excluded); None for methods without it."""
    epochs = [run.training["train_seconds"] / run.training["epochs_run"] for run in runs if run.training]
    return statistics.mean(epochs) if epochs else None

