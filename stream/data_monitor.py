"""Data drift: each input compared with the data the current model learned from.

Interface skeleton (the statistics follow); see /tmp/h/interface.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from driftstream.stream.schema import FeatureSchema

__all__ = ["DataAlarm", "DataMonitor", "DataMonitorOptions"]


@dataclasses.dataclass(frozen=True)
class DataMonitorOptions:
    """How the data-drift monitor samples and when it alarms."""

    reference_size: int = 2000
    window: int = 2000
    check_every: int = 1000
    alpha: float = 0.01
    persistence: int = 3
    cooldown: int = 20_000


@dataclasses.dataclass(frozen=True)
class DataAlarm:
    """One data-drift alarm: which test on which feature, how big, against what."""

    test: str
    feature: str | None
    statistic: float
    p_value: float | None
    effect: float
    reference: dict
    live: dict
    n_seen: int


class DataMonitor:
    """Reference and live windows of one partition's events, tested every k events."""

    def __init__(
        self,
        options: DataMonitorOptions = DataMonitorOptions(),
        schema: FeatureSchema | None = None,
    ):
        self.options = options
        self.schema = schema
        self.n_seen = 0

    def observe_event(self, features: dict) -> list[DataAlarm]:
        self.n_seen += 1
        return []

    def observe_label(self, features: dict, y: Any) -> list[DataAlarm]:
        return []

    def rebuild_reference(self) -> None:
        pass

    def pin_reference(self, rows: list[dict], labels: list | None = None) -> None:
        pass

    def latest(self) -> dict[tuple[str, str | None], float]:
        return {}

    def summary(self) -> dict:
        return {"n_seen": self.n_seen}
