"""Every example in pyrt's docstrings runs and prints what it claims."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import pyrt


def _modules() -> list[str]:
    names = ["pyrt"]
    for info in pkgutil.walk_packages(pyrt.__path__, prefix="pyrt."):
        # Optional modules whose dependencies a CPU-only install lacks.
        if info.name.startswith(("pyrt._", "pyrt.datasets.make_")):
            continue
        names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    pyrt.manual_seed(0)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
