"""Device and precision choice, and per-run peak memory."""

from __future__ import annotations

import mmap
import time

import pytest
import torch

from finetune.errors import UserError
from finetune.hardware import PeakMemory, make_accelerator
from finetune.schema import HardwareSpec


def test_auto_on_a_cpu_machine_is_cpu_fp32():
    accelerator = make_accelerator(HardwareSpec(name="auto"), grad_accum=2)
    assert accelerator.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        assert accelerator.mixed_precision == "no"
    assert accelerator.gradient_accumulation_steps == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_gpu_and_fp16_without_a_gpu_are_refused():
    with pytest.raises(UserError, match="hardware.device: 'gpu' requested but no CUDA device"):
        make_accelerator(HardwareSpec(name="gpu", device="gpu"), grad_accum=1)
    with pytest.raises(UserError, match="hardware.precision: fp16 needs a GPU"):
        make_accelerator(HardwareSpec(name="cpu", device="cpu", precision="fp16"), grad_accum=1)


def test_peak_memory_is_per_run_not_per_process():
    cpu = torch.device("cpu")
    first = PeakMemory(interval_s=0.01)
    block = mmap.mmap(-1, 64 * 2**20)  # 64 MiB of fresh pages: the allocator cannot reuse freed memory
    block.write(b"x" * len(block))
    time.sleep(0.1)
    big_peak = first.peak_mb(cpu)
    first.stop()
    block.close()
    second = PeakMemory(interval_s=0.01)
    time.sleep(0.1)
    small_peak = second.peak_mb(cpu)
    second.stop()
    assert big_peak - small_peak > 32


def test_jobs_sharing_a_process_each_get_their_own_precision():
    # a multirun runs its jobs in one process; Accelerate's state must not carry over between them
    first = make_accelerator(HardwareSpec(name="cpu", device="cpu", precision="fp32"), grad_accum=1).mixed_precision
    second = make_accelerator(HardwareSpec(name="cpu", device="cpu", precision="bf16"), grad_accum=2)
    assert (first, second.mixed_precision, second.gradient_accumulation_steps) == ("no", "bf16", 2)
