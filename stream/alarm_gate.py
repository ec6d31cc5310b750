"""When a failing test becomes an alarm: few false alarms, and none repeated.

One check runs many tests (every test on every feature), so some p-values are small by chance
on stationary data. The gate takes one check's findings and lets through only those that

1. survive Benjamini-Hochberg across all the findings of the check
   (``scipy.stats.false_discovery_control``, at level ``alpha``),
2. and whose effect is at least the test's floor (a real but tiny shift is no alarm),
3. and that failed ``persistence`` checks in a row,
4. and whose (test, feature) is not in its cooldown (``cooldown`` events after its last alarm),
5. and whose (test, feature) has not alarmed since the reference was rebuilt, unless the live
   data recovered in between (``persistence`` passing checks in a row).

>>> gate = AlarmGate(floors={"ks": 0.1}, alpha=0.01, persistence=2, cooldown=0)
>>> shift = [Finding("ks", "x", 0.3, 1e-9, 0.3)]
>>> gate.update(shift, n_seen=1000), len(gate.update(shift, n_seen=2000))
([], 1)
>>> gate.update(shift, n_seen=3000)  # latched: no repeat while the shift lasts
[]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from driftstream.stream.data_tests import Finding

__all__ = ["AlarmGate"]


@dataclass(slots=True)
class _KeyState:
    failing: int = 0  # consecutive failing checks
    passing: int = 0  # consecutive passing checks (recovery)
    latched: bool = False  # alarmed, not recovered since
    quiet_until: int = 0  # n_seen before which it may not alarm again


class AlarmGate:
    """Multiple-testing control, effect floors, persistence, cooldown and no-repeat, per
    (test, feature)."""

    def __init__(self, floors: dict[str, float], alpha: float, persistence: int, cooldown: int):
        self.floors = dict(floors)
        self.alpha = alpha
        self.persistence = persistence
        self.cooldown = cooldown
        self.keys: dict[tuple[str, str | None], _KeyState] = {}
        self.failures = 0  # failing findings seen (alarms or not): how close to alarming

    def failing(self, findings: list[Finding]) -> list[bool]:
        """Which findings of one check fail: effect over the floor and BH-significant."""
        floors = self.floors
        over = [abs(f.effect) >= floors[f.test] for f in findings]
        if not any(over):  # nothing can fail: skip the BH pass (most checks)
            return over
        ps = np.array([f.p_value for f in findings], dtype=float)
        ps = np.where(np.isfinite(ps), np.clip(ps, 0.0, 1.0), 1.0)  # NaN (inf inputs): no
        adjusted = stats.false_discovery_control(ps)
        return [o and bool(a <= self.alpha) for o, a in zip(over, adjusted)]

    def update(self, findings: list[Finding], n_seen: int) -> list[Finding]:
        """Take one check's findings; return those that alarm now."""
        alarms = []
        keys = self.keys
        for finding, fails in zip(findings, self.failing(findings)):
            key = (finding.test, finding.feature)
            state = keys.get(key)
            if state is None:
                state = keys[key] = _KeyState()
            if not fails:
                state.failing = 0
                state.passing += 1
                if state.latched and state.passing >= self.persistence:
                    state.latched = False  # the live data recovered
                continue
            self.failures += 1
            state.passing = 0
            state.failing += 1
            if state.failing >= self.persistence and not state.latched:
                if n_seen >= state.quiet_until:
                    state.latched = True
                    state.quiet_until = n_seen + self.cooldown
                    alarms.append(finding)
        return alarms

    def latched(self) -> list[tuple[str, str | None]]:
        """The (test, feature) pairs that alarmed and have not recovered."""
        return [key for key, state in self.keys.items() if state.latched]

    def reset(self) -> None:
        """Forget every streak and alarm: the reference was rebuilt."""
        self.keys.clear()
