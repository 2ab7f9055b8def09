"""The `finetune` command: Hydra composes the config, `execute` runs it, bad input exits 2."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from finetune.errors import EXIT_BAD_INPUT, USER_ERRORS, Interrupted, RunError, one_line
from finetune.schema import build_run, register_configs

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

register_configs()
_job_started = threading.Event()  # set once Hydra has made the run dir and called the job


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
def _app(config: DictConfig) -> float:
    _job_started.set()
    run = build_run(config)
    from finetune.runner import execute  # heavy imports only once the config is known to be valid

    _quiet_libraries()
    results = execute(run)
    print(format_summary(results, Path(run.output_dir)))
    return results["metrics"]["validation"][results["main_metric"]]  # for Hydra sweepers (Optuna)


def main() -> None:
    """Console entry point: one line and exit code 2 for bad input, unless HYDRA_FULL_ERROR=1."""
    wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us instead of Hydra's exit(1)
    try:
        _app()
    except USER_ERRORS as error:
        if wants_traceback:
            raise
        print(f"finetune: error: {one_line(error)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except OSError as error:
        if wants_traceback or _job_started.is_set():
            raise
        # Hydra creates the run dir (and its log file) before the job starts
        print(f"finetune: error: hydra.run.dir: cannot write the run directory "
              f"'{error.filename}' ({error.strerror})", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except RunError as error:
        if wants_traceback:
            raise
        print(f"finetune: run failed: {error}", file=sys.stderr)
        sys.exit(1)
    except Interrupted as error:
        print(f"finetune: interrupted: {error}", file=sys.stderr)
        sys.exit(143)  # 128 + SIGTERM, as if the signal had ended the process


def _quiet_libraries() -> None:
    import logging
    import warnings

    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers|peft")


def format_summary(results: dict[str, Any], run_dir: Path) -> str:
    """The few lines a researcher reads at the end of a run."""
    params = results["params"]
    lines = [f"\n{results['model']} + {results['method']} on {results['dataset']}: {results['status']}"]
    for split, metrics in results["metrics"].items():
        # the loss and per-label F1 stay in results.json
        shown = "  ".join(f"{name} {value:.4f}" for name, value in metrics.items()
                          if name != "loss" and not name.startswith("f1_"))
        lines.append(f"  {split:<11} {shown}")
    lines.append(
        f"  trainable   {params['trainable']:,} of {params['total']:,} parameters "
        f"({100 * params['trainable'] / params['total']:.2f}%)"
    )
    if results["train_seconds"]:
        lines.append(
            f"  training    {results['train_seconds']:.1f} s, {results['train_samples_per_second']:.1f} samples/s, "
            f"peak memory {results['peak_memory_mb']:,.0f} MB"
        )
    lines.append(f"  artifacts   {run_dir}  (results.json, model/, tensorboard/)")
    return "\n".join(lines)
