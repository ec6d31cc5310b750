"""When `--exit-when-idle` lets the worker exit: the rule alone, no Kafka involved."""

from __future__ import annotations

import time

from driftstream.consumers.worker import REBALANCE_GRACE_S, Worker, WorkerOptions
from driftstream.stream.learner import LearnerConfig


def idle_worker(tmp_path) -> Worker:
    """A worker as `run()` leaves it between polls: Kafka fine, nothing in the model."""
    worker = Worker(
        None,
        LearnerConfig(),
        str(tmp_path / "s.sqlite"),
        WorkerOptions(exit_when_idle=1.0, model_process=False),
    )
    worker.link.start(in_process=True)
    worker.assignments.assigned_once = True
    return worker


def test_no_idle_exit_while_the_group_rebalances(tmp_path):
    """Partitions revoked for a rejoin (a broker that lost its groups, a new member) come
    back only when the join is over, which can take longer than the idle time: exiting
    then would leave them unprocessed."""
    worker = idle_worker(tmp_path)
    idle_since = time.monotonic() - 2.0  # idle for twice exit_when_idle
    worker.assignments.ready = True  # an applied assignment, nothing owned (all caught up)
    assert worker._idle_exit(idle_since)
    worker.assignments.ready = False  # revoked, the next assignment not yet applied
    assert not worker._idle_exit(idle_since)
    # A join that never ends does not keep the worker forever.
    assert worker._idle_exit(time.monotonic() - 1.0 - REBALANCE_GRACE_S - 0.1)
