"""What the run's results depend on beyond its config: the installed libraries' versions, the
project's code (its git commit, when run from a checkout) and the command that started it."""

from __future__ import annotations

import os
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
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout
        return found
    try:  # without the index lock, so that runs in parallel (or a user's own git) never collide
        found["git_dirty"] = bool(_git(package, "--no-optional-locks", "status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        found["git_dirty"] = None  # unknown, and said so in the report
    return found


def _git(directory: Path, *arguments: str) -> str:
    return subprocess.run(["git", "-C", str(directory), *arguments], capture_output=True, text=True, check=True,
                          timeout=10).stdout.strip()


COMMAND_VARIABLE = "FINETUNE_COMMAND"  # set at the entry point, inherited by a launcher's worker processes


def remember_command(program: str = "finetune") -> None:
    """Keep the command as typed for every run it starts, including those a launcher (joblib, submitit)
    runs in processes whose own command line is the launcher's."""
    os.environ.setdefault(COMMAND_VARIABLE, _typed(program))


def command_line() -> str:
    """The command as typed (shell-quoted), e.g. `finetune -m method=lora,full train.seed=1,2`."""
    return os.environ.get(COMMAND_VARIABLE) or _typed(Path(sys.argv[0]).name)


def _typed(program: str) -> str:
    name = "python -m finetune" if Path(sys.argv[0]).name == "__main__.py" else program
    return shlex.join([*shlex.split(name), *sys.argv[1:]])
