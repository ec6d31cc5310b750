"""Labelled sample streams with event times and label arrival times (no Kafka).

Both the offline ``driftstream evaluate`` and the Kafka producers read data through this
module, so an offline evaluation and a Kafka run see exactly the same samples, event times
and label reveal times.

A stream is a sequence of :class:`Sample`. ``ts`` is the event time; ``label_ts`` is when the
label becomes known (``None``: never). :func:`arrival_order` turns a list of samples into the
two topic streams (events, labels) in the order River's ``stream.simulate_qa`` reveals them,
and :func:`river_delay` expresses the same timing for ``river.evaluate.progressive_val_score``.
"""

from __future__ import annotations

import abc
import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
from river.datasets import synth

__all__ = [
    "STREAMS",
    "ConstantDelay",
    "Delay",
    "ExpDelay",
    "Sample",
    "StreamInfo",
    "UniformDelay",
    "arrival_order",
    "event_record",
    "file_samples",
    "label_record",
    "parse_delay",
    "river_delay",
    "synthetic",
]


@dataclass(slots=True, frozen=True)
class Sample:
    """One labelled observation: features ``x`` at event time ``ts``, label ``y`` revealed at
    ``label_ts`` (``None`` = the label never arrives)."""

    id: str
    x: dict
    y: object
    ts: int
    label_ts: int | None


# --------------------------------------------------------------------------------------------
# Label delays
# --------------------------------------------------------------------------------------------


class Delay(abc.ABC):
    """A label delay distribution: ``delay(rng)`` draws a non-negative int.

    Delays draw only from the ``rng`` they are given, so they are deterministic given its seed.
    ``str(delay)`` gives back the spec accepted by :func:`parse_delay`.
    """

    @abc.abstractmethod
    def __call__(self, rng: random.Random) -> int: ...


@dataclass(frozen=True)
class ConstantDelay(Delay):
    """Always the same delay (``"100"``); does not consume randomness."""

    value: int

    def __call__(self, rng: random.Random) -> int:
        return self.value

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class UniformDelay(Delay):
    """Uniform integer delay in ``[low, high]``, both inclusive (``"uniform:50:150"``)."""

    low: int
    high: int

    def __call__(self, rng: random.Random) -> int:
        return rng.randint(self.low, self.high)

    def __str__(self) -> str:
        return f"uniform:{self.low}:{self.high}"


@dataclass(frozen=True)
class ExpDelay(Delay):
    """Exponential delay with the given mean, rounded to the nearest int (``"exp:100"``).

    Heavy-ish tail: a few labels arrive very late, which is what stresses pending joins.
    """

    mean: float

    def __call__(self, rng: random.Random) -> int:
        if self.mean == 0:
            return 0
        return round(rng.expovariate(1.0 / self.mean))

    def __str__(self) -> str:
        return f"exp:{self.mean:g}"


def parse_delay(spec: str | int | Delay) -> Delay:
    """Parse a label delay spec: ``"100"``, ``"0"``, ``"uniform:50:150"`` or ``"exp:100"``.

    >>> parse_delay("uniform:50:150")(random.Random(0)) in range(50, 151)
    True
    >>> parse_delay("100")(random.Random(0))
    100
    >>> str(parse_delay("exp:100"))
    'exp:100'
    """
    if isinstance(spec, Delay):
        return spec
    if isinstance(spec, bool):  # bool is an int; True is surely a mistake
        raise ValueError(f"invalid label delay {spec!r}")
    if isinstance(spec, int):
        spec = str(spec)
    text = spec.strip()
    parts = text.split(":")
    try:
        if len(parts) == 1:
            value = int(parts[0])
            if value < 0:
                raise ValueError
            return ConstantDelay(value)
        kind = parts[0].lower()
        if kind == "uniform" and len(parts) == 3:
            low, high = int(parts[1]), int(parts[2])
            if not 0 <= low <= high:
                raise ValueError
            return UniformDelay(low, high)
        if kind == "exp" and len(parts) == 2:
            mean = float(parts[1])
            if not (mean >= 0 and math.isfinite(mean)):
                raise ValueError
            return ExpDelay(mean)
    except ValueError:
        pass
    raise ValueError(
        f"invalid label delay {spec!r}: expected a non-negative int ('100'), "
        "'uniform:LOW:HIGH' (0 <= LOW <= HIGH, ints) or 'exp:MEAN' (MEAN >= 0)"
    )


