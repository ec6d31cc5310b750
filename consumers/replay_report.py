"""What replay writes: a per-event DataFrame (CSV/Parquet), a summary table and a plot."""

from __future__ import annotations

import pandas as pd

from driftstream.consumers.replay import ReplayResult


def to_frame(result: ReplayResult) -> pd.DataFrame:
    """One row per replayed event."""
    columns = [
        "id",
        "offset",
        "event_ts",
        "features",
        "served",
        "replayed",
        "proba",
        "label",
        "error",
        "generation",
        "updates",
        "match",
        "drift",
    ]
    return pd.DataFrame(result.rows, columns=columns)


def write_frame(frame: pd.DataFrame, path: str) -> None:
    """CSV or Parquet, by extension."""
    if path.endswith(".parquet"):
        frame.astype({"served": "string", "replayed": "string", "label": "string"}).to_parquet(
            path, index=False
        )
    elif path.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        raise ValueError(f"report {path!r}: use a .csv or .parquet file name")


def summary(result: ReplayResult, live_detections: int | None) -> dict:
    """Live (served) against replayed: accuracy or MAE, detections, mismatches, speed."""
    frame = to_frame(result)
    labelled = frame[frame["label"].notna()]
    classification = result.learner.task == "classification"

    def score(column: str) -> float | None:
        rows = labelled[labelled[column].notna()]
        if rows.empty:
            return None
        if classification:
            return float((rows[column] == rows["label"]).mean())
        return float((rows[column].astype(float) - rows["label"].astype(float)).abs().mean())

    concept = [d for d in result.drifts if d["kind"] == "concept"]
    acted = [d for d in concept if not d["action"].startswith("none")]
    return {
        "partition": result.partition,
        "start": result.start,
        "events": len(frame),
        "labelled": len(labelled),
        "metric": "accuracy" if classification else "mae",
        "live": score("served"),
        "replay": score("replayed"),
        "live_detections": live_detections,
        "replay_detections": len(concept),
        "replay_actions": len(acted),
        "mismatches": int((~frame["match"]).sum()) if len(frame) else 0,
        "records": result.n_records,
        "events_per_s": round(result.events_per_s),
        "model": result.learner.config.model,
        "policy": result.learner.config.drift_policy,
    }


def format_summary(s: dict) -> str:
    def num(v):
        return "-" if v is None else f"{v:.4f}"

    lines = [
        f"partition {s['partition']}: replayed {s['events']} events ({s['labelled']} labelled) "
        f"from {s['start']}, {s['records']} records at {s['events_per_s']:,} records/s",
        f"{'':24}{'live (served)':>15}{'replay':>15}",
        f"{s['metric']:<24}{num(s['live']):>15}{num(s['replay']):>15}",
        f"{'concept detections':<24}{_or_dash(s['live_detections']):>15}"
        f"{s['replay_detections']:>15}",
        f"{'model / policy':<24}{'':>15}{s['model'] + ' / ' + s['policy']:>15}",
        f"predictions that differ from the served ones: {s['mismatches']}",
    ]
    return "\n".join(lines)


def plot(result: ReplayResult, path: str, window: int = 500) -> None:
    """Rolling metric of served and replayed predictions over events, with drift markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = to_frame(result)
    labelled = frame[frame["label"].notna()].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(10, 4))
    classification = result.learner.task == "classification"
    for column, style in (("served", "-"), ("replayed", "--")):
        rows = labelled[labelled[column].notna()]
        if rows.empty:
            continue
        if classification:
            values = (rows[column] == rows["label"]).astype(float)
        else:
            values = (rows[column].astype(float) - rows["label"].astype(float)).abs()
        ax.plot(
            rows["offset"],
            values.rolling(window, min_periods=1).mean(),
            style,
            lw=1,
            label=f"{column} ({window}-event rolling {'accuracy' if classification else 'MAE'})",
        )
    marked = frame[frame["drift"] != ""]
    for i, (_, row) in enumerate(marked.iterrows()):
        ax.axvline(
            row["offset"],
            color="red",
            lw=0.8,
            alpha=0.6,
            label="drift (replay)" if i == 0 else None,
        )
    ax.set_xlabel("event offset")
    ax.set_title(
        f"replay of partition {result.partition}: {result.learner.config.model}, "
        f"policy {result.learner.config.drift_policy}"
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _or_dash(value) -> str:
    return "-" if value is None else str(value)
