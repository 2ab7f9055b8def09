"""Device and precision choice, and per-run peak memory."""

from __future__ import annotations

import mmap
import os
import time

import pytest
import torch

from finetune.errors import UserError
from finetune.hardware import CPU_BF16_CHECKS, PeakMemory, cpu_has_native_bf16, make_accelerator
from finetune.schema import HardwareSpec


def test_auto_precision_on_a_cpu_is_bf16_only_where_the_cpu_computes_it_natively(monkeypatch):
    for check in CPU_BF16_CHECKS:
        monkeypatch.setattr(torch.cpu, check, lambda: False, raising=False)
    assert make_accelerator(HardwareSpec(name="auto", device="cpu"), grad_accum=2).mixed_precision == "no"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    accelerator = make_accelerator(HardwareSpec(name="auto", device="cpu"), grad_accum=2)
    assert (accelerator.device.type, accelerator.mixed_precision, accelerator.gradient_accumulation_steps) == ("cpu", "bf16", 2)
    # hardware=cpu asks for fp32 whatever the CPU
    assert make_accelerator(HardwareSpec(name="cpu", device="cpu", precision="fp32"), grad_accum=1).mixed_precision == "no"


def test_a_torch_without_the_cpu_probes_means_no_native_bf16(monkeypatch):
    for check in CPU_BF16_CHECKS:
        monkeypatch.delattr(torch.cpu, check, raising=False)
    assert cpu_has_native_bf16() is False


def test_this_machines_cpu_is_detected_as_its_flags_say():
    flags = open("/proc/cpuinfo").read().split() if os.path.exists("/proc/cpuinfo") else []
    if not flags:
        pytest.skip("no /proc/cpuinfo to compare with")
    assert cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_tile" in flags)


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