# --------------------------------------------------------------------------------------------
# Synthetic streams
# --------------------------------------------------------------------------------------------


class StreamInfo(NamedTuple):
    """What a synthetic stream is: its task and a one-line description."""

    task: str  # "classification" or "regression"
    description: str


# Drifts are sudden: at each ``drift_at`` index the next concept starts.
STREAMS: dict[str, StreamInfo] = {
    "sea": StreamInfo(
        "classification",
        "SEA, 3 numeric features, bool label; drift: variant (threshold) 0->1->2->3",
    ),
    "agrawal": StreamInfo(
        "classification",
        "Agrawal loan data, 9 features, int label; drift: classification_function 0->1->..->9",
    ),
    "hyperplane": StreamInfo(
        "classification",
        "rotating hyperplane, 10 features, 2 drifting by 0.001/sample; gradual, drift_at ignored",
    ),
    "sine": StreamInfo(
        "classification",
        "Sine, 2 numeric features, int label; drift: classification_function 0->1->2->3",
    ),
    "stagger": StreamInfo(
        "classification",
        "STAGGER, 3 int-coded categorical features; drift: classification_function 0->1->2",
    ),
    "mixed": StreamInfo(
        "classification",
        "Mixed, 2 bool + 2 numeric features, int label; drift: classification_function 0<->1",
    ),
    "friedman": StreamInfo(
        "regression",
        "Friedman #1, 10 features in [0, 1], float target; drift: FriedmanDrift's 3 global "
        "concepts (the relevant features swap roles) 0->1->2",
    ),
}

# Offset between segment seeds: segment k of seed s uses generator seed s + k * _SEGMENT_SEED_STEP,
# so a stream without drift_at is exactly River's generator with seed s.
_SEGMENT_SEED_STEP = 1_000_003

# FriedmanDrift(drift_type="gsg", transition_window=0) change points that pin it to one concept
# for the whole of its stream: before both points, between them, after both.
_FRIEDMAN_CONCEPTS = ((2**62, 2**62 + 1), (0, 2**62), (-2, -1))


def _generator(name: str, segment: int, seed: int) -> Iterable[tuple[dict, Any]]:
    """The River generator for one segment (each segment = a new concept)."""
    if name == "sea":
        return synth.SEA(variant=segment % 4, seed=seed)
    if name == "agrawal":
        return synth.Agrawal(classification_function=segment % 10, seed=seed)
    if name == "hyperplane":
        return synth.Hyperplane(
            seed=seed, n_features=10, n_drift_features=2, mag_change=0.001, sigma=0.1
        )
    if name == "sine":
        return synth.Sine(classification_function=segment % 4, seed=seed)
    if name == "stagger":
        return synth.STAGGER(classification_function=segment % 3, seed=seed)
    if name == "mixed":
        return synth.Mixed(classification_function=segment % 2, seed=seed)
    if name == "friedman":
        position = _FRIEDMAN_CONCEPTS[segment % 3]
        return synth.FriedmanDrift(
            drift_type="gsg", position=position, transition_window=0, seed=seed
        )
    raise ValueError(f"unknown synthetic stream {name!r}; choose one of {sorted(STREAMS)}")


