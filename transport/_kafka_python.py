"""Every use of kafka-python's internals, for the one kafka-python version they were written for.

The rest of the adapter uses kafka-python's public API and the functions here. Each function
says what kafka-python does wrong or lacks that it works around, and why driftstream needs it.
Internals change between releases without notice, so importing this module checks the
installed version first and refuses any other with a message that names the supported one:

>>> check_version(SUPPORTED_VERSION)
>>> check_version("2.0.2")
Traceback (most recent call last):
...
driftstream.transport.errors.UnsupportedKafkaPython: driftstream needs kafka-python 3.0.12, ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import kafka
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import IllegalStateError
from kafka.producer.producer_batch import ProducerBatch
from kafka.record.memory_records import MemoryRecordsBuilder

from driftstream.transport.errors import UnsupportedKafkaPython

__all__ = [
    "SUPPORTED_VERSION",
    "append_run",
    "buffered",
    "check_headers",
    "check_version",
    "coordinator_known",
    "patch_consumer",
]

SUPPORTED_VERSION = "3.0.12"  # as pinned in pyproject.toml


def check_version(installed: str) -> None:
    """Raise `UnsupportedKafkaPython` unless ``installed`` is the supported version."""
    if installed != SUPPORTED_VERSION:
        raise UnsupportedKafkaPython(installed, SUPPORTED_VERSION)


check_version(kafka.__version__)


# -- consumer ------------------------------------------------------------------------------


def patch_consumer(consumer: KafkaConsumer) -> None:
    """Apply the two fetcher fixes below to a new consumer, before its first poll."""
    fetcher = consumer._fetcher
    _return_responses_that_land_late(fetcher)
    _drain_partitions_in_turn(fetcher, consumer._subscription)


def _return_responses_that_land_late(fetcher) -> None:
    """Upstream problem: a lost wake-up in poll (`Fetcher.fetch_records`, `_completed_fetches`).

    Its fetcher drains the buffer, then sends fetches and waits on those in flight. A response
    that lands between the two is buffered, but its (done) future is dropped, so nothing is in
    flight: the fetcher reports "idle" and poll sleeps min(timeout, retry_backoff_ms=100 ms)
    with records in hand, a few times a second under load, which the worker's latency shows.
    Reporting not-idle when responses are buffered makes poll go round again and return them.
    """
    fetch_records = fetcher.fetch_records

    def fetch_records_no_lost_wakeup(max_records=None, update_offsets=True, timeout_ms=None):
        records, idle = fetch_records(max_records, update_offsets, timeout_ms)
        return records, idle and not fetcher._completed_fetches

    fetcher.fetch_records = fetch_records_no_lost_wakeup


def _drain_partitions_in_turn(fetcher, subscriptions) -> None:
    """Upstream problems: polls drain one partition at a time, and a resumed partition can
    stall for good (`Fetcher.fetched_records`, `_next_partition_records`,
    `_paused_partition_records`, `_completed_fetches`, `_parse_fetched_data`).

    The fetcher returns one partition's fetched records until they are used up, and a fetch
    answer can hold megabytes of one partition (Tansu fills it with the first partition up to
    the request's limit): in a backlog, polls came in runs of tens of thousands of events,
    then as many labels. The worker's event-time merge then holds one input while the other
    catches up, and its model process has nothing to do in one run and everything in the next.
    Here, before each drain, the partition that was returned last is set aside (where
    kafka-python parks a paused partition's records, so that it is not fetched again
    meanwhile) when another one has records waiting.

    kafka-python also gives parked records back only when its in-line slot is None, but it
    leaves an exhausted (empty, not None) batch there, so a resumed partition stalled for
    good. Emptying the slot when it is exhausted lets the parked records come back.
    """
    fetched_records = fetcher.fetched_records
    last = [None]  # the partition the previous drain returned records of

    def waiting_other(current) -> object | None:
        """Another partition's records, parsed, taken from where they wait; or None."""
        for tp in list(fetcher._paused_partition_records):
            if tp != current and not subscriptions.is_paused(tp):
                return fetcher._paused_partition_records.pop(tp)  # if used up: dropped
        for completion in list(fetcher._completed_fetches):
            tp = completion.topic_partition
            if tp != current and not subscriptions.is_paused(tp):
                fetcher._completed_fetches.remove(completion)
                return fetcher._parse_fetched_data(completion)  # None: discarded, or an error
        return None

    def fetched_records_in_turn(max_records=None, update_offsets=True):
        current = fetcher._next_partition_records
        if current and current.topic_partition == last[0]:
            other = waiting_other(current.topic_partition)
            if other:
                fetcher._paused_partition_records[current.topic_partition] = current
                fetcher._next_partition_records = other
        elif not current and fetcher._paused_partition_records:
            fetcher._next_partition_records = None
        records, partial = fetched_records(max_records, update_offsets)
        if records:
            last[0] = next(reversed(records))
        return records, partial

    fetcher.fetched_records = fetched_records_in_turn


def buffered(consumer: KafkaConsumer) -> bool:
    """Whether fetched records wait in the consumer, so that its next poll returns at once.

    Upstream lacks it: no public call tells whether records are buffered (the fetcher's
    `_completed_fetches`, `_next_partition_records`, `_paused_partition_records`). The worker
    uses it to overlap its next poll with the model's work only when that poll will not wait.
    Read only.
    """
    fetcher, subscriptions = consumer._fetcher, consumer._subscription
    return (
        bool(fetcher._completed_fetches)
        or bool(fetcher._next_partition_records)
        or any(not subscriptions.is_paused(tp) for tp in fetcher._paused_partition_records)
    )


def coordinator_known(consumer: KafkaConsumer) -> bool:
    """Whether the group coordinator is known and reachable (`_coordinator`).

    Upstream lacks it: poll() does not raise when the broker goes away, it returns nothing,
    and no public call says that the group has lost its coordinator. The worker needs it to
    tell an outage (back off, then rewind) from a quiet input. Read only.
    """
    return not consumer._coordinator.coordinator_unknown()


# -- producer ------------------------------------------------------------------------------


Failed = Callable[[BaseException, int], None]


Headers = list[tuple[str, bytes]]


def append_run(
    producer: KafkaProducer,
    tp: TopicPartition,
    records: Sequence[tuple[bytes | None, bytes] | tuple[bytes | None, bytes, Headers]],
    start: int,
    on_failed: Failed,
) -> int:
    """Append (key, value) or (key, value, headers) records[start:] to tp's open batch, under
    one lock and with no future each, up to the first value too big to share a batch; return
    its index (or len(records)).

    Upstream lacks a batch send: send() does per record what a batch needs once (checks,
    metadata, partitioner, size estimate, a lock) and makes a future for each, which is most
    of the worker's I/O process CPU when it writes a prediction per event. This does what
    the accumulator's `append` does (`_accumulator`, `_appends_in_progress`, `_tp_lock`,
    `_closed`, `_batches`, `_incomplete`, `ProducerBatch`, `MemoryRecordsBuilder`,
    `_sender.wakeup`) for a run of records. The records have no futures, so a batch that
    fails calls ``on_failed(error, records without a future)`` from kafka-python's sender
    thread (see `_report_failures`).
    """
    accumulator = producer._accumulator
    config = accumulator.config
    too_big = config["batch_size"] // 2
    new_batch = False
    accumulator._appends_in_progress.increment()
    try:
        with accumulator._tp_lock(tp):
            if accumulator._closed:
                raise IllegalStateError("the producer is closed")
            queue = accumulator._batches[tp]
            batch = queue[-1] if queue else None
            if batch is not None:
                _report_failures(batch, on_failed)
            for i in range(start, len(records)):
                try:
                    key, value = records[i]
                    headers = None
                except ValueError:  # with headers: rare, so the common case pays nothing
                    key, value, headers = records[i]
                    check_headers(headers)
                if len(value) > too_big:
                    break
                if batch is None or batch.records.append(None, key, value, headers) is None:
                    batch = ProducerBatch(
                        tp,
                        MemoryRecordsBuilder(
                            config["message_version"],
                            config["compression_attrs"],
                            config["batch_size"],
                        ),
                    )
                    _report_failures(batch, on_failed)
                    batch.records.append(None, key, value, headers)
                    queue.append(batch)
                    accumulator._incomplete.add(batch)
                    new_batch = True
            else:
                i = len(records)
            full = len(queue) > 1 or (batch is not None and batch.records.is_full())
    finally:
        accumulator._appends_in_progress.decrement()
    if new_batch or full:
        producer._sender.wakeup()
    return i


def check_headers(headers: object) -> None:
    """TypeError unless ``headers`` is a list of (str, bytes) pairs, as kafka-python's send()
    demands (its batch appender, which `append_run` calls, checks nothing)."""
    if not isinstance(headers, list) or not all(
        isinstance(h, tuple) and len(h) == 2 and isinstance(h[0], str) and isinstance(h[1], bytes)
        for h in headers
    ):
        raise TypeError(f"headers must be a list of (str, bytes) pairs, not {headers!r:.80}")


def _report_failures(batch: ProducerBatch, on_failed: Failed) -> None:
    """Call ``on_failed`` once if ``batch`` fails, with the count of its records that have no
    future of their own (`produce_future`, `_record_futures`).

    Upstream problem: flush() returns normally when records failed; an error reaches only each
    record's future, and records appended by `append_run` have none. A worker must not save a
    checkpoint past outputs that were lost, so their failures are counted here.
    """
    if getattr(batch, "_driftstream_reports", False):
        return
    batch._driftstream_reports = True

    def on_done(result: tuple) -> None:  # (base offset, timestamp, errors by record)
        errors, without_future = result[2], batch.record_count - len(batch._record_futures)
        if errors is not None and without_future:
            on_failed(errors(0), without_future)

    batch.produce_future.add_callback(on_done)
