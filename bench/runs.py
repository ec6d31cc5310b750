"""Running measurements: progress on stderr, one failure not losing the others, medians.

The machine may be shared, so a figure that matters is measured several times and the run
with the median value is kept (`median_run`); a measurement that fails is recorded under
``res["errors"]`` and listed under the table (`attempt`).

>>> median_run([{"v": 3}, None, {"v": 1}, {"v": 2}], "v")
{'v': 2}
>>> ratio(3.0, None), ratio(3.0, 2.0)
(None, 1.5)
>>> lookup({"a": {"b": 1}}, "a", "b"), lookup({"a": None}, "a", "b")
(1, None)
"""

from __future__ import annotations

import sys
import time

__all__ = ["attempt", "log", "lookup", "median_run", "ratio"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def attempt(res: dict, name: str, fn, *args, **kwargs):
    """Run one measurement; on failure record the error under res["errors"] and go on."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # one failed measurement must not lose the others
        msg = f"{type(e).__name__}: {e}"
        log(f"  FAILED: {msg[:2000]}")
        res.setdefault("errors", {})[name] = msg
        return None


def median_run(runs: list[dict | None], key: str) -> dict | None:
    """The run with the median ``key`` (the lower one of two middles); failed runs skipped."""
    done = sorted((r for r in runs if r), key=lambda r: r[key])
    return done[(len(done) - 1) // 2] if done else None


def ratio(a, b):
    """a / b, or None when either is missing (a failed run)."""
    return a / b if a is not None and b else None


def lookup(d: dict | None, *keys):
    """``d[k1][k2]...``, or None as soon as a level is missing."""
    for k in keys:
        if d is None:
            return None
        d = d.get(k)
    return d
