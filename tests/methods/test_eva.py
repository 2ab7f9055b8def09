"""EVA (method=eva): LoRA's A matrices from the SVD of each targeted layer's inputs over training
batches, once before a fresh run's optimizer is built; a resumed run keeps its checkpoint's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from finetune.errors import UserError
from finetune.runner import execute


def a_matrices(run_dir: Path) -> dict[str, torch.Tensor]:
    weights = load_file(str(run_dir / "model" / "adapter_model.safetensors"))
    return {name: weight for name, weight in weights.items() if "lora_A" in name}


def orthonormality_error(a: torch.Tensor) -> float:
    """How far A's rows are from orthonormal (EVA's are right singular vectors; peft's default A is random)."""
    return float((a @ a.T - torch.eye(a.shape[0])).abs().max())


@pytest.mark.parametrize("method,orthonormal", [("eva", True), ("lora", False)])
def test_the_engine_starts_eva_from_singular_vectors_of_the_training_inputs(family_plan, method, orthonormal):
    plan = family_plan("bert", method, "method.target_modules=[query,value]" if method == "lora" else "method.targets=[attention]",
                       "train.lr=1e-6", "train.max_steps=1")
    execute(plan)
    errors = [orthonormality_error(a) for a in a_matrices(Path(plan.run.output_dir)).values()]
    assert errors and all((error < 1e-3) == orthonormal for error in errors)


def test_eva_depends_on_the_data(family_plan):
    """The same run on other training rows starts from other A matrices."""
    first = family_plan("bert", "eva", "train.lr=1e-6", "train.max_steps=1")
    execute(first)
    other = family_plan("bert", "eva", "train.lr=1e-6", "train.max_steps=1", "dataset.max_train_samples=16")
    execute(other)
    a, b = a_matrices(Path(first.run.output_dir)), a_matrices(Path(other.run.output_dir))
    assert a.keys() == b.keys() and any(not torch.allclose(a[name], b[name], atol=1e-3) for name in a)


def test_eva_that_moves_ranks_is_refused_in_one_line(family_plan):
    with pytest.raises(UserError, match=r"^method.args.eva_config.rho: must be 1.0, got 2.0: a resumed run rebuilds"):
        family_plan("bert", "eva", "method.args.eva_config.rho=2.0")
