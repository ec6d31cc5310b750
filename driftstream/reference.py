"""A pinned data-drift reference read from a file, e.g. the model's training set.

`driftstream run --reference-file train.csv` compares each partition's live events with
these rows instead of with its own first events. The rows travel in the learner
configuration (`LearnerConfig.reference`), which every worker gets and every checkpoint
records: the learner stays pure (no file I/O), a fresh learner on any host pins the same
rows, and replay from the beginning starts from them too. At most ``limit`` rows are kept
(the monitor's reference size; drawn with a fixed seed), so the configuration stays bounded
whatever the file's size.

>>> import pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "train.csv"
>>> _ = path.write_text("id,x,colour,y\\n" + "".join(f"r{i},{i},red,{i % 2}\\n" for i in range(9)))
>>> ref = read_reference(str(path), label_column="y", ignore=["id"], limit=4)
>>> len(ref["rows"]), sorted(ref["rows"][0]), ref["labels"][:1], ref["source"]["rows_in_file"]
(4, ['colour', 'x'], [0], 9)
"""

from __future__ import annotations

import hashlib
import math
import random
from pathlib import Path
from typing import Any

__all__ = ["read_reference"]

_READERS = {".csv": "csv", ".jsonl": "json", ".ndjson": "json", ".parquet": "parquet"}


def read_reference(
    path: str,
    label_column: str | None = None,
    ignore: list[str] = (),
    limit: int = 2000,
    seed: int = 0,
) -> dict:
    """The ``{"rows", "labels", "source"}`` of `LearnerConfig.reference` from a CSV, NDJSON
    or Parquet file: every column but ``label_column`` and ``ignore`` is a feature; missing
    values are left out of their row, as the learner leaves out null features."""
    import pandas as pd  # noqa: PLC0415 (only the commands that read a file pay for it)

    kind = _READERS.get(Path(path).suffix.lower())
    if kind is None:
        raise ValueError(
            f"unsupported reference file type {Path(path).suffix or '(none)'!r} for {path}; "
            f"supported: {', '.join(sorted(_READERS))}"
        )
    data = Path(path).read_bytes()
    if kind == "csv":
        frame = pd.read_csv(path, dtype_backend="numpy_nullable")
    elif kind == "json":
        frame = pd.read_json(path, lines=True, dtype=False, dtype_backend="numpy_nullable")
    else:
        frame = pd.read_parquet(path, dtype_backend="numpy_nullable")
    wanted = ([label_column] if label_column else []) + list(ignore)
    absent = [c for c in wanted if c not in frame.columns]
    if absent:
        raise ValueError(f"{path}: no column(s) {absent}; the columns: {list(frame.columns)}")
    features = [c for c in frame.columns if c not in wanted]
    if not features:
        raise ValueError(f"{path}: no feature column left")
    keep = range(len(frame))
    if len(frame) > limit:
        keep = sorted(random.Random(seed).sample(keep, limit))
    columns = {str(c): frame[c].tolist() for c in features}
    rows = [
        {name: v for name, values in columns.items() if (v := _plain(values[i])) is not None}
        for i in keep
    ]
    labels = None
    if label_column:
        all_labels = frame[label_column].tolist()
        labels = [_plain(all_labels[i]) for i in keep]
        if any(y is None for y in labels):
            raise ValueError(f"{path}: label column {label_column!r} has missing values")
    return {
        "rows": rows,
        "labels": labels,
        "source": {
            "file": Path(path).name,
            "sha256": hashlib.sha256(data).hexdigest(),
            "rows_in_file": len(frame),
        },
    }


def _plain(value: Any) -> Any:
    """A JSON scalar: numpy/pandas scalars unwrapped, missing (NaN, NA) as None."""
    if value is None or value.__class__.__name__ in ("NAType", "NaTType"):
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
