"""Entry point of the bench's child processes: ``python -m bench.child KIND SPEC``.

A measurement that runs driftstream's code in a fresh interpreter (its own memory, its own CPU
time) starts one of these with `bench.procs.child_args`; SPEC is the JSON object the child's
function takes. Not for use by hand.
"""

from __future__ import annotations

import contextlib
import json
import sys

__all__ = ["KINDS", "main"]

KINDS = ("worker", "pending", "io-loop")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in KINDS:
        print(f"usage: python -m bench.child {{{','.join(KINDS)}}} SPEC", file=sys.stderr)
        return 2
    kind, spec = argv[0], json.loads(argv[1])
    # Imported by kind: a child loads only what it runs.
    if kind == "worker":
        from bench.worker_runs import worker_child

        return worker_child(spec)
    if kind == "pending":
        from bench.memory import pending_child

        return pending_child(spec)
    from bench.ceilings import io_loop_child

    return io_loop_child(spec)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
