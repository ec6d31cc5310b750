"""Connection settings shared by every Kafka client, and the topic names of driftstream.

Settings are tuned to work with both Apache Kafka and Tansu (docs/design.md, "Broker").

>>> KafkaSettings("kafka:9092", sasl_plain_password="hunter2")
KafkaSettings(bootstrap_servers='kafka:9092', ..., sasl_plain_password='***', ...)
>>> topic_names("demo.")["events"]
'demo.events'
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

__all__ = ["CLIENTS", "CLIENT_ENV", "ROLES", "KafkaSettings", "topic_names"]

ROLES = ("events", "labels", "predictions", "drift", "metrics", "deadletter")
# The client libraries behind the adapter: kafka-python (the default, always installed) and
# confluent-kafka (librdkafka; `pip install driftstream[confluent]`). docs/design.md, "Two
# Kafka clients".
CLIENTS = ("kafka-python", "confluent")
CLIENT_ENV = "DRIFTSTREAM_KAFKA_CLIENT"  # also the `--kafka-client` option's variable


def _env_bootstrap() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")


def _env_client() -> str:
    return os.environ.get(CLIENT_ENV) or CLIENTS[0]


@dataclass
class KafkaSettings:
    """Connection settings shared by every client; SASL/SSL pass through to the client.

    ``client`` picks the library behind `Consumer` and `Producer` (one of `CLIENTS`; default
    $DRIFTSTREAM_KAFKA_CLIENT, else kafka-python). `Admin` always uses kafka-python.

    ``fast_group_timeouts`` is for Tansu only: consumer-group joins there take about
    session_timeout/2, so 2000 ms gives ~1 s joins; Apache Kafka rejects session timeouts
    under 6000 ms by default, so the default is 10000 ms.
    """

    bootstrap_servers: str = field(default_factory=_env_bootstrap)
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    fast_group_timeouts: bool = False
    connect_timeout_ms: int = 10000  # how long a client tries to bootstrap before giving up
    client: str = field(default_factory=_env_client)

    def __post_init__(self) -> None:
        if self.client not in CLIENTS:
            raise ValueError(
                f"unknown Kafka client {self.client!r}: choose one of {', '.join(CLIENTS)}"
            )

    def client_kwargs(self) -> dict[str, object]:
        """kafka-python connection kwargs common to consumer, producer and admin client."""
        kwargs: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers,
            "bootstrap_timeout_ms": self.connect_timeout_ms,
        }
        for name in (
            "security_protocol",
            "sasl_mechanism",
            "sasl_plain_username",
            "sasl_plain_password",
            "ssl_cafile",
            "ssl_certfile",
            "ssl_keyfile",
        ):
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = value
        return kwargs

    def group_kwargs(self) -> dict[str, int]:
        """Consumer-group timeouts (see the class docstring)."""
        if self.fast_group_timeouts:
            return {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}
        return {"session_timeout_ms": 10000, "heartbeat_interval_ms": 3000}

    def __repr__(self) -> str:
        """Like the dataclass repr, with the password masked so it never reaches a log."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "sasl_plain_password" and value is not None:
                parts.append(f"{f.name}='***'")
            else:
                parts.append(f"{f.name}={value!r}")
        return f"KafkaSettings({', '.join(parts)})"

    __str__ = __repr__


def topic_names(prefix: str = "") -> dict[str, str]:
    """Topic name for each role, e.g. prefix "demo." gives {"events": "demo.events", ...}."""
    return {role: f"{prefix}{role}" for role in ROLES}
