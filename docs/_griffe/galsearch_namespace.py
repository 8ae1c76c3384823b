"""A griffe extension for the API reference: ``galsearch``'s subpackages live in the repository's top-level
folders (pyproject.toml's ``[tool.setuptools.package-dir]``), where static analysis does not look for
them; this loads each under ``galsearch``, shows Sphinx roles (``:func:`x` ``) as code and drops the ``::``
that announces a reStructuredText literal block (Markdown takes the indented block as code already)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import griffe

ROOT = Path(__file__).resolve().parents[2]
ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|exc|obj):`~?([^`]+)`")
LITERAL_BLOCK = re.compile(r"::$", re.MULTILINE)


def subpackage_folders() -> dict[str, Path]:
    """The folder of each direct subpackage of ``galsearch``, from pyproject.toml's package-dir."""
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {
        name.split(".")[1]: ROOT / folder
        for name, folder in package_dir.items()
        if name.count(".") == 1 and name.startswith("galsearch.")
    }


class GalsearchNamespace(griffe.Extension):
    """Loads ``galsearch.embedder``, ``.index``, ``.anomaly`` and ``.ui`` from their folders."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.path != "galsearch":
            return
        self.on_object(obj=pkg)
        for name, folder in subpackage_folders().items():
            # griffe has no public call that loads a folder under another name; this one is stable since 0.x
            pkg.set_member(name, loader._load_module(name, folder / "__init__.py", parent=pkg))

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = LITERAL_BLOCK.sub(":", ROLE.sub(r"`\1`", obj.docstring.value))
