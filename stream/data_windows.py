"""Events kept as numpy columns, in bounded memory: the reference sample and the live window.

Per event the monitor only appends the features dict to ``pending`` (no per-feature work);
``flush`` writes the pending rows into one numpy array per feature, in bulk, when a check
needs them. The columns are a ring of ``capacity`` rows: the newest rows overwrite the oldest,
so memory is bounded by ``capacity`` x features (plus the pending rows, at most one check's
worth). Row order inside the ring does not matter to the tests; rows stay aligned across
features (row i of every column is one event), which the domain classifier needs.

A numeric feature's missing value (absent or None) is NaN; a categorical one's is None.
Categories are kept as strings, so that ``True`` and ``"True"`` cannot both be a category.

>>> cols = Columns({"x": "number", "colour": "category"}, capacity=2)
>>> for row in ({"x": 1.0, "colour": "red"}, {"x": None}, {"x": 3, "colour": "blue"}):
...     cols.pending.append(row)
>>> cols.flush()
>>> cols.size, cols.number("x").tolist(), cols.category("colour").tolist()
(2, [3.0, nan], ['blue', None])
"""

from __future__ import annotations

from sys import intern
from typing import Any

import numpy as np

__all__ = ["Columns", "kinds_of"]

_CATEGORY_TYPES = (str, bool)


def kinds_of(rows: list[dict], declared: dict[str, str] | None = None) -> dict[str, str]:
    """Each feature's kind, ``number`` or ``category`` (str and bool values), from the types a
    schema declares, else from the feature's first non-missing value in ``rows``. Names come in
    first-seen order, so that the same rows always give the same columns.

    >>> kinds_of([{"x": 1, "on": True}, {"city": "Oslo"}], {"zip": "str"})
    {'zip': 'category', 'x': 'number', 'on': 'category', 'city': 'category'}
    """
    kinds = {
        name: ("number" if t == "number" else "category") for name, t in (declared or {}).items()
    }
    for row in rows:
        for name, value in row.items():
            if name not in kinds and value is not None:
                kinds[name] = "category" if isinstance(value, _CATEGORY_TYPES) else "number"
    return kinds


class Columns:
    """The last ``capacity`` rows (features, and the label when ``labelled``) as columns."""

    def __init__(self, kinds: dict[str, str], capacity: int, labelled: bool = False):
        self.kinds = dict(kinds)
        self.capacity = capacity
        self.numbers = {n: np.full(capacity, np.nan) for n, k in kinds.items() if k == "number"}
        self.categories = {
            n: np.full(capacity, None, dtype=object) for n, k in kinds.items() if k == "category"
        }
        # the label as text (classes) and as a number (NaN if it is not one), for the tests
        self.label_text = np.full(capacity, None, dtype=object) if labelled else None
        self.label_number = np.full(capacity, np.nan) if labelled else None
        self.size = 0  # rows held
        self.next = 0  # where the next row goes
        self.pending: list[dict] = []  # features not yet written
        self.pending_labels: list[Any] = []  # their labels (when labelled), in the same order

    def flush(self) -> None:
        """Write the pending rows into the columns (keeping the newest ``capacity``)."""
        rows = self.pending
        if not rows:
            return
        labels = self.pending_labels
        self.pending, self.pending_labels = [], []
        # each row goes where it would have gone had the rows been flushed one by one, so
        # the layout does not depend on when flushes happen (the domain classifier draws rows
        # by position)
        where = ((self.next + np.arange(len(rows))) % self.capacity)[-self.capacity :]
        self.next = (self.next + len(rows)) % self.capacity
        rows = rows[-self.capacity :]
        for name, column in self.numbers.items():
            column[where] = _floats([row.get(name) for row in rows])
        for name, column in self.categories.items():
            column[where] = [_category(row.get(name)) for row in rows]
        if self.label_text is not None:
            labels = labels[-self.capacity :]
            self.label_text[where] = [intern(str(label)) for label in labels]
            self.label_number[where] = _floats(labels)
        self.size = min(self.capacity, self.size + len(rows))

    def number(self, name: str) -> np.ndarray:
        """The feature's values held, NaN where missing."""
        return self.numbers[name][: self.size]

    def category(self, name: str) -> np.ndarray:
        """The feature's categories held, None where missing."""
        return self.categories[name][: self.size]

    def text_labels(self) -> np.ndarray:
        """The labels held, as strings (``str(label)``)."""
        return self.label_text[: self.size].astype(str)

    def number_labels(self) -> np.ndarray:
        """The labels held, as floats (bool as 0/1; NaN for a label that is not a number)."""
        return self.label_number[: self.size]


def _floats(values: list) -> np.ndarray:
    """Numbers as floats (bool as 0/1), anything else (None, a string) as NaN."""
    try:
        return np.array(values, dtype=float)  # None -> NaN, True -> 1.0
    except (TypeError, ValueError):  # a string among them: missing for this column
        return np.array([v if isinstance(v, (int, float)) else np.nan for v in values], dtype=float)


def _category(value: Any) -> str | None:
    # interned: one object per category, so a pickled column stores each string once
    return None if value is None else intern(str(value))
