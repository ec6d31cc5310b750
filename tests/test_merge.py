"""Event-time merge of events and labels: order, waiting, release, lateness, determinism."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from driftstream.stream.merge import EVENTS, LABELS, EventTimeMerge, recorded_order


def drain(m: EventTimeMerge, now: int = 0) -> list:
    return [payload for _, payload in m.pop_ready(now)]


def test_orders_by_ts_with_labels_first_at_ties():
    m = EventTimeMerge()
    m.push(EVENTS, [(0, "e0"), (5, "e5"), (7, "e7"), (9, "e9")])
    m.push(LABELS, [(5, "l5"), (6, "l6"), (9, "l9")])
    m.set_caught_up(EVENTS, True)
    m.set_caught_up(LABELS, True)
    out = list(m.pop_ready())
    assert [p for _, p in out] == ["e0", "l5", "e5", "l6", "e7", "l9", "e9"]
    assert [s for s, _ in out] == [EVENTS, LABELS, EVENTS, LABELS, EVENTS, LABELS, EVENTS]
    assert m.pending() == 0 and m.n_late == 0


def test_waits_while_the_other_stream_is_not_caught_up():
    m = EventTimeMerge()
    m.push(EVENTS, [(0, "e0"), (3, "e3")])
    assert drain(m) == []  # a label at ts <= 0 could still come
    assert m.pending() == 2
    m.push(LABELS, [(1, "l1")])
    assert drain(m) == ["e0", "l1"]  # l1 is settled by e3; e3 must wait for labels again
    assert m.pending() == 1
    m.push(LABELS, [(3, "l3")])
    assert drain(m) == ["l3"]  # the label goes first at the tie; e3 waits again
    m.push(LABELS, [(4, "l4")])
    assert drain(m) == ["e3"]  # settled by l4, which now waits for events
    assert m.pending() == 1


def test_tie_waits_for_the_label_side():
    m = EventTimeMerge()
    m.push(EVENTS, [(5, "e5")])
    m.push(LABELS, [(4, "l4")])
    assert drain(m) == ["l4"]  # e5 waits: a label at ts 5 would go first
    m.push(LABELS, [(5, "l5")])
    assert drain(m) == ["l5"]
    m.push(LABELS, [(6, "l6")])
    assert drain(m) == ["e5"]


def test_caught_up_releases():
    m = EventTimeMerge()
    m.push(EVENTS, [(0, "e0"), (10, "e10")])
    assert drain(m) == []
    m.set_caught_up(LABELS, True)
    assert drain(m) == ["e0", "e10"]
    m.push(LABELS, [(20, "l20")])
    assert drain(m) == []  # events is not caught up
    m.set_caught_up(EVENTS, True)
    assert drain(m) == ["l20"]
    m.set_caught_up(EVENTS, False)
    m.push(LABELS, [(30, "l30")])
    assert drain(m) == []


def test_idle_ms_releases():
    m = EventTimeMerge(idle_ms=100, now=0)
    m.push(EVENTS, [(0, "e0"), (10, "e10")], now=0)
    assert drain(m, now=99) == []
    assert drain(m, now=100) == ["e0", "e10"]  # labels silent for idle_ms
    m.push(LABELS, [(20, "l20")], now=150)
    m.push(EVENTS, [(30, "e30")], now=160)
    assert drain(m, now=170) == ["l20"]  # settled by e30 at once
    assert drain(m, now=249) == []  # labels last arrived at 150
    assert drain(m, now=250) == ["e30"]


def test_without_idle_ms_nothing_is_released_by_time():
    m = EventTimeMerge()
    m.push(EVENTS, [(0, "e0")], now=0)
    assert drain(m, now=10**12) == []


def test_n_late_counts_records_behind_the_other_stream():
    m = EventTimeMerge()
    m.push(EVENTS, [(10, "e10")])
    m.set_caught_up(LABELS, True)
    assert drain(m) == ["e10"]
    m.set_caught_up(EVENTS, True)
    m.push(LABELS, [(5, "l5")])
    assert drain(m) == ["l5"]  # processed at once, but late
    assert m.n_late == 1
    m.push(LABELS, [(10, "l10")])  # a label at the tie goes before its event: late too
    assert drain(m) == ["l10"]
    assert m.n_late == 2
    m.push(LABELS, [(11, "l11")])
    assert drain(m) == ["l11"]
    assert m.n_late == 2
    m.push(EVENTS, [(11, "e11")])  # an event at a released label's ts is in order
    assert drain(m) == ["e11"]
    assert m.n_late == 2


# -- determinism ----------------------------------------------------------------------------

streams = st.lists(st.integers(0, 30), max_size=25)  # timestamps, not necessarily sorted


def reference(events: list[int], labels: list[int]) -> tuple[list, int]:
    m = EventTimeMerge()
    m.push(EVENTS, [(ts, ("e", i)) for i, ts in enumerate(events)])
    m.push(LABELS, [(ts, ("l", i)) for i, ts in enumerate(labels)])
    m.set_caught_up(EVENTS, True)
    m.set_caught_up(LABELS, True)
    return [p for _, p in m.pop_ready()], m.n_late


@settings(max_examples=300, deadline=None)
@given(streams, streams, st.data())
def test_same_output_for_any_chunking(events, labels, data):
    expected, expected_late = reference(events, labels)
    m = EventTimeMerge()
    queues = {
        EVENTS: [(ts, ("e", i)) for i, ts in enumerate(events)],
        LABELS: [(ts, ("l", i)) for i, ts in enumerate(labels)],
    }
    out = []
    while queues[EVENTS] or queues[LABELS]:
        stream = data.draw(st.sampled_from([s for s in queues if queues[s]]))
        size = data.draw(st.integers(1, len(queues[stream])))
        m.push(stream, queues[stream][:size])
        del queues[stream][:size]
        if data.draw(st.booleans()):
            out += [p for _, p in m.pop_ready()]
    out += [p for _, p in m.pop_ready()]
    m.set_caught_up(data.draw(st.sampled_from([EVENTS, LABELS])), True)
    out += [p for _, p in m.pop_ready()]
    m.set_caught_up(EVENTS, True)
    m.set_caught_up(LABELS, True)
    out += [p for _, p in m.pop_ready()]
    assert out == expected
    assert m.n_late == expected_late
    assert m.pending() == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 30), max_size=25), st.lists(st.integers(0, 30), max_size=25))
def test_sorted_streams_merge_by_ts_labels_first(events, labels):
    events, labels = sorted(events), sorted(labels)
    out, late = reference(events, labels)
    keys = [(events[i] if s == "e" else labels[i], 0 if s == "l" else 1) for s, i in out]
    assert keys == sorted(keys)
    assert late == 0


def _recorded(order: list[tuple[str, int]]) -> dict[int, int]:
    """Event offset -> labels taken before it, in a given processing order."""
    seen_labels, out = 0, {}
    for stream, i in order:
        if stream == "l":
            seen_labels += 1
        else:
            out[i] = seen_labels
    return out


def _as_records(stream: str, times: list[int]) -> list:
    from types import SimpleNamespace

    return [(ts, SimpleNamespace(offset=i, key=(stream, i))) for i, ts in enumerate(times)]


@settings(max_examples=300, deadline=None)
@given(streams, streams, st.data())
def test_recorded_order_reproduces_any_live_order(events, labels, data):
    """Whatever order a live worker took (late records included), replay follows it, and
    events without a recorded place keep to the recorded ones' constraints."""
    slots = ["e"] * len(events) + ["l"] * len(labels)
    live_streams = data.draw(st.permutations(slots))
    counters = {"e": 0, "l": 0}
    live = []
    for s in live_streams:
        live.append((s, counters[s]))
        counters[s] += 1
    recorded = _recorded(live)
    replayed = [
        r.key
        for _, r in recorded_order(_as_records("e", events), _as_records("l", labels), recorded)
    ]
    assert replayed == live

    unrecorded = data.draw(st.sets(st.sampled_from(sorted(recorded)))) if recorded else set()
    partial = {k: v for k, v in recorded.items() if k not in unrecorded}
    replayed = [
        r.key
        for _, r in recorded_order(_as_records("e", events), _as_records("l", labels), partial)
    ]
    assert sorted(replayed) == sorted(live)
    assert [k for k in replayed if k[0] == "e"] == [k for k in live if k[0] == "e"]
    assert [k for k in replayed if k[0] == "l"] == [k for k in live if k[0] == "l"]
    assert {k: v for k, v in _recorded(replayed).items() if k in partial} == partial


@settings(max_examples=100, deadline=None)
@given(streams, streams)
def test_with_nothing_recorded_the_order_is_the_event_time_merge(events, labels):
    expected, _ = reference(events, labels)
    replayed = [
        r.key for _, r in recorded_order(_as_records("e", events), _as_records("l", labels), {})
    ]
    assert replayed == expected
