"""Model specs: presets and River pipelines written as text, parsed safely (never ``eval``).

A spec is a preset name or an expression made only of River classes (``module.Class``, with
or without a call), literal arguments and ``|`` for pipelines. Anything else is refused with
an error that says what was wrong.

>>> list(build_model("lr").steps)
['StandardScaler', 'LogisticRegression']
>>> task_of(build_model("preprocessing.StandardScaler | linear_model.LinearRegression(l2=0.1)"))
'regression'
>>> build_model("os.system('rm -rf /')")
Traceback (most recent call last):
...
driftstream.stream.models.ModelSpecError: module 'os' is not a River module
"""

from __future__ import annotations

import ast
import importlib

from river import base

PRESETS = {
    "lr": "preprocessing.StandardScaler() | linear_model.LogisticRegression()",
    "ht": "tree.HoeffdingTreeClassifier()",
    "hat": "tree.HoeffdingAdaptiveTreeClassifier(seed=42)",
    "arf": "forest.ARFClassifier(seed=42)",
    "gnb": "naive_bayes.GaussianNB()",
    "linreg": "preprocessing.StandardScaler() | linear_model.LinearRegression()",
    "htr": "tree.HoeffdingTreeRegressor()",
}

# River submodules a spec may name.
MODULES = frozenset(
    {
        "anomaly",
        "cluster",
        "compose",
        "ensemble",
        "feature_extraction",
        "feature_selection",
        "forest",
        "imblearn",
        "linear_model",
        "multiclass",
        "naive_bayes",
        "neighbors",
        "neural_net",
        "optim",
        "preprocessing",
        "rules",
        "stats",
        "tree",
        "drift",
    }
)


class ModelSpecError(ValueError):
    """A model spec that cannot be built; the message says why."""


def build_model(spec: str) -> base.Estimator:
    """Build a fresh estimator from a preset name or a spec expression."""
    text = PRESETS.get(spec.strip(), spec)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ModelSpecError(f"model spec {spec!r} is not valid: {e.msg}") from None
    model = _build(tree.body)
    if not isinstance(model, base.Estimator):
        raise ModelSpecError(f"model spec {spec!r} is a {type(model).__name__}, not a model")
    if task_of(model) is None:
        raise ModelSpecError(f"model spec {spec!r} is neither a classifier nor a regressor")
    return model


def task_of(model: base.Estimator) -> str | None:
    """``classification``, ``regression`` or None for what this model predicts."""
    final = model
    while hasattr(final, "steps"):  # Pipeline: the last step decides
        if not final.steps:
            return None
        final = list(final.steps.values())[-1]
    if isinstance(final, base.Classifier):
        return "classification"
    if isinstance(final, base.Regressor):
        return "regression"
    return None


def _build(node: ast.expr):
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, right = _build(node.left), _build(node.right)
        for side in (left, right):  # e.g. an optimizer is a River class but no pipeline step
            if not isinstance(side, base.Estimator):
                raise ModelSpecError(
                    f"{type(side).__name__} is not an estimator and cannot be a pipeline step"
                )
        try:
            return left | right
        except Exception as e:
            raise ModelSpecError(f"cannot join {ast.unparse(node)!r}: {e}") from None
    if isinstance(node, ast.Attribute):  # Class without parentheses: built with no arguments
        return _instantiate(_river_class(node), [], {})
    if isinstance(node, ast.Call):
        cls = _river_class(node.func)
        args = [_argument(a) for a in node.args]
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise ModelSpecError("**kwargs are not allowed in a model spec")
            kwargs[kw.arg] = _argument(kw.value)
        return _instantiate(cls, args, kwargs)
    raise ModelSpecError(
        f"unexpected {ast.unparse(node)!r}: expected module.Class(...) joined by |"
    )


def _instantiate(cls: type, args: list, kwargs: dict):
    try:
        return cls(*args, **kwargs)
    except Exception as e:  # River constructors raise TypeError, ValueError, AttributeError...
        raise ModelSpecError(f"{cls.__name__}: {type(e).__name__}: {e}") from None


def _argument(node: ast.expr):
    if isinstance(node, (ast.Call, ast.Attribute, ast.BinOp)) and not _is_number(node):
        return _build(node)
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ModelSpecError(f"argument {ast.unparse(node)!r} is not a literal") from None


def _is_number(node: ast.expr) -> bool:
    return isinstance(node, ast.BinOp) and all(
        isinstance(n, (ast.Constant, ast.UnaryOp)) for n in (node.left, node.right)
    )


def _river_class(node: ast.expr) -> type:
    if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
        raise ModelSpecError(
            f"only River classes written as module.Class are allowed, not {ast.unparse(node)!r}"
        )
    module, name = node.value.id, node.attr
    if module not in MODULES:
        raise ModelSpecError(f"module {module!r} is not a River module")
    if name.startswith("_"):
        raise ModelSpecError(f"{module}.{name} is private")
    cls = getattr(importlib.import_module(f"river.{module}"), name, None)
    if not (isinstance(cls, type) and issubclass(cls, base.Base)):
        raise ModelSpecError(f"river.{module} has no class {name!r}")
    return cls