def _plain(value: Any) -> Any:
    """A plain Python value (numpy/pandas scalars unwrapped); missing (NaN, NA, NaT) -> None."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _feature_name(key: Any) -> str:
    """Feature names are strings; River's int-keyed generators become ``x0, x1, ...``."""
    return f"x{key}" if isinstance(key, int) else str(key)


def synthetic(
    name: str,
    n: int,
    seed: int = 42,
    drift_at: Sequence[int] = (),
    label_delay: str | int | Delay = "0",
    missing_labels: float = 0.0,
    start_ts: int = 0,
    step: int = 1,
    id_prefix: str = "e",
) -> Iterator[Sample]:
    """``n`` samples of a River synthetic stream (see :data:`STREAMS`) with sudden drifts.

    At each index in ``drift_at`` a new generator with the next concept starts (seeded
    ``seed + k * 1_000_003`` for segment k), which is a clean sudden drift; River's
    ``ConceptDriftStream`` is avoided because it overflows ``math.exp`` for small widths.
    Label delays come from ``random.Random(seed + 1)`` and missing labels from
    ``random.Random(seed + 2)``, so changing the delay spec or the missing fraction never changes
    the features, and changing ``missing_labels`` never changes the other labels' delays.

    >>> [(s.id, s.ts, s.label_ts) for s in synthetic("sea", 3, label_delay="5", step=10)]
    [('e0', 0, 5), ('e1', 10, 15), ('e2', 20, 25)]
    >>> sorted(next(synthetic("agrawal", 1)).x)[:3]
    ['age', 'car', 'commission']
    """
    if name not in STREAMS:
        raise ValueError(f"unknown synthetic stream {name!r}; choose one of {sorted(STREAMS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    drift_at = list(drift_at)
    if any(b <= a for a, b in zip([0, *drift_at], drift_at)):
        raise ValueError(f"drift_at must be strictly increasing positive indices, got {drift_at}")
    if not 0.0 <= missing_labels <= 1.0:
        raise ValueError(f"missing_labels must be in [0, 1], got {missing_labels}")
    return _synthetic_samples(
        name, n, seed, drift_at, parse_delay(label_delay), missing_labels, start_ts, step, id_prefix
    )


def _synthetic_samples(
    name: str,
    n: int,
    seed: int,
    drift_at: list[int],
    delay: Delay,
    missing_labels: float,
    start_ts: int,
    step: int,
    id_prefix: str,
) -> Iterator[Sample]:
    """The generator behind :func:`synthetic` (arguments already checked)."""
    delay_rng = random.Random(seed + 1)
    missing_rng = random.Random(seed + 2)
    for i, (x, y) in enumerate(_pairs(name, n, seed, drift_at)):
        ts = start_ts + i * step
        d = delay(delay_rng)  # always drawn, so the delays do not depend on missing_labels
        missing = missing_rng.random() < missing_labels
        yield Sample(
            id=f"{id_prefix}{i}",
            x={_feature_name(k): _plain(v) for k, v in x.items()},
            y=_plain(y),
            ts=ts,
            label_ts=None if missing else ts + d,
        )


def _pairs(name: str, n: int, seed: int, drift_at: Sequence[int]) -> Iterator[tuple[dict, Any]]:
    """(x, y) pairs, switching to a new generator (new concept) at each drift point."""
    if name == "hyperplane":  # drift is continuous; drift points do not apply
        drift_at = ()
    bounds = [0, *(b for b in drift_at if b < n), n]
    for k in range(len(bounds) - 1):
        gen = _generator(name, k, seed + k * _SEGMENT_SEED_STEP)
        for pair, _ in zip(gen, range(bounds[k + 1] - bounds[k])):
            yield pair


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

_READERS: dict[str, str] = {
    ".csv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".parquet": "parquet",
}


def _read_frame(path: str, id_column: str) -> pd.DataFrame:
    """Read a file with pandas' nullable dtypes, so int columns with gaps stay ints."""
    suffix = Path(path).suffix.lower()
    kind = _READERS.get(suffix)
    if kind == "csv":
        # Ids are read as text so that "007" stays "007".
        return pd.read_csv(path, dtype={id_column: str}, dtype_backend="numpy_nullable")
    if kind == "ndjson":
        # dtype=False: no guessing (numeric-looking strings stay strings, no date parsing).
        return pd.read_json(path, lines=True, dtype=False, dtype_backend="numpy_nullable")
    if kind == "parquet":
        return pd.read_parquet(path, dtype_backend="numpy_nullable")
    raise ValueError(
        f"unsupported file type {suffix or '(none)'!r} for {path}; "
        f"supported: {', '.join(sorted(_READERS))}"
    )


def _timestamps_ms_or_int(column: pd.Series) -> list[int]:
    """Numeric timestamps as ints (their own units); datetimes and ISO strings as epoch-ms.

    Naive datetimes are taken as UTC.
    """
    if column.isna().any():
        row = int(column.isna().to_numpy().nonzero()[0][0])
        raise ValueError(f"timestamp column {column.name!r} is missing a value at row {row}")
    if pd.api.types.is_bool_dtype(column):
        raise ValueError(f"timestamp column {column.name!r} is boolean")
    if pd.api.types.is_numeric_dtype(column):
        return [int(v) for v in column.tolist()]
    try:
        if pd.api.types.is_datetime64_any_dtype(column):
            times = column.dt.tz_localize("UTC") if column.dt.tz is None else column
        else:
            times = pd.to_datetime(column, utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"timestamp column {column.name!r} is neither numeric nor ISO-8601 datetimes: {exc}"
        ) from exc
    epoch = pd.Timestamp(0, tz="UTC")
    return [int(v) for v in ((times - epoch) // pd.Timedelta(milliseconds=1)).tolist()]


def _is_missing_label(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def file_samples(
    path: str,
    id_column: str,
    label_column: str,
    timestamp_column: str | None = None,
    label_delay: int = 0,
) -> Iterator[Sample]:
    """Samples from a CSV, NDJSON (``.ndjson``/``.jsonl``) or Parquet file, in file order.

    Every column other than the id, label and timestamp columns is a feature; missing feature
    values become ``None``. A missing or empty label means the label never arrives
    (``label_ts=None``). With ``timestamp_column``, numeric values are used as they are and
    datetimes / ISO strings become epoch-ms; the label is revealed ``label_delay`` later in
    those units. Without it, ``ts`` is the row index and the label comes ``label_delay`` rows
    later. The file is read and checked when this is called; samples are built lazily.
    """
    if label_delay < 0:
        raise ValueError(f"label_delay must be >= 0, got {label_delay}")
    frame = _read_frame(path, id_column)
    wanted = [id_column, label_column] + ([timestamp_column] if timestamp_column else [])
    absent = [c for c in wanted if c not in frame.columns]
    if absent:
        raise ValueError(
            f"{path}: missing column(s) {absent}; available columns: {list(frame.columns)}"
        )

    ids = frame[id_column].tolist()
    labels = [_plain(v) for v in frame[label_column].tolist()]
    if timestamp_column:
        times = _timestamps_ms_or_int(frame[timestamp_column])
    else:
        times = list(range(len(frame)))
    feature_names = [c for c in frame.columns if c not in wanted]
    features = {str(c): frame[c].tolist() for c in feature_names}
    return _file_rows(path, id_column, ids, labels, times, features, label_delay)


def _file_rows(
    path: str,
    id_column: str,
    ids: list,
    labels: list,
    times: list[int],
    features: dict[str, list],
    label_delay: int,
) -> Iterator[Sample]:
    """The generator behind :func:`file_samples` (file already read and checked)."""
    for row, (raw_id, y, ts) in enumerate(zip(ids, labels, times)):
        sample_id = _plain(raw_id)
        if sample_id is None or str(sample_id) == "":
            raise ValueError(f"{path}: row {row} has no value in id column {id_column!r}")
        missing = _is_missing_label(y)
        yield Sample(
            id=str(sample_id),
            x={name: _plain(values[row]) for name, values in features.items()},
            y=None if missing else y,
            ts=ts,
            label_ts=None if missing else ts + label_delay,
        )


# --------------------------------------------------------------------------------------------
# Wire records and arrival order
# --------------------------------------------------------------------------------------------


def event_record(s: Sample) -> dict:
    """The events-topic record of a sample.

    >>> event_record(Sample("e1", {"a": 1.0}, True, 10, 15))
    {'id': 'e1', 'features': {'a': 1.0}, 'ts': 10}
    """
    return {"id": s.id, "features": s.x, "ts": s.ts}


def label_record(s: Sample) -> dict:
    """The labels-topic record of a sample; its ``ts`` is the reveal time.

    >>> label_record(Sample("e1", {"a": 1.0}, True, 10, 15))
    {'id': 'e1', 'label': True, 'ts': 15}
    """
    if s.label_ts is None:
        raise ValueError(f"sample {s.id!r} has no label (label_ts is None)")
    return {"id": s.id, "label": s.y, "ts": s.label_ts}


def arrival_order(samples: Sequence[Sample]) -> tuple[list[Sample], list[Sample]]:
    """The event stream (input order) and the label stream (by reveal time, ties in input order).

    Samples whose label never arrives are left out of the label stream. When event times are
    non-decreasing and delays non-negative, this is exactly the order in which River's
    ``stream.simulate_qa`` reveals answers, so topics written in this order reproduce River's
    evaluation.

    >>> s = [Sample(f"e{i}", {}, 0, i, i + d) for i, d in enumerate([5, 0, 1, 3])]
    >>> [x.id for x in arrival_order(s)[1]]
    ['e1', 'e2', 'e0', 'e3']
    """
    events = list(samples)
    labels = [s for s in events if s.label_ts is not None]
    labels.sort(key=lambda s: s.label_ts)  # sort is stable: ties keep input order
    return events, labels


def river_delay(
    samples: Sequence[Sample],
) -> tuple[list[tuple[dict, Any]], Callable[[dict], int], Callable[[dict, Any], int]]:
    """``(dataset, moment, delay)`` for ``progressive_val_score`` with the samples' timing.

    River's ``moment`` and ``delay`` callables only see ``x`` (and ``y``), and adding hidden
    keys to ``x`` would change the model's input. So each ``x`` in the dataset is a fresh dict
    and the callables look up its event time and delay by object identity (``id(x)``). River
    calls them with the dataset's own dicts (it copies only what it hands to the model). The
    callables keep the dicts alive, so ids cannot be reused while they are in use.

    >>> s = list(synthetic("sea", 50, label_delay="uniform:0:10"))
    >>> dataset, moment, delay = river_delay(s)
    >>> moment(dataset[3][0]), delay(dataset[3][0], dataset[3][1]) == s[3].label_ts - s[3].ts
    (3, True)
    """
    dataset: list[tuple[dict, Any]] = []
    timing: dict[int, tuple[dict, int, int]] = {}  # id(x) -> (x kept alive, ts, delay)
    for s in samples:
        if s.label_ts is None:
            raise ValueError(
                f"sample {s.id!r}: a label that never arrives cannot be expressed in River"
            )
        x = dict(s.x)
        dataset.append((x, s.y))
        timing[id(x)] = (x, s.ts, s.label_ts - s.ts)

    def lookup(x: dict) -> tuple[dict, int, int]:
        try:
            return timing[id(x)]
        except KeyError:
            raise KeyError("x is not one of the dicts of this river_delay dataset") from None

    def moment(x: dict) -> int:
        return lookup(x)[1]

    def delay(x: dict, y: Any) -> int:
        return lookup(x)[2]

    return dataset, moment, delay
