"""Feature schema: declared up front or inferred from the first events.

A value's type is ``number`` (int or float), ``str`` or ``bool``; null means missing and is
dropped before the model sees the event. Once a feature's type is known, a value of another
type is rejected, so a producer that starts sending ``"12"`` instead of ``12`` is caught at the
first such record instead of silently feeding garbage to the model.

>>> s = FeatureSchema()
>>> s.check({"x": 1, "colour": "red", "gone": None})
{'x': 1, 'colour': 'red'}
>>> s.check({"x": "1"})
Traceback (most recent call last):
...
stream.codec.InvalidRecord: wrong_type: feature 'x' is str, schema says number
>>> strict = FeatureSchema({"x": "number"}, required=["x"], extra="reject")
>>> strict.check({})
Traceback (most recent call last):
...
stream.codec.InvalidRecord: missing_feature: feature 'x' is required
"""

from __future__ import annotations

import numbers
from typing import Any

from stream.codec import InvalidRecord

TYPES = ("number", "str", "bool")
EXTRA_POLICIES = ("keep", "drop", "reject")
_TYPE_OF = {int: "number", float: "number", str: "str", bool: "bool"}


class FeatureSchema:
    """Checks and normalises one event's features.

    ``extra`` says what to do with a feature that is not declared: ``keep`` it (and learn its
    type from its first value), ``drop`` it, or ``reject`` the event.
    """

    def __init__(self, types: dict[str, str] | None = None, required: list[str] = (),
                 extra: str = "keep"):
        types = dict(types or {})
        for name, t in types.items():
            if t not in TYPES:
                raise ValueError(f"feature {name!r}: type {t!r} is not one of {TYPES}")
        if extra not in EXTRA_POLICIES:
            raise ValueError(f"extra={extra!r} is not one of {EXTRA_POLICIES}")
        # Undeclared required features are fine only when their type can still be learned: an
        # inferred schema (nothing declared) with extra="keep". Otherwise no event could pass.
        missing = set(required) - set(types)
        if missing and (types or extra != "keep"):
            raise ValueError(f"required features without a declared type: {sorted(missing)}")
        self.types = types
        self.required = tuple(required)
        self.extra = extra

    @classmethod
    def from_dict(cls, spec: dict) -> FeatureSchema:
        """Build from ``{"features": {name: type}, "required": [...], "extra": "keep"}``."""
        unknown = set(spec) - {"features", "required", "extra"}
        if unknown:
            raise ValueError(f"unknown schema keys: {sorted(unknown)}")
        return cls(spec.get("features"), spec.get("required", ()), spec.get("extra", "keep"))

    def check(self, features: dict[str, Any]) -> dict[str, Any]:
        """Return the features the model should see, or raise `InvalidRecord`."""
        types = self.types
        out = {}
        learned = {}  # types seen first here; kept only if the whole event passes
        for name, value in features.items():
            if value is None:
                continue
            want = types.get(name)
            if want is None and self.extra == "drop":
                continue
            got = _TYPE_OF.get(value.__class__) or _type_of(name, value)
            if want is None:
                if self.extra == "reject":
                    raise InvalidRecord("extra_feature", f"feature {name!r} is not in the schema")
                learned[name] = got
            elif want != got:
                raise InvalidRecord("wrong_type", f"feature {name!r} is {got}, schema says {want}")
            out[name] = value
        for name in self.required:
            if name not in out:
                raise InvalidRecord("missing_feature", f"feature {name!r} is required")
        types.update(learned)
        return out


def _type_of(name: str, value: Any) -> str:
    """Type of a value whose class is not a plain scalar (e.g. numpy.float64 from a source)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "str"
    if isinstance(value, numbers.Real):
        return "number"
    raise InvalidRecord("wrong_type", f"feature {name!r} is {type(value).__name__}")
