"""Combinations that a release of transformers or peft is known to break, refused when the run is
validated (before anything loads) with a line naming the installed versions.

`constraints.txt` pins the versions the test suite passed with, where none of these apply;
`scripts/test_newest.sh` runs the suite against the newest releases, which is how an entry is
found (and how one that a later release fixed is found to refuse no more).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Callable

from packaging.specifiers import SpecifierSet

if TYPE_CHECKING:
    from finetune.schema import Run


@dataclass(frozen=True)
class KnownBreak:
    method: str  # a method kind: its variants break too
    applies: Callable[[Run, bool], bool]  # which runs of the method break, given whether they generate text
    broken_with: dict[str, str]  # package -> the releases that break it (all must match)
    reason: str


KNOWN_BREAKS = (
    KnownBreak(
        method="prefix_tuning",
        applies=lambda run, generates: not generates,  # the classification-head route (Flan-T5's text-to-text works)
        broken_with={"transformers": ">=5.24", "peft": "<=0.21.2"},
        reason="transformers 5.24 renamed the models' past_key_values argument to cache, and peft's prefix "
               "tuning for classification still looks for past_key_values",
    ),
)


def _installed(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def known_break(run: Run, generates_text: bool) -> str | None:
    """Why the installed transformers/peft cannot run this method on this run, or None."""
    for entry in KNOWN_BREAKS:
        if entry.method != run.method.kind or not entry.applies(run, generates_text):
            continue
        installed = {package: _installed(package) for package in entry.broken_with}
        if all(installed[package] is not None and installed[package] in SpecifierSet(spec)
               for package, spec in entry.broken_with.items()):
            versions = " and ".join(f"{package} {found}" for package, found in installed.items())
            return (f"{entry.method} on model={run.model.name} does not work with {versions}: {entry.reason}; "
                    "install the tested versions (pip install -c constraints.txt ...)")
    return None
