"""Unpickle a learner with an allow-list: only what a learner is made of can be loaded.

The second wall behind the signatures (`state.signing`): even a checkpoint signed with a
leaked key cannot name ``os.system`` or any other callable outside the list, so unpickling it
cannot run code. Allowed are

- River's classes and functions, except the packages that read or fetch files
  (``river.datasets``, ``river.stream``, ...), and those of ``driftstream.stream``, the pure
  core (no Kafka, no SQLite, no files); each must be defined where the pickle says it is, so a
  module's imports (``river.x.os``) and attribute paths (``Cls.__init__.__globals__``) fail;
- a fixed list of standard and numpy names (below) found by unpickling learners of every
  model preset and drift policy, and numpy arrays, scalars and random generators.

``restricted(cls)`` adds the allow-list to any unpickler class, so it composes with the
learner's interning unpickler (`Learner.canonical_bytes`) as with the fast C one.

>>> from driftstream.stream.learner import Learner
>>> type(load_learner(Learner().to_bytes())).__name__
'Learner'
>>> import os, pickle
>>> load_learner(pickle.dumps(os.system))
Traceback (most recent call last):
...
driftstream.state.safe_pickle.ForbiddenPickle: a checkpoint may not load posix.system
"""

from __future__ import annotations

import io
import pickle
import types
from typing import Any

__all__ = ["ForbiddenPickle", "load_learner", "restricted", "safe_loads"]

# (module, name) pairs outside River and driftstream.stream that learners need.
_EXACT = frozenset(
    [("builtins", n) for n in ("bool", "int", "float", "complex", "str", "bytes", "bytearray")]
    + [("builtins", n) for n in ("list", "tuple", "dict", "set", "frozenset", "slice", "range")]
    + [("builtins", "object")]  # copyreg._reconstructor's base
    + [("collections", n) for n in ("OrderedDict", "defaultdict", "deque", "Counter")]
    + [("copyreg", n) for n in ("_reconstructor", "__newobj__", "__newobj_ex__")]
    + [("_codecs", "encode")]  # bytes in protocol-2 pickles
    + [("functools", "partial")]  # River's defaultdict factories; its function is checked too
    + [("random", "Random")]
    + [("datetime", n) for n in ("date", "datetime", "time", "timedelta", "timezone")]
    + [("numpy", "ndarray"), ("numpy", "dtype")]
    + [
        (f"numpy.{core}.{module}", name)
        for core in ("core", "_core")
        for module, name in (
            ("multiarray", "_reconstruct"),
            ("multiarray", "scalar"),
            ("numeric", "_frombuffer"),
        )
    ]
    + [
        ("numpy.random._pickle", n)
        for n in ("__bit_generator_ctor", "__generator_ctor", "__randomstate_ctor")
    ]
    + [
        ("numpy.random._mt19937", "MT19937"),
        ("numpy.random._pcg64", "PCG64"),
        ("numpy.random._pcg64", "PCG64DXSM"),
        ("numpy.random._philox", "Philox"),
        ("numpy.random._sfc64", "SFC64"),
        ("numpy.random.bit_generator", "SeedSequence"),
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ]
)
_PACKAGES = ("river", "driftstream.stream")
# River packages that read, fetch or write files, or run user code: never needed by a model.
_DENIED = (
    "river.api",
    "river.bandit.datasets",
    "river.checks",
    "river.datasets",
    "river.evaluate",
    "river.stream",
)


class ForbiddenPickle(pickle.UnpicklingError):
    """A pickle names something outside the allow-list; nothing it names was called."""


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


class _AllowList:
    """Mixin: `find_class` that refuses every global outside the allow-list."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _EXACT:
            return super().find_class(module, name)  # type: ignore[misc]
        if _within(module, _PACKAGES) and not _within(module, _DENIED):
            found = super().find_class(module, name)  # type: ignore[misc]
            if (
                isinstance(found, (type, types.FunctionType))
                and getattr(found, "__module__", None) == module
                and getattr(found, "__qualname__", None) == name
            ):
                return found
        raise ForbiddenPickle(f"a checkpoint may not load {module}.{name}")


def restricted(unpickler: type[pickle.Unpickler]) -> type[pickle.Unpickler]:
    """A subclass of ``unpickler`` (pickle.Unpickler, pickle._Unpickler or one of theirs)
    that loads only allowed globals."""
    return type(f"Restricted{unpickler.__name__}", (_AllowList, unpickler), {})


_Restricted = restricted(pickle.Unpickler)


def safe_loads(data: bytes, unpickler: type[pickle.Unpickler] | None = None) -> Any:
    """``pickle.loads`` through the allow-list (with ``unpickler``'s behaviour if given)."""
    cls = _Restricted if unpickler is None else restricted(unpickler)
    return cls(io.BytesIO(data)).load()


def load_learner(data: bytes) -> Any:
    """A `Learner` from checkpoint bytes, as ``Learner.from_bytes`` but allow-listed."""
    from driftstream.stream.learner import Learner

    learner = safe_loads(data)
    if not isinstance(learner, Learner):
        raise TypeError(f"state holds a {type(learner).__name__}, not a Learner")
    return learner
