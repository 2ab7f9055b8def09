"""What each run ran with (the libraries' versions, finetune's code, the machine), so that a report
never silently mixes runs made with different ones. A run whose record predates provenance (or holds
it malformed) is unknown there: it is counted apart, never taken for a different environment."""

from __future__ import annotations

from collections import Counter
from typing import Any

from finetune.record import RunRecord

PROVENANCE_KEYS = ("finetune", "machine")  # the keys a record without provenance cannot tell


def environment(record: RunRecord) -> dict[str, str]:
    """The run's versions, code and machine as comparable strings; a key its record does not hold is left out."""
    found = {name: str(value) for name, value in _mapping(record.versions).items() if name != "finetune"}
    provenance = _mapping(record.provenance)
    code, machine = _mapping(provenance.get("code")), _mapping(provenance.get("machine"))
    if code.get("version"):
        commit = code.get("git_commit")
        dirty = {True: " (dirty)", None: " (dirty: unknown)"}.get(code.get("git_dirty"), "") if commit else ""
        found["finetune"] = f"{code['version']} @ {str(commit)[:10]}{dirty}" if commit else str(code["version"])
    if machine:
        found["machine"] = _machine(machine)
    return found


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _machine(machine: dict[str, Any]) -> str:
    gpus = machine.get("gpus")
    counted = Counter(str(name) for name in gpus) if isinstance(gpus, list) else Counter()
    accelerators = ", ".join(f"{count}x {name}" for name, count in sorted(counted.items())) or "no GPU"
    return f"{machine.get('cpu')} ({machine.get('usable_cores')} cores), {accelerators}"


def differences(environments: list[dict[str, str]]) -> tuple[list[list[str]], dict[str, Counter]]:
    """Per run, the keys whose value is not the most common one among the runs that recorded it (ties:
    the first in sorted order); and, for each key on which those runs differ, how many had each value."""
    keys = sorted({key for found in environments for key in found})
    counts = {key: Counter(found[key] for found in environments if key in found) for key in keys}
    mixed = {key: counted for key, counted in counts.items() if len(counted) > 1}
    common = {key: min(counted, key=lambda value: (-counted[value], value)) for key, counted in mixed.items()}
    marks = [[key for key in mixed if key in found and found[key] != common[key]] for found in environments]
    return marks, mixed


def unrecorded(environments: list[dict[str, str]]) -> int:
    """How many runs' records hold no provenance (made before finetune recorded it) beside runs whose
    records do; 0 when none does (nothing to compare them with)."""
    missing = sum(1 for found in environments if not any(key in found for key in PROVENANCE_KEYS))
    return missing if missing < len(environments) else 0


def warning(mixed: dict[str, Counter], unknown: int = 0) -> str | None:
    """One line naming what the runs differ in, and how many cannot tell; None when they share one environment."""
    parts = [f"{key} ({', '.join(f'{value} in {count}' for value, count in counted.most_common())})"
             for key, counted in mixed.items()]
    lines = []
    if parts:
        lines.append(f"the runs were not all made with the same versions and machine: {'; '.join(parts)}; "
                     "the 'differs' column marks the runs (and rows) that differ from the most common")
    if unknown:
        lines.append(f"{unknown} run(s) predate provenance records (no commit or machine): "
                     "whether they match the others is unknown")
    return "; ".join(lines) or None
