"""Tasks: one module per kind of task (`dataset.task`): classification, multilabel, summarization.

Each module registers a `TaskKind` (its data columns and labels, refusals, what predict and export
need) and holds the model routes (`Task` classes: how texts are encoded and batched, which model
class trains, how outputs are scored). A new kind is a new module here; nothing else switches on a
task's name: the plan (finetune.plan) looks the kind up once and hands it on.
"""

from __future__ import annotations

import importlib
import pkgutil

from finetune.errors import UserError
from finetune.tasks.base import BatchOutput, ModelParts, Task, TaskKind

__all__ = ["TASK_KINDS", "BatchOutput", "ModelParts", "Task", "TaskKind", "register_task", "task_kind"]

TASK_KINDS: dict[str, TaskKind] = {}  # dataset.task -> its kind


def register_task(kind: type[TaskKind]) -> type[TaskKind]:
    """Class decorator: `dataset.task=<kind.name>` runs this kind."""
    TASK_KINDS[kind.name] = kind()
    return kind


def task_kind(name: str) -> TaskKind:
    if name not in TASK_KINDS:
        raise UserError(f"dataset.task: '{name}' is not allowed; choose one of {', '.join(sorted(TASK_KINDS))}")
    return TASK_KINDS[name]


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
