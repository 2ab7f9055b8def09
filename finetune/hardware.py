"""Device, precision and memory: the only module that asks what hardware there is."""

from __future__ import annotations

import resource

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


def peak_memory_mb(accelerator: Accelerator) -> float:
    """Peak GPU memory allocated by torch, or the process's peak resident memory on the CPU."""
    if accelerator.device.type == "cuda":
        return torch.cuda.max_memory_allocated(accelerator.device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
