"""How the embedded broker's CPU grows while a consumer tails a partition that keeps growing.

    .venv/bin/python -m bench.broker_growth [--rate 13500] [--seconds 30] [--ticks 5,10,20]

For each tick: a fresh embedded broker, the latency bench's load generator (`LoadPublisher`)
sending what is due every tick ms to an events and a labels topic (1 partition each), and one
consumer tailing both with the worker's fetch settings. Prints the broker's CPU (% of a core)
every 2 s. Producing alone keeps Tansu (0.6, memory storage) flat (6-8 % of a core at 11,000
events/s in 5 ms batches, 30 s); a consumer reading the batches back makes it climb, because
its cost per batch returned grows with the batches stored in the partition (its fetch asks
the storage for batches from the fetch offset in a loop until none is left). So the rate of
stored batches, the load generator's tick, decides how fast the broker slows down: this is
why latency at 5 ms batches rises second by second in `bench.throughput`, for the I/O ceiling's
loop as for the worker. Fewer fetches do not help much (most of the cost is per batch), and
a fetch wait of 0 is no way out: Tansu answers such a fetch with no records at all.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from bench.load import FETCH_MAX_WAIT_MS, MAX_POLL_RECORDS, LoadPublisher
from bench.procs import proc_cpu_s
from driftstream.broker import EmbeddedBroker
from driftstream.transport import Admin, Consumer, KafkaSettings

STEP_S = 2


def broker_cpu_by_step(rate: float, seconds: float, tick_s: float) -> list[int]:
    """Broker CPU, % of a core, per STEP_S while one consumer tails the load."""
    with EmbeddedBroker() as broker:
        settings = KafkaSettings(broker.bootstrap)
        admin = Admin(settings)
        admin.create_topics(["events", "labels"], 1)
        admin.close()
        stop = threading.Event()

        def generate() -> None:
            publisher = LoadPublisher(broker.bootstrap)
            sent, tick, start = 0, 0, time.perf_counter()
            while not stop.is_set():
                due = int((time.perf_counter() - start) * rate)
                now_ms = time.time_ns() // 1_000_000
                if due > sent:
                    keys = [b"k%d" % i for i in range(sent, due)]
                    publisher.send(
                        {
                            "events": [(now_ms, k, b"v" * 110) for k in keys],
                            "labels": [(now_ms, k, b"v" * 45) for k in keys],
                        }
                    )
                    sent = due
                tick += 1
                time.sleep(max(0.0, start + tick * tick_s - time.perf_counter()))
            publisher.close()

        def tail() -> None:
            consumer = Consumer(
                settings,
                client_id="growth",
                max_poll_records=MAX_POLL_RECORDS,
                fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            )
            consumer.assign([("events", 0), ("labels", 0)])
            while not stop.is_set():
                consumer.poll_by_partition(100)
            consumer.close()

        threads = [threading.Thread(target=f, daemon=True) for f in (generate, tail)]
        for t in threads:
            t.start()
        pid = broker._proc.pid  # its CPU time only
        out, last = [], proc_cpu_s(pid)
        for _ in range(int(seconds // STEP_S)):
            time.sleep(STEP_S)
            now = proc_cpu_s(pid)
            out.append(round((now - last) / STEP_S * 100))
            last = now
        stop.set()
        for t in threads:
            t.join(timeout=10)
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.broker_growth", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rate", type=float, default=13_500, help="events/s (and labels/s)")
    parser.add_argument("--seconds", type=float, default=30, help="per tick setting")
    parser.add_argument(
        "--ticks", default="5,10,20", help="load generator ticks, ms, comma-separated"
    )
    args = parser.parse_args(argv)
    print(
        f"broker CPU, % of a core every {STEP_S} s; {args.rate:,.0f} events/s + as many labels, "
        "one consumer tailing both"
    )
    for tick in (int(t) for t in args.ticks.split(",")):
        by_step = broker_cpu_by_step(args.rate, args.seconds, tick / 1000)
        print(f"tick {tick:>3} ms: " + " ".join(f"{v:>3}" for v in by_step))
    return 0


if __name__ == "__main__":
    sys.exit(main())
