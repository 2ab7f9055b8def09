"""Device, precision and memory: the only module that asks what hardware there is."""

from __future__ import annotations

import threading

import psutil
import torch
from accelerate import Accelerator

from finetune.errors import UserError
from finetune.schema import HardwareSpec

MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def make_accelerator(spec: HardwareSpec, grad_accum: int) -> Accelerator:
    """An Accelerator for the requested device; `auto` precision is bf16 on capable GPUs, else fp32.

    fp32 stays the CPU default: bf16 autocast is only fast on CPUs with native bf16 (avx512_bf16/AMX)
    and was 20x slower than fp32 on an AVX2-only CPU.
    """
    gpu = torch.cuda.is_available()
    if spec.device == "gpu" and not gpu:
        raise UserError("hardware.device: 'gpu' requested but no CUDA device is visible; use hardware=cpu or hardware=auto")
    on_cpu = spec.device == "cpu" or not gpu
    precision = spec.precision
    if precision == "auto":
        precision = "bf16" if not on_cpu and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and on_cpu:
        raise UserError("hardware.precision: fp16 needs a GPU; use fp32 or bf16 on the CPU")
    if spec.num_threads:
        torch.set_num_threads(spec.num_threads)
    return Accelerator(cpu=on_cpu, mixed_precision=MIXED_PRECISION[precision], gradient_accumulation_steps=grad_accum)


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
