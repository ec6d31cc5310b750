"""What the worker asks its model process, and what the model process answers.

Three requests, each answered in the order they were sent:

- `OpenPartition` → `Opened`: a pipeline from a checkpoint's state, or a fresh learner; a
  state the allow-list refuses (`driftstream.state.safe_pickle`) opens nothing and says why.
- `ClosePartitions` → None: drop these partitions' pipelines.
- `ProcessBatch` → `BatchAnswer`: push new records, set caught-up flags, process what is
  ready, snapshot the partitions asked for; one `Progress` per open partition.

They travel pickled over a pipe (or not at all, in one process): one of each per poll, never
one per record. Records travel parsed, as the plain tuples of `codec.parse_records`, which
pickle fast.

>>> from driftstream.stream.codec import parse_records
>>> from driftstream.stream.merge import EVENTS
>>> push = Push(0, EVENTS, parse_records([(0, 5, b"{}")], "event"))
>>> ProcessBatch(now_ms=0, pushes=[push]).pushes[0].records
[(0, b'{}', None, 'missing_id', 'id is absent, null or empty')]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from driftstream.stream.codec import ParsedRecord
from driftstream.stream.learner import LearnerConfig
from driftstream.stream.outputs import Output
from driftstream.stream.records import ModelVersion

__all__ = [
    "BatchAnswer",
    "ClosePartitions",
    "OpenPartition",
    "Opened",
    "ProcessBatch",
    "Progress",
    "Push",
    "Request",
]


class OpenPartition(NamedTuple):
    """Open a partition's pipeline from ``state`` (a pickled learner) or, if None, fresh."""

    partition: int
    state: bytes | None
    config: LearnerConfig  # for a fresh learner (a restored one keeps its own)
    topics: tuple[str, str]  # events, labels: where dead letters say records came from
    offsets: list[int]  # next offset to process, per input stream
    idle_ms: int | None  # release one input if the other sent nothing this long
    now_ms: int
    checkpoint_every: int  # records between periodic snapshots


class ClosePartitions(NamedTuple):
    partitions: list[int]


class Push(NamedTuple):
    """Records of one input stream of one partition, in offset order."""

    partition: int
    stream: int  # EVENTS or LABELS
    records: list[ParsedRecord]


@dataclass(slots=True)
class ProcessBatch:
    """One poll's worth of work for every open partition."""

    now_ms: int
    pushes: list[Push] = field(default_factory=list)
    caught_up: dict[int, tuple[bool, bool]] = field(default_factory=dict)  # changed flags only
    snapshot: list[int] = field(default_factory=list)  # partitions to checkpoint now
    reason: str = "periodic"  # of those snapshots
    want_summary: bool = False  # summaries cost time: only when a display wants them


Request = OpenPartition | ClosePartitions | ProcessBatch


@dataclass
class Opened:
    """What the worker learns of a pipeline it opened."""

    model: ModelVersion | None
    config: LearnerConfig | None  # the one the learner was built with (a checkpoint keeps its own)
    summary: dict
    refused: str | None = None  # why the state could not be loaded (then nothing is open)


@dataclass
class Progress:
    """One partition's outputs from a batch, and where it stands after it."""

    outputs: list[Output]
    processed: int  # records taken from the merge in this batch
    next_offset: list[int]
    queued: tuple[int, int]  # records waiting in the merge, per input stream
    since_checkpoint: int
    model: ModelVersion
    summary: dict | None  # if asked for


@dataclass
class BatchAnswer:
    """A batch's progress per partition, and the state files finished since the last answer
    (file name -> None when complete, else what went wrong).

    ``started`` and ``finished``: when the model process began and ended the batch
    (`time.perf_counter`, for probes: two clock reads a batch)."""

    progress: dict[int, Progress]
    state_files: dict[str, str | None] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0
