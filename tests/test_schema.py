"""Feature schema: inference, declared types, extra features, required features."""

from __future__ import annotations

import numpy as np
import pytest

from driftstream.stream.codec import REASONS, InvalidRecord
from driftstream.stream.schema import DEFAULT_MAX_FEATURES, FeatureSchema


def reason(schema: FeatureSchema, features: dict) -> str:
    with pytest.raises(InvalidRecord) as info:
        schema.check(features)
    assert info.value.reason in REASONS and info.value.detail
    return info.value.reason


def test_inference_from_first_values():
    s = FeatureSchema()
    assert s.check({"x": 1, "y": 2.5, "c": "red", "b": True}) == {
        "x": 1,
        "y": 2.5,
        "c": "red",
        "b": True,
    }
    assert s.types == {"x": "number", "y": "number", "c": "str", "b": "bool"}
    # int and float are both numbers
    assert s.check({"x": 1.5, "y": 3}) == {"x": 1.5, "y": 3}


@pytest.mark.parametrize(
    "feature, value", [("x", "1"), ("x", True), ("c", 3), ("b", 1), ("b", "y")]
)
def test_inferred_type_is_enforced(feature, value):
    s = FeatureSchema()
    s.check({"x": 1.0, "c": "red", "b": False})
    assert reason(s, {feature: value}) == "wrong_type"


def test_null_means_missing_and_is_dropped():
    s = FeatureSchema()
    assert s.check({"x": None, "y": 1}) == {"y": 1}
    assert "x" not in s.types  # null teaches nothing
    assert s.check({"x": "a"}) == {"x": "a"}


def test_rejected_event_teaches_no_types():
    s = FeatureSchema({"n": "number"})
    assert reason(s, {"new": "text", "n": "oops"}) == "wrong_type"
    assert "new" not in s.types
    assert s.check({"new": 1.0, "n": 2}) == {"new": 1.0, "n": 2}


def test_declared_schema():
    s = FeatureSchema({"x": "number", "c": "str", "b": "bool"})
    assert s.check({"x": 1, "c": "a", "b": False}) == {"x": 1, "c": "a", "b": False}
    assert reason(s, {"x": "1"}) == "wrong_type"
    assert reason(s, {"c": 1.0}) == "wrong_type"
    assert reason(s, {"b": 0}) == "wrong_type"
    assert reason(s, {"x": False}) == "wrong_type"  # a bool is not a number here


def test_extra_keep_learns_type():
    s = FeatureSchema({"x": "number"}, extra="keep")
    assert s.check({"x": 1, "z": "a"}) == {"x": 1, "z": "a"}
    assert s.types["z"] == "str"
    assert reason(s, {"z": 2}) == "wrong_type"


def test_extra_drop():
    s = FeatureSchema({"x": "number"}, extra="drop")
    assert s.check({"x": 1, "z": "a", "w": [1]}) == {"x": 1}
    assert "z" not in s.types


def test_extra_reject():
    s = FeatureSchema({"x": "number"}, extra="reject")
    assert s.check({"x": 1}) == {"x": 1}
    assert reason(s, {"x": 1, "z": 2}) == "extra_feature"
    assert s.check({"x": 1, "z": None}) == {"x": 1}  # null is absence, not an extra feature


def test_required():
    s = FeatureSchema({"x": "number", "y": "str"}, required=["x"])
    assert s.check({"x": 0}) == {"x": 0}
    assert reason(s, {"y": "a"}) == "missing_feature"
    assert reason(s, {"x": None, "y": "a"}) == "missing_feature"  # null counts as missing


def test_required_with_inferred_types():
    s = FeatureSchema(required=["x"])
    assert reason(s, {"y": 1}) == "missing_feature"
    assert s.check({"x": 1}) == {"x": 1}


def test_numpy_values_are_numbers():
    s = FeatureSchema({"x": "number"})
    assert s.check({"x": np.float64(1.5), "y": np.int64(3)}) == {"x": 1.5, "y": 3}
    assert s.types["y"] == "number"


@pytest.mark.parametrize("value", [[1, 2], {"a": 1}, object()])
def test_non_scalar_value_is_wrong_type_not_a_crash(value):
    assert reason(FeatureSchema(), {"x": value}) == "wrong_type"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"types": {"x": "float"}}, "type 'float'"),
        ({"extra": "ignore"}, "extra='ignore'"),
        (
            {"types": {"x": "number"}, "required": ["y"]},
            "required features without a declared type",
        ),
        ({"required": ["y"], "extra": "reject"}, "required features without a declared type"),
        ({"required": ["y"], "extra": "drop"}, "required features without a declared type"),
        ({"max_features": 0}, "max_features=0"),
        ({"types": {"x": "number", "y": "str"}, "max_features": 1}, "at least 2"),
        ({"max_features": "many"}, "must be an integer"),
    ],
)
def test_invalid_schema_definitions(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FeatureSchema(**kwargs)


def test_from_dict():
    s = FeatureSchema.from_dict({"features": {"x": "number"}, "required": ["x"], "extra": "drop"})
    assert (s.types, s.required, s.extra) == ({"x": "number"}, ("x",), "drop")
    assert FeatureSchema.from_dict({}).extra == "keep"
    assert FeatureSchema.from_dict({}).max_features == DEFAULT_MAX_FEATURES
    assert FeatureSchema.from_dict({"max_features": 50}).max_features == 50
    with pytest.raises(ValueError, match="unknown schema keys"):
        FeatureSchema.from_dict({"feature": {}})


def test_from_dict_does_not_share_the_spec():
    spec = {"features": {"x": "number"}}
    FeatureSchema.from_dict(spec).check({"x": 1, "new": "a"})
    assert spec == {"features": {"x": "number"}}


def test_new_feature_names_stop_at_max_features():
    """An id sent as a feature name would grow the learner by ~2 KB per event for good."""
    s = FeatureSchema({"x": "number"}, max_features=3)
    assert s.check({"x": 1, "a": 1}) == {"x": 1, "a": 1}
    assert reason(s, {"x": 1, "b": 1, "c": 1}) == "too_many_features"
    assert s.types == {"x": "number", "a": "number"}  # the rejected event taught nothing
    assert s.check({"x": 2, "a": 3, "b": 1}) == {"x": 2, "a": 3, "b": 1}  # the third name
    assert reason(s, {"user_1": 1}) == "too_many_features"
    assert s.check({"x": 1, "a": 1, "b": 1}) == {"x": 1, "a": 1, "b": 1}  # known names pass


def test_a_schema_pickled_before_max_features_existed_gets_the_default():
    import pickle

    s = FeatureSchema()
    del s.__dict__["max_features"]
    restored = pickle.loads(pickle.dumps(s))
    assert restored.max_features == DEFAULT_MAX_FEATURES
    assert restored.check({"x": 1}) == {"x": 1}
