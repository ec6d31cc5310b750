"""Event-time merge of one partition's two input streams (events and labels).

Each stream is consumed in offset order. Of the two heads, the one with the smaller timestamp
goes first; at equal timestamps the label goes first (the order of `river.stream.simulate_qa`).
A head is only released when the other stream has shown a later record, is caught up (nothing
more to read now), or has been idle for ``idle_ms``; so, as long as no record arrives later than
the other stream has already advanced, the order is a pure function of the two logs. Records
that do arrive that late are still processed (at once) and counted in ``n_late``; the order
they made is recorded in the predictions, and `recorded_order` follows it again.

>>> m = EventTimeMerge()
>>> m.push(EVENTS, [(0, "e0"), (5, "e1")]); m.push(LABELS, [(5, "l0")])
>>> [r for _, r in m.pop_ready()]   # e1 waits: a label at ts 5 could still be followed by one
['e0', 'l0']
>>> m.set_caught_up(LABELS, True)
>>> [r for _, r in m.pop_ready()]
['e1']
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from typing import Any

EVENTS = 0
LABELS = 1


class EventTimeMerge:
    """Orders the records of two streams by event time, deterministically.

    Records are ``(ts, payload)`` pairs; `pop_ready` yields ``(stream, payload)``.
    ``now`` arguments are wall-clock ms, only used for the idle limit.
    """

    def __init__(self, idle_ms: int | None = None, now: int = 0):
        self.idle_ms = idle_ms
        self.queues = (collections.deque(), collections.deque())
        self.caught_up = [False, False]
        self.last_arrival = [now, now]
        self.released_ts = [None, None]  # newest timestamp released from each stream
        self.n_late = 0

    def push(self, stream: int, records: Iterable[tuple[int, Any]], now: int = 0) -> None:
        """Append records of one stream, in offset order."""
        q = self.queues[stream]
        before = len(q)
        q.extend(records)
        if len(q) > before:
            self.last_arrival[stream] = now

    def set_caught_up(self, stream: int, caught_up: bool) -> None:
        """Say whether ``stream`` has nothing more to read right now."""
        self.caught_up[stream] = caught_up

    def pending(self) -> int:
        return len(self.queues[0]) + len(self.queues[1])

    def pop_ready(self, now: int = 0) -> Iterator[tuple[int, Any]]:
        """Release every record whose place in event-time order is settled."""
        events, labels = self.queues
        while events or labels:
            if events and labels:
                stream = LABELS if labels[0][0] <= events[0][0] else EVENTS
            else:
                stream = EVENTS if events else LABELS
                other = 1 - stream
                if not (self.caught_up[other] or self._idle(other, now)):
                    return
            ts, payload = self.queues[stream].popleft()
            other_ts = self.released_ts[1 - stream]
            if other_ts is not None and (ts < other_ts or (ts == other_ts and stream == LABELS)):
                self.n_late += 1
            self.released_ts[stream] = ts
            yield stream, payload

    def _idle(self, stream: int, now: int) -> bool:
        return self.idle_ms is not None and now - self.last_arrival[stream] >= self.idle_ms


def recorded_order(
    events: list[tuple[int, Any]], labels: list[tuple[int, Any]], labels_offset: dict[int, int]
) -> Iterator[tuple[int, Any]]:
    """Both streams in the order a live worker processed them, as its predictions recorded it.

    A live worker releases a record at once when the other stream is caught up, so a record
    that arrives later than the other stream has already advanced lands after it: that order
    depends on when records arrived, not only on the logs. Each served prediction records the
    labels offset its event was scored at (``labels_offset``: event offset -> offset of the
    next label not yet processed), which pins every event's place among the labels. Events
    without one (no prediction: dead-lettered, or not served yet) keep their event-time place
    between the recorded ones. Takes ``(ts, record)`` pairs in offset order (records have an
    ``offset``) and yields ``(stream, record)``, as `EventTimeMerge.pop_ready`.

    >>> from types import SimpleNamespace as R
    >>> events = [(5, R(offset=0, id="e0")), (6, R(offset=1, id="e1"))]
    >>> labels = [(1, R(offset=0, id="l0")), (2, R(offset=1, id="l1"))]
    >>> [r.id for _, r in recorded_order(events, labels, {})]  # nothing recorded: event time
    ['l0', 'l1', 'e0', 'e1']
    >>> [r.id for _, r in recorded_order(events, labels, {0: 0, 1: 1})]  # l0 came late
    ['e0', 'l0', 'e1', 'l1']
    """
    # bound[i]: the recorded labels offset of the first event at or after i that has one
    bound: list[int | None] = [None] * (len(events) + 1)
    for i in range(len(events) - 1, -1, -1):
        recorded = labels_offset.get(events[i][1].offset)
        bound[i] = recorded if recorded is not None else bound[i + 1]
    i = j = 0
    while i < len(events) or j < len(labels):
        if i == len(events):
            take_label = True
        elif j == len(labels):
            take_label = False
        elif events[i][1].offset in labels_offset:
            take_label = labels[j][1].offset < labels_offset[events[i][1].offset]
        else:  # event time, but never a label past a later event's recorded place
            take_label = (bound[i] is None or labels[j][1].offset < bound[i]) and labels[j][
                0
            ] <= events[i][0]
        if take_label:
            yield LABELS, labels[j][1]
            j += 1
        else:
            yield EVENTS, events[i][1]
            i += 1
