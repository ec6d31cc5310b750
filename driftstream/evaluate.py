"""`driftstream evaluate`: run the learner over a synthetic or file stream, no broker.

Uses the same merge and learner as the worker (`stream.offline.run_offline`), so what it
reports is what a worker on one partition would report on the same data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from driftstream.producers.sources import Sample, arrival_order
from driftstream.stream.learner import Learner, LearnerConfig
from driftstream.stream.offline import run_offline
from driftstream.stream.records import DriftReport, Event, Label, Prediction, Rejection


@dataclass
class Evaluation:
    """Everything `evaluate` prints: the learner's report and drift figures by position."""

    learner: Learner
    n_samples: int
    drift_at: list[int]
    concept_drifts: list[dict] = field(default_factory=list)
    data_drifts: int = 0
    data_alarms: list[dict] = field(default_factory=list)  # each data alarm, in order
    challenges: list[dict] = field(default_factory=list)  # challenger promotions and drops
    rejected: dict[str, int] = field(default_factory=dict)
    accuracy_after: dict[int, float] = field(default_factory=dict)
    detection_delay: dict[int, int | None] = field(default_factory=dict)
    false_alarms: int = 0

    def to_dict(self) -> dict:
        return {
            "n_samples": self.n_samples,
            "model": self.learner.config.model,
            "drift_policy": self.learner.config.drift_policy,
            "metrics": self.learner.metrics.report(),
            "model_version": self.learner.version.to_wire(),
            "concept_drifts": self.concept_drifts,
            "data_drifts": self.data_drifts,
            "data_alarms": self.data_alarms,
            "challenges": self.challenges,
            "rejected": self.rejected,
            "drift_at": self.drift_at,
            "accuracy_after": {str(k): v for k, v in self.accuracy_after.items()},
            "detection_delay": {str(k): v for k, v in self.detection_delay.items()},
            "false_alarms": self.false_alarms,
        }


def evaluate(
    samples: list[Sample],
    config: LearnerConfig,
    drift_at: list[int] = (),
    after_window: int = 10_000,
) -> Evaluation:
    """Run ``samples`` through a learner; positions are sample indices (event order)."""
    events_s, labels_s = arrival_order(samples)
    position = {s.id: i for i, s in enumerate(samples)}
    events = [Event(s.id, s.x, s.ts, offset=i) for i, s in enumerate(events_s)]
    labels = [Label(s.id, s.y, s.label_ts) for s in labels_s]
    served: dict[str, object] = {}
    result = Evaluation(learner=None, n_samples=len(samples), drift_at=list(drift_at))

    def on_output(out) -> None:
        if isinstance(out, Prediction):
            served[out.id] = out.prediction
        elif isinstance(out, DriftReport):
            if out.kind == "concept":
                result.concept_drifts.append(
                    {
                        "labels_seen": out.n_seen,
                        "event_ts": out.event_ts,
                        "action": out.action,
                        **out.detector,
                    }
                )
            elif out.kind == "challenger":
                result.challenges.append(
                    {
                        "labels_seen": out.n_seen,
                        "event_ts": out.event_ts,
                        "action": out.action,
                        **out.detector,
                    }
                )
            else:
                result.data_drifts += 1
                wire = out.to_wire()
                result.data_alarms.append(
                    {
                        "events_seen": out.n_seen,
                        "event_ts": out.event_ts,
                        "test": wire["test"],
                        "feature": wire.get("feature"),
                        "statistic": wire["statistic"],
                        "p_value": wire.get("p_value"),
                        "effect": wire["effect"],
                        "action": out.action,
                    }
                )
        elif isinstance(out, Rejection):
            result.rejected[out.reason] = result.rejected.get(out.reason, 0) + 1

    learner, _ = run_offline(events, labels, config, on_output=on_output)
    result.learner = learner
    _drift_figures(result, samples, served, position, after_window)
    return result


def _drift_figures(result: Evaluation, samples, served, position, window: int) -> None:
    """Accuracy after each drift point, detection delay and false alarms (in samples)."""
    if not result.drift_at:
        return
    correct = [None] * len(samples)
    if result.learner.task == "classification":
        for s in samples:
            if s.id in served and served[s.id] is not None:
                correct[position[s.id]] = served[s.id] == s.y
    detections = [d["labels_seen"] for d in result.concept_drifts]
    first = result.drift_at[0]
    result.false_alarms = sum(1 for p in detections if p < first)
    bounds = list(result.drift_at) + [len(samples)]
    for at, nxt in zip(bounds, bounds[1:]):
        after = [c for c in correct[at : min(at + window, nxt)] if c is not None]
        if after:
            result.accuracy_after[at] = sum(after) / len(after)
        hits = [p for p in detections if at <= p < nxt]
        result.detection_delay[at] = hits[0] - at if hits else None


def format_table(ev: Evaluation) -> str:
    """Human-readable report of an evaluation."""
    lines = [
        f"model {ev.learner.config.model}, policy {ev.learner.config.drift_policy}, "
        f"{ev.n_samples} samples, final version {ev.learner.version.to_wire()}"
    ]
    for name, value in ev.learner.metrics.report().items():
        lines.append(
            f"  {name:<22} {value:.4f}" if isinstance(value, float) else f"  {name:<22} {value}"
        )
    lines.append(
        f"  {'concept drifts':<22} {len(ev.concept_drifts)} at labels "
        f"{[d['labels_seen'] for d in ev.concept_drifts][:20]}"
    )
    if ev.challenges:
        verdicts = [f"{c['labels_seen']} {c['action'].split(' ')[0]}" for c in ev.challenges]
        lines.append(
            f"  {'challenger verdicts':<22} {len(ev.challenges)} at labels {verdicts[:20]}"
        )
    alarms = [
        f"{a['events_seen']} {a['test']}" + (f"({a['feature']})" if a["feature"] else "")
        for a in ev.data_alarms
    ]
    lines.append(
        f"  {'data drifts':<22} {ev.data_drifts}" + (f" at events {alarms[:10]}" if alarms else "")
    )
    for at in ev.drift_at:
        acc = ev.accuracy_after.get(at)
        lines.append(
            f"  drift at {at}: accuracy over next samples "
            f"{'n/a' if acc is None else f'{acc:.4f}'}, detection delay "
            f"{ev.detection_delay.get(at)}"
        )
    if ev.drift_at:
        lines.append(f"  {'false alarms':<22} {ev.false_alarms}")
    if ev.rejected:
        lines.append(f"  {'rejected':<22} {ev.rejected}")
    return "\n".join(lines)
