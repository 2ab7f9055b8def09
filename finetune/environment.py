"""What the run's results depend on beyond its config: the installed libraries' versions, the
project's code (its git commit, when run from a checkout) and the command that started it."""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

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


PACKAGE = Path(__file__).resolve().parent


@lru_cache(maxsize=4)
def code_version(package: Path = PACKAGE) -> dict[str, object]:
    """finetune's version, and where `package` sits in a git checkout of finetune its commit and
    whether the tree had changes (tracked, or untracked files that git does not ignore)."""
    found: dict[str, object] = {"version": library_versions(("finetune",), python=False).get("finetune", "unknown")}
    try:
        root = _git(package, "rev-parse", "--show-toplevel")
        if not (Path(root) / "finetune" / "environment.py").is_file():  # a user's repository around an install
            return found
        found["git_commit"] = _git(package, "rev-parse", "HEAD")
        found["git_dirty"] = bool(_git(package, "status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout
        pass
    return found


def _git(directory: Path, *arguments: str) -> str:
    return subprocess.run(["git", "-C", str(directory), *arguments], capture_output=True, text=True, check=True,
                          timeout=10).stdout.strip()


def command_line() -> str:
    """The command as typed (shell-quoted), e.g. `finetune -m method=lora,full train.seed=1,2`."""
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
