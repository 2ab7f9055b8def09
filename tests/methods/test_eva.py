"""EVA (method=eva): LoRA's A matrices from the SVD of each targeted layer's inputs over training
batches, once before a fresh run's optimizer is built; a resumed run keeps its checkpoint's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from finetune.errors import UserError
from finetune.methods import data_init
from finetune.runner import execute

from conftest import SimulatedCrash, crash_after_checkpoint


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


def test_a_crashed_eva_run_resumes_to_the_uninterrupted_result_without_initialising_again(family_plan, tmp_path,
                                                                                        monkeypatch):
    from finetune.methods.by_config import PeftByConfig

    settings = ("train.epochs=2", "train.save_every_steps=1", "train.lr=1e-3")
    reference = execute(family_plan("bert", "eva", *settings, output_dir=tmp_path / "reference"))
    with crash_after_checkpoint(monkeypatch, 3), pytest.raises(SimulatedCrash):
        execute(family_plan("bert", "eva", *settings, output_dir=tmp_path / "crashed"))
    calls = []
    original = PeftByConfig.initialize
    monkeypatch.setattr(PeftByConfig, "initialize", lambda self, model, batches: calls.append(1) or original(self, model, batches))
    resumed = execute(family_plan("bert", "eva", *settings, output_dir=tmp_path / "crashed"))
    assert resumed.training["resumed_from_step"] == 3 and not calls
    assert resumed.metrics == reference.metrics


def test_eva_keeps_a_bounded_number_of_batches_and_stops_an_svd_that_never_settles(family_plan, monkeypatch):
    monkeypatch.setattr(data_init, "MAX_KEPT_BATCHES", 1)
    assert len(list(data_init._Kept([{"x": torch.zeros(2)}] * 5))) == 1
    monkeypatch.setattr(data_init, "MAX_STEPS", 2)
    with pytest.raises(UserError, match=r"^method: EVA's SVD did not settle within 2 training batches"):
        execute(family_plan("bert", "eva", "train.max_steps=1", "+method.args.eva_config.tau=1.0"))


def test_eva_seconds_count_as_training_time(family_plan, monkeypatch):
    import time

    original = data_init.initialize_eva
    monkeypatch.setattr("finetune.methods.by_config.initialize_eva",
                        lambda model, batches: (time.sleep(1.5), original(model, batches)))
    outcome = execute(family_plan("bert", "eva", "train.max_steps=1"))
    assert outcome.train_seconds >= 1.5
