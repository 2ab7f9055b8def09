#!/usr/bin/env bash
# Runs the test suite against the newest releases of finetune's dependencies (not constraints.txt),
# in a fresh virtual environment, and prints which versions it got and how they differ from the
# pinned ones. Extra arguments go to pytest:
#   scripts/test_newest.sh                 # the whole suite
#   scripts/test_newest.sh -m "not slow"   # the quick subset
# torch stays at the tested release (TORCH=torch==2.13.0): PyPI's newest torch for Linux is a
# multi-GB CUDA build; set TORCH=torch to take it anyway.
# A combination that a new release breaks fails here, or is skipped with the reason finetune.compat
# gives for refusing it; pytest's summary (-ra) lists those skips.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
python3 -m venv "$venv"
source "$venv/bin/activate"
pip install --quiet --upgrade pip
pip install --quiet --upgrade --upgrade-strategy eager "${TORCH:-torch==2.13.0}" -e ".[dev]"
python - <<'PY'
from importlib.metadata import version
pinned = dict(line.strip().split("==", 1) for line in open("constraints.txt") if "==" in line and not line.startswith("#"))
for name in ("torch", "transformers", "peft", "accelerate", "datasets", "hydra-core", "evaluate", "scikit-learn", "tokenizers",
             "optuna"):
    found, tested = version(name), pinned.get(name, "?")
    print(f"newest  {name:<14} {found:<12}" + ("" if found.split("+")[0] == tested else f"(constraints.txt: {tested})"))
PY
python -m pytest -n auto "$@"
