"""Which GPU a multirun job uses: round-robin over the visible GPUs, at most `hardware.jobs_per_gpu`
jobs on one GPU at a time.

A slot is a lock file in the sweep dir, so jobs in separate joblib worker processes agree without
talking to each other, and a job that dies frees its slot (the OS drops its lock).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from finetune.schema import HardwareSpec

log = logging.getLogger(__name__)

DEVICE_VARIABLE = "ACCELERATE_TORCH_DEVICE"  # Accelerate's device for a single-process run


@contextmanager
def gpu_slot(lock_dir: Path, job_number: int, gpus: int, jobs_per_gpu: int, poll_s: float = 0.5) -> Iterator[int]:
    """Hold a free slot for the body and yield its GPU; wait while all are taken.

    The search starts at GPU `job_number % gpus` and fills every GPU's first slot before any second.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    order = [(slot, (job_number + offset) % gpus) for slot in range(jobs_per_gpu) for offset in range(gpus)]
    waited = False
    while True:
        for slot, gpu in order:
            handle = open(lock_dir / f"gpu{gpu}-slot{slot}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield gpu
            finally:
                handle.close()  # closing releases the lock
            return
        if not waited:
            log.info("Job %d waits for a free GPU slot (%d GPUs x %d jobs each)", job_number, gpus, jobs_per_gpu)
            waited = True
        time.sleep(poll_s)


@contextmanager
def placed_on_gpu(spec: HardwareSpec, lock_dir: Path | None, job_number: int) -> Iterator[int | None]:
    """In a multirun (`lock_dir` set) on a machine with GPUs, run the body on a free GPU slot; else change nothing."""
    import torch  # here, not at the top: the CLI imports this module before the config is validated

    gpus = torch.cuda.device_count() if spec.device != "cpu" else 0
    if lock_dir is None or gpus == 0:
        yield None
        return
    with gpu_slot(lock_dir, job_number, gpus, spec.jobs_per_gpu) as gpu:
        previous = os.environ.get(DEVICE_VARIABLE)
        os.environ[DEVICE_VARIABLE] = f"cuda:{gpu}"
        log.info("Job %d runs on cuda:%d", job_number, gpu)
        try:
            yield gpu
        finally:
            if previous is None:
                os.environ.pop(DEVICE_VARIABLE, None)
            else:
                os.environ[DEVICE_VARIABLE] = previous
