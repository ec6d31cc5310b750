"""What the worker's I/O side knows of one partition it owns (its learner is elsewhere).

The learner of each partition lives in the model process; the I/O side keeps only this record,
updated from each answer, and every part of the worker reads and updates it: where each input
stands, what is queued in the merge, when it was last checkpointed, its summary for operators.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from driftstream.stream.learner import LearnerConfig
from driftstream.stream.records import ModelVersion

__all__ = ["PartitionTask"]


@dataclass
class PartitionTask:
    """What the worker knows of one partition number; its pipeline is in the model process."""

    partition: int
    next_offset: list[int]  # next offset to process, per input stream
    summary: dict  # the learner's, as of the newest answer that had one
    model: ModelVersion  # the learner's
    config: LearnerConfig | None = None  # the learner's (a restored one keeps its own)
    since_checkpoint: int = 0
    last_checkpoint: float = field(default_factory=time.monotonic)
    caught_up: list = field(default_factory=lambda: [False, False])
    sent_caught_up: tuple = (None, None)  # the flags the model process was last given
    queued: tuple = (0, 0)  # records waiting in its merge, per input stream
    paused: set = field(default_factory=set)  # its inputs paused by flow control
    # For operators (metrics, health), per input stream where it applies:
    lag: list = field(default_factory=lambda: [None, None])  # high-water mark - position
    behind: list = field(default_factory=lambda: [None, None])  # log end, if < next_offset
    checkpoint_at: float | None = None  # wall-clock seconds of the checkpoint it builds on
    latency: Any = None  # its processing-latency histogram
    checkpoint_seconds: Any = None  # its checkpoint-duration histogram

    def offsets(self, inputs: tuple[str, str]) -> dict[str, int]:
        """Next offset to process, by input topic name (for logs and checkpoints)."""
        return dict(zip(inputs, self.next_offset))
