"""Model specs: presets, pipelines, nested calls, and refusals that say what is wrong."""

from __future__ import annotations

import pytest
from river import base, compose, linear_model, optim, preprocessing, tree

from driftstream.stream.models import PRESETS, ModelSpecError, build_model, task_of

TASKS = {
    "lr": "classification",
    "ht": "classification",
    "hat": "classification",
    "arf": "classification",
    "gnb": "classification",
    "linreg": "regression",
    "htr": "regression",
}


def test_every_preset_has_a_task_here():
    assert set(PRESETS) == set(TASKS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_and_learn(name):
    model = build_model(name)
    assert task_of(model) == TASKS[name]
    y = True if TASKS[name] == "classification" else 1.5
    x = {"a": 1.0, "b": 2.0}
    before = model.predict_one(x)
    model.learn_one(x, y)
    after = model.predict_one(x)
    if TASKS[name] == "classification":
        assert after is True  # the only class seen
    else:  # one step towards the target
        assert isinstance(after, float) and abs(after - y) < abs(before - y)
    assert build_model(f"  {name} ") is not model  # fresh each time, whitespace tolerated


def test_pipeline_spec():
    model = build_model("preprocessing.StandardScaler() | linear_model.LinearRegression(l2=0.1)")
    assert isinstance(model, compose.Pipeline)
    assert list(model.steps) == ["StandardScaler", "LinearRegression"]
    assert model.steps["LinearRegression"].l2 == 0.1
    assert task_of(model) == "regression"


def test_nested_calls():
    model = build_model("linear_model.LogisticRegression(optimizer=optim.SGD(0.05))")
    assert isinstance(model, linear_model.LogisticRegression)
    assert isinstance(model.optimizer, optim.SGD)
    assert model.optimizer.learning_rate == 0.05


def test_nested_model_argument():
    model = build_model("multiclass.OneVsRestClassifier(linear_model.LogisticRegression(l2=0.01))")
    assert task_of(model) == "classification"
    assert model.classifier.l2 == 0.01


@pytest.mark.parametrize(
    "spec, attr, value",
    [
        ("linear_model.LinearRegression(intercept_init=-0.1)", "intercept_init", -0.1),
        ("linear_model.LinearRegression(l2=-1)", "l2", -1),
        ("linear_model.LinearRegression(l2=1e-3)", "l2", 1e-3),
        (
            "tree.HoeffdingTreeClassifier(grace_period=50, nominal_attributes=['c'])",
            "nominal_attributes",
            ["c"],
        ),
    ],
)
def test_literal_arguments(spec, attr, value):
    assert getattr(build_model(spec), attr) == value


def test_class_without_parentheses():
    assert isinstance(build_model("tree.HoeffdingTreeClassifier"), tree.HoeffdingTreeClassifier)
    model = build_model("preprocessing.StandardScaler | linear_model.LogisticRegression")
    assert isinstance(model.steps["StandardScaler"], preprocessing.StandardScaler)
    assert task_of(model) == "classification"


def test_positional_arguments_and_three_step_pipeline():
    model = build_model(
        "compose.Select('a', 'b') | preprocessing.StandardScaler() | "
        "linear_model.LogisticRegression()"
    )
    assert len(model.steps) == 3 and task_of(model) == "classification"


def test_task_of():
    assert task_of(linear_model.LogisticRegression()) == "classification"
    assert task_of(linear_model.LinearRegression()) == "regression"
    assert task_of(preprocessing.StandardScaler()) is None
    assert task_of(preprocessing.StandardScaler() | linear_model.LinearRegression()) == "regression"
    assert task_of(compose.Pipeline()) is None


def refusal(spec: str) -> str:
    with pytest.raises(ModelSpecError) as info:
        build_model(spec)
    return str(info.value)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("os.system('rm -rf /')", "module 'os' is not a River module"),
        ("subprocess.Popen('ls')", "module 'subprocess' is not a River module"),
        ("linear_model._base()", "linear_model._base is private"),
        ("linear_model.__class__", "is private"),
        ("__import__('os')", "only River classes written as module.Class are allowed"),
        ("eval('1')", "only River classes written as module.Class are allowed"),
        ("river.linear_model.LogisticRegression()", "only River classes written as module.Class"),
        ("linear_model.LogisticRegression.clone()", "only River classes written as module.Class"),
        ("lambda: linear_model.LogisticRegression()", "unexpected 'lambda"),
        ("linear_model.LogisticRegression(**{'l2': 1.0})", "**kwargs are not allowed"),
        ("linear_model.LogisticRegression(**kw)", "**kwargs are not allowed"),
        ("linear_model.LogisticRegression(l2=x)", "argument 'x' is not a literal"),
        ("linear_model.LogisticRegression(l2=2 * 3)", "argument '2 * 3' is not a literal"),
        ("linear_model.LogisticRegression(l2=(lambda: 1)())", "only River classes"),
        ("linear_model.LogisticRegression(l2=lambda: 1)", "is not a literal"),
        ("linear_model.Nope()", "river.linear_model has no class 'Nope'"),
        ("linear_model.base()", "has no class 'base'"),  # a submodule, not a class
        ("linear_model.LogisticRegression(foo=1)", "unexpected keyword argument 'foo'"),
        ("preprocessing.StandardScaler()", "neither a classifier nor a regressor"),
        ("preprocessing.StandardScaler() | preprocessing.MinMaxScaler()", "neither a classifier"),
        ("anomaly.HalfSpaceTrees()", "neither a classifier nor a regressor"),
        ("compose.Pipeline()", "neither a classifier nor a regressor"),
        ("optim.SGD()", "is a SGD, not a model"),
        ("drift.ADWIN()", "is a ADWIN, not a model"),
        ("optim.SGD() | linear_model.LogisticRegression()", "SGD is not an estimator"),
        ("ensemble.BaggingClassifier", "BaggingClassifier: TypeError: "),
        ("ensemble.BaggingClassifier(model=1)", "BaggingClassifier: AttributeError"),
        ("preprocessing.StandardScaler() | 3", "unexpected '3'"),
        ("1", "unexpected '1'"),
        ("", "is not valid"),
        ("linear_model.LogisticRegression(", "is not valid"),
        ("no-such-preset", "unexpected"),
    ],
)
def test_refusals(spec, message):
    assert message in refusal(spec)


def test_refusals_are_value_errors():
    """Callers that validate input catch ValueError (the CLI: a one-line error)."""
    with pytest.raises(ValueError, match="not a River module"):
        build_model("os.system('true')")


def test_built_models_are_river_estimators():
    for name in PRESETS:
        assert isinstance(build_model(name), base.Estimator)
