"""The README and docs/ say what is true: the README's first two commands are the ones CI runs,
every relative link resolves (to a file, and to a heading where it names one), and every
`finetune` command shown composes with conf/ as it is (what `finetune --cfg job` checks)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
BLOCK = re.compile(r"```bash\n(.*?)```", re.S)


def test_ci_installs_and_tests_exactly_as_the_readme_says():
    first_block = BLOCK.search((ROOT / "README.md").read_text()).group(1)
    install, test = (line.split("#")[0].strip() for line in first_block.strip().splitlines())
    ci = (ROOT / ".ci" / "run").read_text()
    assert install.removesuffix("&& finetune").strip().replace("pip install", "pip install --quiet") in ci
    assert f"\n{test}\n" in ci
    assert "\nfinetune " in ci  # and the default job


def test_the_readme_is_a_short_read():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 210


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a markdown page."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).strip().replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # a URL: not this repository's
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    assert not broken, broken


def commands(page: Path) -> list[list[str]]:
    """The overrides of every `finetune` command in the page's bash blocks (continued lines joined)."""
    found = []
    for block in BLOCK.findall(page.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if "finetune" in words:
                found.append(words[words.index("finetune") + 1:])
    return found


def composable(words: list[str]) -> list[str]:
    """A command's overrides as one job composes them: flags dropped, a sweep's first value taken."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    kept = []
    for word in words:
        if word.startswith("-") or "=" not in word:
            continue
        override = OverridesParser.create().parse_overrides([word])[0]
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                continue  # an interval a search draws from
            first = next(iter(override.sweep_iterator()))
            word = f"{word.split('=', 1)[0]}={first}"
        kept.append(word)
    return kept


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_finetune_command_shown_composes(page, tmp_path):
    from hydra import compose, initialize_config_dir

    from finetune.plan import CONF_DIR, register_configs

    register_configs()
    for words in commands(page):
        overrides = composable(words)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            compose(config_name="config", overrides=overrides)  # raises on an unknown option, key or type
