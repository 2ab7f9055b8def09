"""Packaging: the wheel carries every Python package of finetune and conf/ as finetune/conf, so each
must be listed in pyproject.toml."""

from __future__ import annotations

from pathlib import Path

from finetune.plan import CONF_DIR

PYPROJECT = Path(__file__).parent.parent / "pyproject.toml"


def test_every_config_group_is_packaged():
    listed = PYPROJECT.read_text()
    groups = sorted(path.name for path in CONF_DIR.iterdir() if path.is_dir() and list(path.glob("*.yaml")))
    assert groups, CONF_DIR
    assert [group for group in groups if f'"finetune.conf.{group}"' not in listed] == []


def test_every_python_package_is_packaged():
    listed = PYPROJECT.read_text()
    source = PYPROJECT.parent / "finetune"
    packages = sorted(".".join(("finetune", *path.parent.relative_to(source).parts)) for path in source.rglob("__init__.py"))
    assert "finetune.methods" in packages
    assert [package for package in packages if f'"{package}"' not in listed] == []


def test_the_configs_are_found_where_the_package_put_them():
    assert (CONF_DIR / "config.yaml").is_file()
    assert CONF_DIR.resolve() == (Path(__file__).parent.parent / "conf").resolve()  # an editable install: the repo's
