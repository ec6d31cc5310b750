"""The operator's tools on every checkpoint store, from a host that ran no worker.

Three workers, one per store (an SQLite file, ``kafka:`` and ``s3://``), each in a directory
of its own and a consumer group of its own, run over the same input topics with checkpoints
at fixed record counts only, so that their stores hold equal checkpoints and equal history.
Then `status`, `report`, `explain` and `replay --verify` run from a third, fresh directory
against each store and must give the same answers, up to what names the store or says when
it was written. Real servers only: the embedded Tansu broker and SeaweedFS's S3.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from driftstream.producers.sources import synthetic
from driftstream.state.kafka_store import create_checkpoint_topics
from driftstream.transport import KafkaSettings
from tests.support import DEADLINE_S, START_TS, create_topics, publish, run_argv, tail

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

KEY = "tools test key, 32 bytes long..."
N = 1500
PARTITIONS = 2


def cli(argv: list[str], cwd: Path, env: dict[str, str], name: str) -> subprocess.Popen:
    """``python -m driftstream.cli ARGV`` in ``cwd``; stdout to NAME.out, stderr to NAME.err
    (in ``cwd``'s parent: the tools' directory stays empty but for what they write)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTSTREAM_", "KAFKA_"))}
    out, err = (cwd.parent / f"{name}.{ext}" for ext in ("out", "err"))
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "driftstream.cli", *argv],
            cwd=cwd,
            env={**base, **env},
            stdout=o,
            stderr=e,
        )
    proc.out, proc.err = out, err
    return proc


def finish(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        code = proc.wait(timeout=2 * DEADLINE_S)
        assert code == 0, f"{proc.args[3:]} exited {code}\n{tail(proc.err)}\n{tail(proc.out)}"


def normal_page(html: str) -> str:
    """A report page without what names the store or the time it was made or written."""
    html = re.sub(r"<title>.*?</title>|<h1>.*?</h1>|<p class=note>State .*?</p>", "", html)
    return re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "(time)", html)


def test_status_report_explain_and_replay_agree_on_every_store(
    kafka_settings: KafkaSettings, unique_prefix: str, tmp_path: Path, seaweedfs
):
    samples = list(
        synthetic("sea", N, seed=4, drift_at=[N // 2], label_delay="100", start_ts=START_TS)
    )
    create_topics(kafka_settings, unique_prefix, PARTITIONS)
    create_checkpoint_topics(kafka_settings, unique_prefix, PARTITIONS)
    publish(kafka_settings, unique_prefix, samples, PARTITIONS)
    env = {
        "DRIFTSTREAM_STATE_KEY": KEY,
        "AWS_ENDPOINT_URL": seaweedfs.endpoint_url,
        "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
        "AWS_DEFAULT_REGION": seaweedfs.region,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    stores = {
        "sqlite": f"sqlite:{tmp_path / 'host-sqlite' / 'state.sqlite'}",
        "kafka": "kafka:",
        "s3": f"s3://{seaweedfs.bucket}/tools/{unique_prefix.rstrip('.')}",
    }
    workers = []
    for name, spec in stores.items():
        host = tmp_path / f"host-{name}"
        host.mkdir()
        argv = run_argv(
            kafka_settings,
            unique_prefix,
            spec,
            "--checkpoint-every",
            "250",
            "--checkpoint-interval",
            "3600",  # checkpoints at record counts only: the same in every store
            "--model",
            "lr",
            "--drift-policy",
            "reset",
            "--exit-when-idle",
            "1",
            group=f"{unique_prefix}{name}",
        )
        workers.append(cli(argv, host, env, f"worker-{name}"))
    finish(workers)

    tools_dir = tmp_path / "tools"  # a third host: no state of its own
    tools_dir.mkdir()
    kafka = ["--bootstrap-servers", kafka_settings.bootstrap_servers]
    kafka += ["--topic-prefix", unique_prefix]
    event = samples[2 * (N // 3) + 1].id  # partition 1, after the change
    commands = {
        "status": ["status", "--json", *kafka],
        "report": ["report", "--out", "{name}.html", *kafka],
        "explain": ["explain", event, "--json", *kafka],
        "replay": ["replay", "--partition", "1", "--from-offset", "300", "--verify"]
        + ["--json", *kafka],
    }
    runs = {}
    for name, spec in stores.items():
        for tool, argv in commands.items():
            argv = [a.replace("{name}", name) for a in argv] + ["--state", spec]
            runs[name, tool] = cli(argv, tools_dir, env, f"{tool}-{name}")
    finish(list(runs.values()))

    answers: dict[str, dict] = {}
    for name in stores:
        out = {tool: runs[name, tool].out.read_text() for tool in commands}
        status = orjson.loads(out["status"])
        for row in status:
            row.pop("checkpoint_age_s")
        replayed, verdict = out["replay"].splitlines()
        replay = orjson.loads(replayed)
        replay.pop("events_per_s")
        answers[name] = {
            "status": status,
            "report": normal_page((tools_dir / f"{name}.html").read_text()),
            "explain": orjson.loads(out["explain"]),
            "replay": (replay, verdict),
        }
    assert sorted(p.name for p in tools_dir.iterdir()) == [f"{n}.html" for n in sorted(stores)]

    sqlite = answers["sqlite"]
    # The answers mean something: every partition checkpointed to its end, the event
    # reproduced from a checkpoint with its provenance, the replay verified.
    assert [row["events_lag"] for row in sqlite["status"]] == [0] * PARTITIONS
    assert all(row["last_drift"] for row in sqlite["status"])
    explained = sqlite["explain"]
    assert explained["match"] and explained["descends_from"].startswith("checkpoint ")
    assert explained["written_by"]["river"] and explained["learner_config"]["model"] == "lr"
    assert sqlite["replay"][1].startswith("verified: all ")
    assert sqlite["replay"][0]["start"].startswith("checkpoint ")
    assert sqlite["report"].count("data:image/png;base64,") == 4  # all but dead letters
    for name in ("kafka", "s3"):
        for tool in commands:
            assert answers[name][tool] == sqlite[tool], (name, tool)
