"""GPU placement of parallel multirun jobs, checked on the CPU with a pretended GPU count."""

from __future__ import annotations

import os
import threading
import time
from contextlib import ExitStack

import pytest
import torch

from finetune.placement import DEVICE_VARIABLE, gpu_slot, placed_on_gpu
from finetune.schema import HardwareSpec


def test_jobs_one_after_another_go_round_robin(tmp_path):
    used = []
    for job in range(5):
        with gpu_slot(tmp_path, job, gpus=2, jobs_per_gpu=1) as gpu:
            used.append(gpu)
    assert used == [0, 1, 0, 1, 0]


def test_running_jobs_fill_every_gpu_before_packing_a_second_job_on_one(tmp_path):
    with ExitStack() as held:
        used = [held.enter_context(gpu_slot(tmp_path, job, gpus=3, jobs_per_gpu=2)) for job in range(6)]
    assert used == [0, 1, 2, 0, 1, 2]


def test_a_job_waits_while_every_slot_is_taken_and_gets_the_first_freed(tmp_path):
    got = []
    with ExitStack() as held:
        first = ExitStack()
        first.enter_context(gpu_slot(tmp_path, 0, gpus=2, jobs_per_gpu=1))
        held.enter_context(gpu_slot(tmp_path, 1, gpus=2, jobs_per_gpu=1))

        def third_job():
            with gpu_slot(tmp_path, 2, gpus=2, jobs_per_gpu=1, poll_s=0.01) as gpu:
                got.append(gpu)

        waiting = threading.Thread(target=third_job)
        waiting.start()
        time.sleep(0.3)
        assert got == []  # both GPUs are busy with one job each
        first.close()  # job 0 ends and frees GPU 0
        waiting.join(timeout=10)
    assert got == [0]


def test_placement_points_accelerate_at_the_slot_and_restores_the_environment(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv(DEVICE_VARIABLE, raising=False)
    spec = HardwareSpec(name="auto", jobs_per_gpu=2)
    with placed_on_gpu(spec, tmp_path, job_number=3) as gpu:
        assert (gpu, os.environ[DEVICE_VARIABLE]) == (1, "cuda:1")
    assert DEVICE_VARIABLE not in os.environ


@pytest.mark.parametrize("spec, lock_dir, gpus", [
    (HardwareSpec(name="cpu", device="cpu"), "slots", 2),  # hardware=cpu: GPUs are not used
    (HardwareSpec(name="auto"), None, 2),  # a single run: Accelerate picks the device
    (HardwareSpec(name="auto"), "slots", 0),  # no GPU visible
])
def test_placement_changes_nothing_without_gpus_to_place_on(tmp_path, monkeypatch, spec, lock_dir, gpus):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.delenv(DEVICE_VARIABLE, raising=False)
    with placed_on_gpu(spec, lock_dir and tmp_path / lock_dir, job_number=0) as gpu:
        assert gpu is None and DEVICE_VARIABLE not in os.environ
    assert not (tmp_path / "slots").exists()


def test_jobs_per_gpu_must_be_positive():
    from finetune.errors import UserError

    with pytest.raises(UserError, match="hardware.jobs_per_gpu"):
        HardwareSpec(name="gpu", jobs_per_gpu=0)
