"""driftstream's benchmarks, run from the repository root as modules.

    .venv/bin/python -m bench.throughput --help
    .venv/bin/python -m bench.policies --help
    .venv/bin/python -m bench.replay --help
    .venv/bin/python -m bench.broker_growth --help
    .venv/bin/python -m bench.latency_trace --help

`bench.throughput` composes the measurements, one module each: `bench.offline` (River and
the learner without Kafka, the codec), `bench.ceilings` (the Kafka I/O ceiling and the naive
loop), `bench.worker_runs` (the worker on 1 and 4 partitions), `bench.latency` (latency at a
steady offered rate), `bench.memory` (pending joins); `bench.report` prints them.
`bench.load` holds the data, the embedded broker and the load generator they share,
`bench.procs` the child processes and their /proc readings, `bench.child` the entry point of
those children. bench is not part of the installed distribution.
"""

__all__: list[str] = []
