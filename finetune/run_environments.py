"""What each run ran with (the libraries' versions, finetune's code, the machine), so that a report
never silently mixes runs made with different ones."""

from __future__ import annotations

from collections import Counter
from typing import Any

from finetune.record import RunRecord

UNRECORDED = "unrecorded"


def environment(record: RunRecord) -> dict[str, str]:
    """The run's versions, code and machine as comparable strings (`unrecorded` where its record has none)."""
    found = {name: value for name, value in record.versions.items() if name != "finetune"}
    code = record.provenance.get("code", {})
    commit = code.get("git_commit")
    found["finetune"] = (f"{code.get('version')} @ {commit[:10]}{' (dirty)' if code.get('git_dirty') else ''}"
                         if commit else str(code.get("version") or record.versions.get("finetune") or UNRECORDED))
    machine = record.provenance.get("machine")
    found["machine"] = _machine(machine) if machine else UNRECORDED
    return found


def _machine(machine: dict[str, Any]) -> str:
    gpus = Counter(machine.get("gpus") or [])
    accelerators = ", ".join(f"{count}x {name}" for name, count in sorted(gpus.items())) or "no GPU"
    return f"{machine.get('cpu')} ({machine.get('usable_cores')} cores), {accelerators}"


def differences(environments: list[dict[str, str]]) -> tuple[list[list[str]], dict[str, Counter]]:
    """Per run, the keys whose value is not the most common one among the runs; and, for each key
    on which the runs differ, how many runs had each value."""
    keys = sorted({key for found in environments for key in found})
    counts = {key: Counter(found.get(key, UNRECORDED) for found in environments) for key in keys}
    mixed = {key: counted for key, counted in counts.items() if len(counted) > 1}
    common = {key: counted.most_common(1)[0][0] for key, counted in mixed.items()}
    marks = [[key for key in mixed if found.get(key, UNRECORDED) != common[key]] for found in environments]
    return marks, mixed


def warning(mixed: dict[str, Counter]) -> str | None:
    """One line naming what the runs differ in, or None when they share one environment."""
    if not mixed:
        return None
    parts = [f"{key} ({', '.join(f'{value} in {count}' for value, count in counted.most_common())})"
             for key, counted in mixed.items()]
    return (f"the runs were not all made with the same versions and machine: {'; '.join(parts)}; "
            "the 'differs' column marks the runs (and rows) that differ from the most common")
