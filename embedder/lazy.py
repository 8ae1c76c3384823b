"""Packages whose public names load on first use (PEP 562), so that importing one costs only what is used."""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType
from typing import Any


class LazyPackage(ModuleType):
    """A package module that imports the submodule defining a public name when that name is first read."""

    _exports: dict[str, str]

    def __getattr__(self, name: str) -> Any:
        exports = self.__dict__.get("_exports", {})
        if name not in exports:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(import_module(f"{self.__name__}.{exports[name]}"), name)
        setattr(self, name, value)
        return value

    def __dir__(self) -> list[str]:
        return sorted({*self.__dict__, *self.__dict__.get("_exports", {})})

    def __setattr__(self, name: str, value: Any) -> None:
        # Importing a submodule binds it to its package's attribute of the same name; where that name is
        # also a public name (the function embed, in embedder/embed.py), keep the public object,
        # as an eager ``from .embed import embed`` in __init__.py would.
        is_submodule = isinstance(value, ModuleType) and value.__name__ == f"{self.__name__}.{name}"
        if is_submodule and self.__dict__.get("_exports", {}).get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


def lazy_package(package: str, exports: dict[str, tuple[str, ...]]) -> None:
    """Make ``package`` load its public names on first use (``exports``: submodule -> names it defines)."""
    module = sys.modules[package]
    module.__class__ = LazyPackage
    module._exports = {name: submodule for submodule, names in exports.items() for name in names}
