"""What the run's results depend on beyond its config: the installed libraries' versions."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

RECORDED = ("finetune", "torch", "transformers", "peft", "datasets", "accelerate", "hydra-core")  # in results.json
COMPUTE = ("torch", "transformers")  # whose kernels and model code compute cached features


def library_versions(packages: tuple[str, ...] = RECORDED, python: bool = True) -> dict[str, str]:
    """Installed versions of `packages` (those not installed left out), and Python's."""
    found = {"python": platform.python_version()} if python else {}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
