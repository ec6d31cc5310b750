"""The docstrings' examples run, imported through the one root as a user imports them."""

import doctest
import importlib
import pkgutil

import pytest

from tests.support import PACKAGES


def _modules() -> list[str]:
    """Every module under the root, sub-packages of the folders too (driftstream.dashboard)."""
    names = set()
    for package in PACKAGES:
        path = importlib.import_module(package).__path__
        names |= {m.name for m in pkgutil.walk_packages(path, package + ".") if not m.ispkg}
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_pass(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_import_through_the_root(name):
    """The repository root is on sys.path under `python -m pytest`, so an example importing
    `stream.records` would pass while a user's copy fails: no example may import so."""
    bare = {package.split(".")[-1] for package in PACKAGES[1:]}
    module = importlib.import_module(name)
    for test in doctest.DocTestFinder().find(module):
        for example in test.examples:
            words = example.source.split()
            if words[:1] in (["from"], ["import"]):
                assert words[1].split(".")[0] not in bare, f"{test.name}: {example.source}"
