"""Child processes of the bench and what /proc says about them: CPU time and peak RSS.

Every measurement that runs driftstream's own code out of this process (a worker, the I/O
ceiling's live loop, a learner holding pending joins) starts a fresh interpreter, so that its
memory and CPU are its own; `child_args` names such a child by kind (`bench.child`).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

__all__ = [
    "PYTHON",
    "ROOT",
    "child_args",
    "child_pids",
    "last_json_line",
    "proc_cpu_s",
    "tree_hwm_mb",
    "vm_hwm_mb",
    "wait_child",
    "wait_children",
]

ROOT = Path(__file__).resolve().parent.parent  # the repository: children run from here
PYTHON = sys.executable


def child_args(kind: str, spec: dict) -> list[str]:
    """The command line of a bench child process (``python -m bench.child KIND SPEC``)."""
    return [PYTHON, "-m", "bench.child", kind, json.dumps(spec)]


def proc_cpu_s(pid: int | None) -> float | None:
    """utime + stime of a process, from /proc (None if unavailable)."""
    if pid is None:
        return None
    try:
        fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def vm_hwm_mb(pid: int | str = "self") -> float | None:
    """Peak RSS (VmHWM) of a live process, in MB, from /proc (None once it has exited).

    Used instead of rusage's ru_maxrss, which on Linux also counts the parent's RSS at
    fork/exec time (it keeps the pre-exec hiwater), so every child would show the bench's.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def child_pids(pid: int) -> list[int]:
    """Direct children of a live process (the worker's model process)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def tree_hwm_mb(pid: int | str = "self") -> float | None:
    """VmHWM of a process plus its direct children's: the worker with its model process
    (an upper bound: pages the fork still shares are counted twice)."""
    own = vm_hwm_mb(pid)
    if own is None:
        return None
    pid = os.getpid() if pid == "self" else pid
    return own + sum(vm_hwm_mb(c) or 0 for c in child_pids(pid))


def wait_children(
    procs: list[subprocess.Popen], timeout: float
) -> list[tuple[int, resource.struct_rusage, float | None]]:
    """Wait for children with os.wait4 (each one's own CPU rusage), sampling their VmHWM
    every 20 ms while they run (peak RSS, with their own children's); kill them on timeout.
    Returns (exit code, rusage, peak RSS MB) per child."""
    deadline = time.monotonic() + timeout
    peaks: list[float | None] = [None] * len(procs)
    done: dict[int, tuple] = {}
    while len(done) < len(procs):
        for k, proc in enumerate(procs):
            if k in done:
                continue
            hwm = tree_hwm_mb(proc.pid)
            if hwm is not None:
                peaks[k] = hwm if peaks[k] is None else max(peaks[k], hwm)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                done[k] = (proc.returncode, usage, peaks[k])
        if len(done) == len(procs):
            break
        if time.monotonic() > deadline:
            for k, proc in enumerate(procs):
                if k not in done:
                    proc.kill()
                    _, status, _ = os.wait4(proc.pid, 0)
                    proc.returncode = os.waitstatus_to_exitcode(status)
            raise TimeoutError(f"children did not finish within {timeout} s")
        time.sleep(0.02)
    return [done[k] for k in range(len(procs))]


def wait_child(
    proc: subprocess.Popen, timeout: float
) -> tuple[int, resource.struct_rusage, float | None]:
    return wait_children([proc], timeout)[0]


def last_json_line(path: Path) -> dict:
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON result in {path}")
    return json.loads(lines[-1])
