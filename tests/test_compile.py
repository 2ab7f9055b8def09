"""hardware.compile: the training forward runs under torch.compile and gives the eager result."""

from __future__ import annotations

import pytest
import torch

from finetune.hardware import compiled
from finetune.runner import execute
from finetune.schema import HardwareSpec


def test_compile_wraps_the_model_only_when_asked():
    model = torch.nn.Linear(2, 2)
    assert compiled(model, HardwareSpec(name="cpu")) is model
    assert isinstance(compiled(model, HardwareSpec(name="cpu", compile=True)), torch._dynamo.eval_frame.OptimizedModule)


@pytest.mark.slow
@pytest.mark.parametrize("method", [("method=full",), ("method=last_layers", "method.num_layers=1")],
                         ids=["full", "last_layers"])  # last_layers: its frozen block replays cached states
def test_a_compiled_run_matches_the_eager_run(tiny_plan, tmp_path, method):
    settings = ("train.epochs=1", "train.max_steps=4", *method)
    eager = execute(tiny_plan(*settings, output_dir=tmp_path / "eager"))
    fast = execute(tiny_plan(*settings, "hardware.compile=true", output_dir=tmp_path / "compiled"))
    assert fast.status == "completed"
    assert fast.metrics["test"]["loss"] == pytest.approx(eager.metrics["test"]["loss"], rel=1e-3)
