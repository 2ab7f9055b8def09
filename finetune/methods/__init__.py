"""Fine-tuning methods: one YAML in conf/method and one registered class each.

Every module of this package is imported here, so a new method is a new module whose class is
decorated with `@register`, plus its YAML; nothing else changes. A YAML variant (lora_alpha32,
dora) needs no class: it extends a method's YAML and sets its own `name`.
"""

from __future__ import annotations

import importlib
import pkgutil
from finetune.errors import UserError
from finetune.methods.base import QUANTIZABLE_METHODS, Method, MethodSpec

__all__ = ["METHODS", "QUANTIZABLE_METHODS", "Method", "MethodSpec", "build_method", "register"]

METHODS: dict[str, type[Method]] = {}  # kind -> class


def register(method: type[Method]) -> type[Method]:
    """Class decorator: the method runs every spec of kind `method.spec_class.kind`."""
    kind = method.spec_class.kind
    if kind in METHODS:
        raise RuntimeError(f"two methods of kind '{kind}': {METHODS[kind].__name__} and {method.__name__}")
    METHODS[kind] = method
    return method


def build_method(spec: MethodSpec) -> Method:
    """The method object that runs `spec`."""
    method = METHODS.get(spec.kind)
    if method is None or not isinstance(spec, method.spec_class):
        raise UserError(f"method.kind: no method of kind '{spec.kind}'; known: {', '.join(sorted(METHODS))}")
    return method(spec)


for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")
