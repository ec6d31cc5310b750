"""`driftstream tail`: print an output topic's records as they arrive, for operators."""

from __future__ import annotations

import sys
import time

import orjson

from driftstream.transport import Consumer, KafkaSettings, topic_names


def tail(
    settings: KafkaSettings,
    prefix: str,
    what: str,
    from_beginning: bool = False,
    as_json: bool = False,
    max_records: int | None = None,
    timeout: float | None = None,
) -> int:
    """Print records of the ``what`` topic (drift, predictions, deadletter, metrics)."""
    topic = topic_names(prefix)[what]
    consumer = Consumer(settings)
    try:
        partitions = consumer.partitions_for(topic)
        if not partitions:
            print(
                f"topic {topic!r} does not exist (run `driftstream topics create`)", file=sys.stderr
            )
            return 2
        tps = [(topic, p) for p in partitions]
        consumer.assign(tps)
        if from_beginning:
            consumer.seek_to_beginning(tps)
        else:
            _seek_to_end(consumer, tps)
        shown = 0
        last = time.monotonic()
        while max_records is None or shown < max_records:
            records = consumer.poll(200)
            if not records:
                if timeout is not None and time.monotonic() - last > timeout:
                    break
                continue
            last = time.monotonic()
            for r in records:
                print(
                    r.value.decode("utf-8", "replace") if as_json else format_record(what, r.value),
                    flush=True,
                )
                shown += 1
                if max_records is not None and shown >= max_records:
                    break
    finally:
        consumer.close()
    return 0


def _seek_to_end(consumer: Consumer, tps) -> None:
    # Tansu's end offsets are unreliable: read once to learn each partition's high-water mark.
    consumer.seek_to_beginning(tps)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        consumer.poll(100, max_records=1)
        highs = [consumer.highwater(t, p) for t, p in tps]
        if all(h is not None for h in highs):
            for (t, p), h in zip(tps, highs):
                consumer.seek(t, p, h)
            return


def format_record(what: str, value: bytes) -> str:
    """One readable line per record."""
    try:
        r = orjson.loads(value)
    except orjson.JSONDecodeError:
        return f"(undecodable {len(value)} bytes)"
    if what == "drift":
        d = r.get("detector", {})
        where = f" feature={r['feature']}" if r.get("feature") else ""
        if r.get("kind") == "data":
            p = f" p={r['p_value']:.3g}" if r.get("p_value") is not None else ""
            return (
                f"[p{r.get('partition')}] data drift ({r.get('test')}){where} at "
                f"n={r.get('n_seen')} ts={r.get('event_ts')}: statistic "
                f"{_num(r.get('statistic'))}{p} effect {_num(r.get('effect'))}; "
                f"action={r.get('action')} model {_ver(r.get('model_before'))} -> "
                f"{_ver(r.get('model_after'))}"
            )
        if d.get("trigger") == "act_when":
            return (
                f"[p{r.get('partition')}] act_when {d.get('metric')} {_num(d.get('value'))} "
                f"{d.get('op')} {d.get('threshold')} over {d.get('labels')} labels at "
                f"n={r.get('n_seen')} ts={r.get('event_ts')}: action={r.get('action')} model "
                f"{_ver(r.get('model_before'))} -> {_ver(r.get('model_after'))}"
            )
        return (
            f"[p{r.get('partition')}] {r.get('kind')} drift{where} at n={r.get('n_seen')} "
            f"ts={r.get('event_ts')}: mean {_num(d.get('mean_before'))} -> "
            f"{_num(d.get('mean_after'))}, window {d.get('width_before')} -> "
            f"{d.get('width_after')}; action={r.get('action')} model "
            f"{_ver(r.get('model_before'))} -> {_ver(r.get('model_after'))}"
        )
    if what == "predictions":
        proba = r.get("proba")
        p = f" proba={ {k: round(v, 3) for k, v in proba.items()} }" if proba else ""
        return (
            f"[p{r.get('partition')}@{r.get('offset')}] {r.get('id')}: "
            f"{r.get('prediction')!r}{p} model {_ver(r.get('model'))}"
        )
    if what == "deadletter":
        s = r.get("source", {})
        return (
            f"[{s.get('topic')}/{s.get('partition')}@{s.get('offset')}] "
            f"{r.get('reason')}: {r.get('detail')}"
        )
    m = r.get("metrics", {})
    shown = ", ".join(f"{k}={_num(v)}" for k, v in m.items() if k.startswith("rolling_"))
    return (
        f"[p{r.get('partition')}] events={r.get('n_events')} labels={r.get('n_labels')} "
        f"pending={r.get('pending')} model {_ver(r.get('model'))} {shown}"
    )


def _num(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _ver(v) -> str:
    return f"g{v.get('generation')}.u{v.get('updates')}" if isinstance(v, dict) else "?"
