"""compose.yml, Dockerfile and .dockerignore, tested without Docker (it cannot run here).

What can be checked is checked: the files parse, the services are wired to each other
consistently, every service's command is a valid `driftstream` command line under that
service's environment (parsed by the CLI's own parser and configuration), the workers keep
their state in the kafka: store with a key from a compose secret (no shared volume), and the
worker service's exact command processes a stream against the embedded broker, with only the
addresses, names and paths that point into the compose network swapped for local ones.
Monitoring: Prometheus's config and rules and Grafana's provisioning are the repository's
files mounted where the services read them, Prometheus scrapes every worker replica on the
workers' metrics port, and the dashboard's queries are valid PromQL (promtool) over metrics
the workers export.
"""

from __future__ import annotations

import os
import re
import signal
import tomllib
from pathlib import Path

import orjson
import pytest
import yaml

from driftstream.broker import free_port
from driftstream.cli import build_parser, main
from driftstream.config import parse_args
from driftstream.producers.sources import synthetic
from driftstream.state.store import open_store
from driftstream.transport import Consumer, KafkaSettings, topic_names
from tests.support import REPO, START_TS, http_get, publish, start_cli, tail, wait_until

COMPOSE = yaml.safe_load((REPO / "compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = {
    name: s for name, s in SERVICES.items() if s.get("image", "").startswith("driftstream")
}


def kafka_env() -> dict[str, str]:
    return {k: str(v) for k, v in SERVICES["kafka"]["environment"].items()}


def listeners(text: str) -> dict[str, str]:
    """'NAME://host:port,...' -> {NAME: 'host:port'}"""
    return dict(item.split("://", 1) for item in text.split(","))


def service_env(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in (SERVICES[name].get("environment") or {}).items()}


def effective_args(name: str):
    """The namespace the service's command line gives under its environment (only)."""
    return parse_args(build_parser(), SERVICES[name]["command"], environ=service_env(name))


def test_kafka_is_a_single_kraft_node_reachable_in_the_network() -> None:
    kafka = SERVICES["kafka"]
    env = kafka_env()
    assert kafka["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node = env["KAFKA_NODE_ID"]
    own = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node}@kafka:{own[controller].split(':')[1]}"
    assert controller not in advertised  # controllers are not for clients
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(own) == set(protocols)
    # In-network listener: advertised under the service's own name, on the port it listens on.
    inner = env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    assert advertised[inner] == f"kafka:{own[inner].split(':')[1]}"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "healthcheck" in kafka


def test_every_service_command_is_a_valid_driftstream_command_line() -> None:
    assert set(APP_SERVICES) >= {"topics", "worker", "producer"}
    for name in APP_SERVICES:
        command = SERVICES[name]["command"]
        if command == ["--help"]:
            continue
        args = effective_args(name)
        assert args.func is not None, name


def test_services_agree_on_broker_topics_partitions_and_state() -> None:
    env = kafka_env()
    inner = listeners(env["KAFKA_ADVERTISED_LISTENERS"])[env["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    args = {name: effective_args(name) for name in ("topics", "worker", "producer")}
    for name, a in args.items():
        assert a.bootstrap_servers == inner, name
    assert len({a.topic_prefix for a in args.values()}) == 1
    assert args["topics"].action == "create"
    assert args["producer"].partitions == args["topics"].partitions > 1
    # Workers: scalable across hosts (the kafka: store, no shared volume), metrics port
    # published, Apache timeouts.
    worker = SERVICES["worker"]
    assert worker["deploy"]["replicas"] >= 1
    assert args["worker"].state == "kafka:"
    assert not worker.get("volumes") and "state" not in COMPOSE.get("volumes", {})
    assert str(args["worker"].metrics_port) in [str(p).split(":")[-1] for p in worker["ports"]]
    assert args["worker"].metrics_host in ("0.0.0.0", "", "::")  # published: not loopback
    assert not args["worker"].fast_group_timeouts  # Apache Kafka rejects 2 s sessions
    # Order: Kafka healthy -> topics created -> workers and producer.
    assert SERVICES["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("worker", "producer"):
        cond = SERVICES[name]["depends_on"]["topics"]["condition"]
        assert cond == "service_completed_successfully", name


def test_checkpoints_are_signed_with_a_key_from_a_compose_secret() -> None:
    """The kafka: store needs a key; it comes from a secret file, never from the compose file
    itself, and every service that reads the store has it."""
    secrets = COMPOSE["secrets"]
    for name in ("worker", "tools"):
        args = effective_args(name) if SERVICES[name]["command"] != ["--help"] else None
        env = service_env(name)
        mounted = SERVICES[name]["secrets"]
        assert env["DRIFTSTREAM_STATE"] == "kafka:", name
        key_file = env["DRIFTSTREAM_STATE_KEY_FILE"]
        assert key_file in [f"/run/secrets/{s}" for s in mounted], name
        assert all("file" in secrets[s] for s in mounted)
        assert "DRIFTSTREAM_STATE_KEY" not in env  # the key itself never in the compose file
        if args is not None:
            assert args.state_key_file == key_file
    ignored = (REPO / ".gitignore").read_text().split()
    for secret in secrets.values():
        assert "/" + Path(secret["file"]).name in ignored  # never committed


def test_dockerfile_installs_every_package() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    ignore = (REPO / ".dockerignore").read_text().split()
    folders = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ].values()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert re.search(r"^RUN pip install \.", dockerfile, re.M)
    assert 'ENTRYPOINT ["driftstream"]' in dockerfile
    for folder in folders:
        assert re.search(rf"^COPY {folder} \./{folder}$", dockerfile, re.M), folder
        assert f"!{folder}/" in ignore, folder
    for name in ("pyproject.toml", "README.md"):  # pyproject's readme must be in the image
        assert name in dockerfile and f"!{name}" in ignore


@pytest.mark.broker
@pytest.mark.e2e
def test_compose_worker_command_processes_a_stream(
    broker, unique_prefix: str, tmp_path: Path, monkeypatch
) -> None:
    """The compose `topics` and `worker` commands verbatim, against the embedded broker; the
    environment's broker, prefix, group and key file, and the metrics port, are swapped."""
    n, partitions = 200, effective_args("topics").partitions
    key_file = tmp_path / "state.key"
    key_file.write_text("a compose test key, 32 bytes....\n")
    key_file.chmod(0o600)
    swaps = {
        "DRIFTSTREAM_BOOTSTRAP_SERVERS": broker.bootstrap,
        "DRIFTSTREAM_TOPIC_PREFIX": unique_prefix,
        "DRIFTSTREAM_GROUP": unique_prefix + "group",
        "DRIFTSTREAM_STATE_KEY_FILE": str(key_file),
    }
    assert set(swaps) <= set(service_env("worker"))  # swapped, not added

    topics_env = {**service_env("topics"), **swaps}
    for key in list(os.environ):
        if key.startswith("DRIFTSTREAM_"):
            monkeypatch.delenv(key)
    for key, value in topics_env.items():
        monkeypatch.setenv(key, value)
    assert main(SERVICES["topics"]["command"]) == 0

    settings = KafkaSettings(bootstrap_servers=broker.bootstrap)
    publish(
        settings,
        unique_prefix,
        synthetic("sea", n, label_delay="5", start_ts=START_TS),
        partitions=partitions,
    )

    argv = list(SERVICES["worker"]["command"])
    metrics_port = free_port()  # 9100 may be taken on this machine
    argv[argv.index("--metrics-port") + 1] = str(metrics_port)
    log = tmp_path / "worker.log"
    proc = start_cli(argv, log, env={**service_env("worker"), **swaps})
    consumer = Consumer(settings)
    try:
        topic = topic_names(unique_prefix)["predictions"]
        consumer.assign([(topic, p) for p in range(partitions)])
        seen: set[str] = set()

        def all_predicted() -> bool:
            seen.update(record.key.decode() for record in consumer.poll(200))
            return len(seen) >= n

        wait_until(all_predicted, f"{n} predictions", watch=[(proc, log)], step=0)
        status, _ = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
    finally:
        consumer.close()
        proc.send_signal(signal.SIGTERM)  # what `docker compose stop` sends
        code = proc.wait(timeout=30)
    assert code == 0, tail(log)
    key = key_file.read_bytes().strip()
    with open_store("kafka:", settings, unique_prefix, key) as store:
        assert sum(store.latest(p).info["n_events"] for p in store.partitions()) == n


# -- monitoring: Prometheus and Grafana ------------------------------------------------------


def bind_mounts(name: str) -> dict[str, Path]:
    """A service's bind mounts of repository folders: container path -> host path."""
    out = {}
    for volume in SERVICES[name].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            out[target] = REPO / source
    return out


def host_path(name: str, path: str) -> Path:
    """The repository file a container path of service ``name`` is (through its mounts)."""
    for target, source in sorted(bind_mounts(name).items(), key=lambda m: -len(m[0])):
        if path == target or path.startswith(target + "/"):
            return source / path[len(target) :].lstrip("/")
    raise AssertionError(f"{path} is not mounted into the {name} service")


def flag(name: str, option: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in SERVICES[name]["command"] if a.startswith(option + "=")]
    return value


def dashboard() -> dict:
    return orjson.loads((REPO / "deploy/grafana/dashboards/driftstream.json").read_bytes())


def dashboard_queries(board: dict) -> list[str]:
    targets = [t for panel in board["panels"] for t in panel.get("targets", [])]
    return [t["expr"] for t in targets] + [a["expr"] for a in board["annotations"]["list"]]


def test_monitoring_images_are_pinned() -> None:
    for name in ("prometheus", "grafana"):
        image = SERVICES[name]["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image), image  # never :latest


def test_prometheus_scrapes_every_worker_and_loads_the_alert_rules() -> None:
    config_file = host_path("prometheus", flag("prometheus", "--config.file"))
    assert config_file == REPO / "deploy/prometheus/prometheus.yml"
    config = yaml.safe_load(config_file.read_text())
    rules = [config_file.parent / f for f in config["rule_files"]]  # relative to the config
    assert REPO / "deploy/prometheus/alerts.yml" in rules and all(f.exists() for f in rules)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "driftstream"]
    assert 'up{job="driftstream"}' in (REPO / "deploy/prometheus/alerts.yml").read_text()
    # Every replica: the worker service's name resolves to all of them on the network.
    (dns,) = job["dns_sd_configs"]
    assert dns["names"] == ["worker"] and dns["type"] == "A"
    assert dns["port"] == effective_args("worker").metrics_port
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert "9090:9090" in SERVICES["prometheus"]["ports"]  # Prometheus's own port


def test_grafana_reads_prometheus_and_provisions_the_dashboard() -> None:
    provisioning = host_path("grafana", "/etc/grafana/provisioning")
    (datasource,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"  # the service, its port
    (provider,) = yaml.safe_load((provisioning / "dashboards/driftstream.yml").read_text())[
        "providers"
    ]
    folder = host_path("grafana", provider["options"]["path"])
    assert (folder / "driftstream.json").exists()
    home = service_env("grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path("grafana", home) == folder / "driftstream.json"
    assert SERVICES["grafana"]["depends_on"] == ["prometheus"]
    board = dashboard()
    uids = {
        item["datasource"]["uid"]
        for panel in board["panels"]
        for item in [panel, *panel.get("targets", [])]
        if "datasource" in item
    }
    assert uids == {datasource["uid"]}


def test_the_dashboard_queries_parse_and_use_what_workers_export(tmp_path: Path) -> None:
    """Each query is valid PromQL (promtool checks it as a recording rule, with the
    dashboard's variables filled in) and names only metrics a worker exports."""
    from tests.test_alerts import PROMETHEUS_OWN, exported, promtool

    board = dashboard()
    queries = dashboard_queries(board)
    assert len(queries) >= 15
    names = {n for q in queries for n in re.findall(r"\b(?:driftstream_[a-z_]+|ALERTS)\b", q)}
    missing = names - set(exported()) - PROMETHEUS_OWN - {"ALERTS"}
    assert not missing, f"the dashboard queries metrics no worker exports: {sorted(missing)}"
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"consumer_group", "partition"}
    filled = [re.sub(r"\$\w+", ".*", q) for q in queries]
    rules = {"groups": [{"name": "dashboard", "rules": []}]}
    for i, query in enumerate(filled):
        rules["groups"][0]["rules"].append({"record": f"dashboard:query_{i}", "expr": query})
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    done = promtool("check", "rules", str(tmp_path / "queries.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
