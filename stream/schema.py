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
driftstream.stream.codec.InvalidRecord: wrong_type: feature 'x' is str, schema says number
>>> strict = FeatureSchema({"x": "number"}, required=["x"], extra="reject")
>>> strict.check({})
Traceback (most recent call last):
...
driftstream.stream.codec.InvalidRecord: missing_feature: feature 'x' is required
"""

from __future__ import annotations

import numbers
from typing import Any

from driftstream.stream.codec import InvalidRecord

TYPES = ("number", "str", "bool")
EXTRA_POLICIES = ("keep", "drop", "reject")
# Each feature name costs ~2 KB in the learner and ~0.5 KB in a checkpoint; an id sent as a
# feature name would otherwise grow both without end (at 20,000 events/s, 40 MB/s).
DEFAULT_MAX_FEATURES = 10_000
_TYPE_OF = {int: "number", float: "number", str: "str", bool: "bool"}


class FeatureSchema:
    """Checks and normalises one event's features.

    ``extra`` says what to do with a feature that is not declared: ``keep`` it (and learn its
    type from its first value), ``drop`` it, or ``reject`` the event. With ``keep``, an event
    that would bring the schema past ``max_features`` names is rejected.

    >>> s = FeatureSchema(max_features=2)
    >>> s.check({"x": 1, "y": 2})
    {'x': 1, 'y': 2}
    >>> s.check({"x": 1, "user_8812": 1})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    driftstream.stream.codec.InvalidRecord: too_many_features: feature 'user_8812' would be ...
    """

    max_features = DEFAULT_MAX_FEATURES  # also for schemas pickled before it existed

    def __init__(
        self,
        types: dict[str, str] | None = None,
        required: list[str] = (),
        extra: str = "keep",
        max_features: int = DEFAULT_MAX_FEATURES,
    ):
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
        if not isinstance(max_features, int) or max_features < max(1, len(types)):
            raise ValueError(
                f"max_features={max_features!r} must be an integer of at least "
                f"{max(1, len(types))} (the declared features)"
            )
        self.types = types
        self.required = tuple(required)
        self.extra = extra
        self.max_features = max_features

    @classmethod
    def from_dict(cls, spec: dict) -> FeatureSchema:
        """Build from ``{"features": {name: type}, "required": [...], "extra": "keep",
        "max_features": 10000}`` (every key optional)."""
        unknown = set(spec) - {"features", "required", "extra", "max_features"}
        if unknown:
            raise ValueError(f"unknown schema keys: {sorted(unknown)}")
        return cls(
            spec.get("features"),
            spec.get("required", ()),
            spec.get("extra", "keep"),
            spec.get("max_features", DEFAULT_MAX_FEATURES),
        )

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
                if len(types) + len(learned) >= self.max_features:
                    raise InvalidRecord(
                        "too_many_features",
                        f"feature {name!r} would be name {len(types) + len(learned) + 1}; the "
                        f"schema keeps at most {self.max_features} (an id sent as a feature "
                        'name? raise "max_features" in --schema for wide inputs)',
                    )
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
