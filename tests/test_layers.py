"""The package's layers import only downward, read from the source: every import counts, at the
top, inside a function or under TYPE_CHECKING (as the import_graph.py tool in the shared tools reads them)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "finetune"

# lowest first; a module may import from its own layer and the ones before it
LAYERS = (
    ("base", {"errors", "files", "record", "metrics", "environment", "progress", "logs", "sweep_names"}),
    ("schema", {"schema", "logger_spec"}),
    ("parts", {"models", "hardware", "batching", "cache", "checkpoint", "guards", "loading", "compat", "placement",
               "embeddings", "quantization", "provenance", "trackers"}),
    ("tasks", {"tasks", "data"}),
    ("methods", {"methods"}),
    ("plan", {"plan"}),
    ("run", {"frozen", "evaluation", "engine", "artifacts", "trained", "rundir", "trial"}),
    ("runner", {"runner"}),
    ("commands", {"cli", "__main__", "__init__", "sweeps", "search", "evaluate_run", "export", "predict", "report", "studies",
                  "plots", "tiny", "trace", "study", "study_report", "run_environments", "report_html"}),
)


def unit(module: str) -> str:
    """The layer unit of a dotted module under finetune: its package (tasks, methods, frozen) or itself."""
    return module.split(".")[0]


def imports(by_unit: bool = True) -> dict[str, set[str]]:
    """unit (or module) -> the finetune units (or modules) its code imports."""
    group = unit if by_unit else (lambda module: module.removesuffix(".__init__"))
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = group(".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        targets = found.setdefault(module, set())
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            targets |= {group(name.removeprefix("finetune.")) for name in names if name.startswith("finetune.")}
        targets.discard(module)
    return found


def test_every_import_goes_to_the_same_layer_or_below():
    rank = {name: index for index, (_, names) in enumerate(LAYERS) for name in names}
    graph = imports()
    assert set(graph) <= set(rank), f"place these modules in a layer: {sorted(set(graph) - set(rank))}"
    upward = [f"{source} ({LAYERS[rank[source]][0]}) -> {target} ({LAYERS[rank[target]][0]})"
              for source, targets in graph.items() for target in targets if rank[target] > rank[source]]
    assert not upward, upward


def test_there_is_no_import_circle():
    graph, state, circle = imports(by_unit=False), {}, []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in graph.get(node, ()):
            if state.get(target) == "open":
                circle.append(path[path.index(target):] + [target] if target in path else [node, target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert not circle, circle


def test_the_schema_knows_no_method_task_or_plan():
    assert imports()["schema"] <= {"errors", "logger_spec"} and imports()["logger_spec"] <= {"errors"}
