"""Run a learner over a whole recorded stream, in event-time order, without a broker.

This is what `driftstream evaluate` and replay use, and what the tests compare with River:
the same merge and learner as the worker, fed from lists instead of Kafka.

>>> from driftstream.stream.records import Event, Label
>>> events = [Event(f"e{i}", {"x": float(i % 2)}, ts=i) for i in range(4)]
>>> labels = [Label(f"e{i}", i % 2 == 1, ts=i + 2) for i in range(4)]
>>> learner, outputs = run_offline(events, labels, LearnerConfig(model="gnb"))
>>> learner.n_events, learner.n_labels, len(outputs)
(4, 4, 4)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from driftstream.stream.learner import Learner, LearnerConfig
from driftstream.stream.merge import EVENTS, LABELS, EventTimeMerge
from driftstream.stream.records import Event, Label


def run_offline(
    events: Iterable[Event],
    labels: Iterable[Label],
    config: LearnerConfig | None = None,
    learner: Learner | None = None,
    on_output: Callable[[object], None] | None = None,
):
    """Merge both streams by event time and process them; return (learner, outputs).

    With ``on_output`` the outputs are handed over one by one instead of being collected.
    """
    learner = learner or Learner(config)
    merge = EventTimeMerge()
    merge.push(EVENTS, ((e.ts, e) for e in events))
    merge.push(LABELS, ((lb.ts, lb) for lb in labels))
    merge.set_caught_up(EVENTS, True)
    merge.set_caught_up(LABELS, True)
    collected: list = []
    emit = on_output or collected.append
    for stream, record in merge.pop_ready():
        outs = learner.process_event(record) if stream == EVENTS else learner.process_label(record)
        for out in outs:
            emit(out)
    return learner, collected
