"""The README's first two commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_ci_installs_and_tests_exactly_as_the_readme_says():
    first_block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    install, test = (line.split("#")[0].strip() for line in first_block.strip().splitlines())
    ci = (ROOT / ".ci" / "run").read_text()
    assert install.removesuffix("&& finetune").strip().replace("pip install", "pip install --quiet") in ci
    assert f"\n{test}\n" in ci
    assert "\nfinetune " in ci  # and the default job
