"""The docstrings' examples run, imported through the one root as a user imports them."""

import doctest
import importlib
import pkgutil

import pytest

from tests.support import PACKAGES


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        path = importlib.import_module(package).__path__
        names += [m.name for m in pkgutil.iter_modules(path, package + ".") if not m.ispkg]
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_pass(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
