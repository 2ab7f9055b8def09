"""Device, precision and memory: the only module that asks what hardware there is."""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import subprocess
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import psutil
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration, broadcast_object_list
from torch import nn

from finetune.errors import UserError
from finetune.schema import HardwareSpec, Run

log = logging.getLogger(__name__)

MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def run_precision(accelerator: Accelerator) -> str:
    """The precision the run computes in, named as hardware.precision names it (fp32, bf16, fp16)."""
    return {mixed: name for name, mixed in MIXED_PRECISION.items()}[accelerator.mixed_precision]


CPU_BF16_CHECKS = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's (private) probes


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (avx512_bf16 or AMX). Only there is bf16 autocast
    faster than fp32; on an AVX2-only CPU it was 20x slower. A torch without the probes: False."""
    return any(getattr(torch.cpu, check, lambda: False)() for check in CPU_BF16_CHECKS)


@lru_cache(maxsize=1)
def machine() -> dict[str, Any]:
    """The machine a run ran on, for its record: CPU model and cores (those this process may use
    too), native bf16, memory, and the GPUs with their CUDA and driver versions."""
    gpus = [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_native_bf16": cpu_has_native_bf16(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(), "gpus": gpus, "gpu_count": len(gpus),
        "cuda": torch.version.cuda if gpus else None, "gpu_driver": _gpu_driver() if gpus else None,
    }


def _cpu_model() -> str:
    try:  # Linux names the model; platform.processor() often gives only the architecture there
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_driver() -> str | None:
    try:
        found = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.split()
        return found[0] if found else None
    except (OSError, subprocess.SubprocessError):
        return None


def auto_precision(on_cpu: bool) -> str:
    """`hardware.precision=auto`: bf16 where the device computes it natively (GPUs that support it,
    CPUs with avx512_bf16 or AMX), else fp32."""
    native = cpu_has_native_bf16() if on_cpu else torch.cuda.is_bf16_supported()
    return "bf16" if native else "fp32"


def check_device(spec: HardwareSpec) -> None:
    """The device and precision asked for exist on this machine (checked before anything is written)."""
    gpu = torch.cuda.is_available()
    if spec.device == "gpu" and not gpu:
        raise UserError("hardware.device: 'gpu' requested but no CUDA device is visible; use hardware=cpu or hardware=auto")
    if spec.precision == "fp16" and (spec.device == "cpu" or not gpu):
        raise UserError("hardware.precision: fp16 needs a GPU; use fp32 or bf16 on the CPU")


def make_accelerator(spec: HardwareSpec, grad_accum: int) -> Accelerator:
    """An Accelerator for the requested device and precision (`auto`: see auto_precision)."""
    check_device(spec)
    on_cpu = spec.device == "cpu" or not torch.cuda.is_available()
    precision = spec.precision
    if precision == "auto":
        precision = auto_precision(on_cpu)
        device = torch.cuda.get_device_name() if not on_cpu else (
            "a CPU with native bf16" if precision == "bf16" else "a CPU without native bf16")
        log.info("Precision %s: hardware.precision=auto on %s", precision, device)
    if spec.num_threads:
        torch.set_num_threads(spec.num_threads)
    # a multirun's jobs share a process, and Accelerate keeps the first job's precision and device in
    # process-wide state; reset it per run, except a launcher's process group (WORLD_SIZE > 1)
    AcceleratorState._reset_state(reset_partial_state=process_count() == 1)
    # split_batches: train.batch_size is the global batch, so 1 or N processes see the same batches;
    # non_blocking: batches from pinned memory go to the GPU while it still works on the last one
    loading = DataLoaderConfiguration(split_batches=True, non_blocking=not on_cpu)
    return Accelerator(cpu=on_cpu, mixed_precision=MIXED_PRECISION[precision], gradient_accumulation_steps=grad_accum,
                       dataloader_config=loading)


def agree_on_processes(run: Run, accelerator: Accelerator) -> Run:
    """Under `accelerate launch`: give every process the main one's run dir, and let only the main
    process log progress (the plan checked that the run can be split)."""
    if accelerator.num_processes == 1:
        return run
    if not accelerator.is_main_process:  # one log of the run, not one copy per process
        logging.getLogger("finetune").setLevel(logging.WARNING)
    main_dir = broadcast_object_list([run.output_dir])[0]
    if main_dir != run.output_dir:  # Hydra's ${now} can differ by a second between processes
        log.warning("Process %d writes to the main process's run dir %s, not %s; pass hydra.run.dir to avoid the stray dir",
                    accelerator.process_index, main_dir, run.output_dir)
        run = dataclasses.replace(run, output_dir=main_dir)
    return run


def process_count() -> int:
    """The processes a launcher (accelerate launch, torchrun) started for this run; 1 without one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


MAX_AUTO_LOADER_WORKERS = 4


def loader_workers(spec: HardwareSpec, decodes_inputs: bool) -> int:
    """Processes that prepare batches for the loader: `hardware.loader_workers`, else, where the task
    decodes its inputs per batch (images), one per CPU core the training process leaves free, up to 4;
    else none (token ids need no work)."""
    if spec.loader_workers is not None:
        return spec.loader_workers
    if not decodes_inputs:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_AUTO_LOADER_WORKERS, cores - 1))


def compiled(model: nn.Module, spec: HardwareSpec) -> nn.Module:
    """The model under torch.compile when hardware.compile is set; dynamic, since batch lengths vary."""
    return torch.compile(model, dynamic=True) if spec.compile else model


class PeakMemory:
    """Peak memory of one run: GPU memory allocated by torch, or resident memory sampled on the CPU.

    Sampled rather than read from ru_maxrss, which covers the whole process: a Hydra multirun
    runs every job in one process, and each job must report its own peak.
    """

    def __init__(self, interval_s: float = 0.05) -> None:
        self.process, self.peak_bytes = psutil.Process(), 0
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._sample, args=(interval_s,), daemon=True)
        self.thread.start()

    def _sample(self, interval_s: float) -> None:
        while not self.stopped.wait(interval_s):
            self.peak_bytes = max(self.peak_bytes, self.process.memory_info().rss)

    def peak_mb(self, device: torch.device) -> float:
        """The peak so far in MiB: GPU memory on a CUDA device, else resident memory."""
        if device.type == "cuda":
            return torch.cuda.max_memory_allocated(device) / 2**20
        return max(self.peak_bytes, self.process.memory_info().rss) / 2**20

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()
