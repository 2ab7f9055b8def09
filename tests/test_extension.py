"""Extension points stay extension points: only a task kind's module names the kind, and only a
method's module names the method (finetune.compat's list of known upstream breaks aside)."""

from __future__ import annotations

import re
from pathlib import Path

from finetune.methods import METHODS
from finetune.tasks import TASK_KINDS

SOURCE = Path(__file__).parent.parent / "finetune"


def _naming(names: list[str], outside: str, allowed: tuple[str, ...] = (), default: str = "^$") -> list[str]:
    """Lines of modules outside `outside` (and `allowed`) that quote one of `names`, except the
    line matching `default` (a schema's default value)."""
    quoted = re.compile("|".join(f"[\"']{re.escape(name)}[\"']" for name in names))
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE).as_posix()
        if relative.startswith(outside) or relative in allowed:
            continue
        found += [f"{relative}:{number}" for number, line in enumerate(path.read_text().splitlines(), 1)
                  if quoted.search(line) and not re.search(default, line)]
    return found


def test_no_module_outside_finetune_tasks_switches_on_a_task_kind():
    assert set(TASK_KINDS) == {"classification", "multilabel", "summarization", "image_classification"}
    assert _naming(sorted(TASK_KINDS), "tasks/", default=r'^    task: str = "classification"') == []


def test_no_module_outside_finetune_methods_names_a_method():
    named = sorted(set(METHODS) - {"none"})  # "none" is also just a word (a label set's empty target)
    assert _naming(named, "methods/", allowed=("compat.py",)) == []
