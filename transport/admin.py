"""`Admin`: create, list and delete driftstream's topics."""

from __future__ import annotations

import time

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from driftstream.transport.errors import UNREACHABLE, KafkaUnavailable, TopicError
from driftstream.transport.settings import KafkaSettings

__all__ = ["Admin"]

_ERROR_TOPIC_ALREADY_EXISTS = 36
_ERROR_UNKNOWN_TOPIC = 3


class Admin:
    """Topic management. Create topics explicitly: Tansu auto-creates missing topics with
    4 partitions on metadata requests from producers and consumers."""

    def __init__(self, settings: KafkaSettings):
        try:
            self._admin = KafkaAdminClient(**settings.client_kwargs())
        except UNREACHABLE as exc:
            raise KafkaUnavailable.because(settings.bootstrap_servers, exc) from None

    def list_topics(self, timeout: float = 10.0) -> set[str]:
        """Names of all topics.

        Retries for up to ``timeout`` seconds while the connection is being re-established
        (e.g. right after a broker restart, kafka-python raises NodeNotReadyError once).
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                return set(self._admin.list_topics())
            except UNREACHABLE:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # back-off between reconnection attempts

    def partition_counts(self, names: list[str]) -> dict[str, int]:
        """Partition count of each existing topic among `names` (missing ones are left out)."""
        existing = self.list_topics()
        wanted = [name for name in names if name in existing]
        if not wanted:
            return {}
        return {t["name"]: len(t["partitions"]) for t in self._admin.describe_topics(wanted)}

    def create_topics(
        self,
        names: list[str],
        partitions: int,
        replication_factor: int = -1,
        configs: dict[str, str] | None = None,
    ) -> list[str]:
        """Make sure every topic exists with `partitions` partitions; returns those created.

        Existing topics are fine if their partition count matches; otherwise TopicError.
        replication_factor=-1 uses the broker's default. ``configs`` (e.g.
        ``{"cleanup.policy": "compact"}``) are set on the topics created here; an existing
        topic keeps its own (see `topic_configs`).
        """
        existing = self.list_topics()
        missing = [name for name in names if name not in existing]
        created: list[str] = []
        if missing:
            options = {
                "num_partitions": partitions,
                "replication_factor": replication_factor,
                "configs": {str(k): str(v) for k, v in (configs or {}).items()},
            }
            response = self._admin.create_topics(
                {name: dict(options) for name in missing}, raise_errors=False
            )
            for result in response["topics"]:
                code = result["error_code"]
                if code == 0:
                    created.append(result["name"])
                elif code != _ERROR_TOPIC_ALREADY_EXISTS:  # a concurrent creator won: fine
                    raise TopicError(
                        f"cannot create topic {result['name']!r}: error {code} "
                        f"{result.get('error_message') or ''}".strip()
                    )
        counts = self.partition_counts(list(names))
        for name in names:
            if name not in counts:
                raise TopicError(f"topic {name!r} does not exist after creating it")
            if counts[name] != partitions:
                raise TopicError(
                    f"topic {name!r} exists with {counts[name]} partitions, "
                    f"but {partitions} were requested"
                )
        return created

    def topic_configs(self, name: str) -> dict[str, str]:
        """The configuration of a topic, {name: value}; empty if it does not exist.

        Apache Kafka gives every setting, defaults included. Tansu gives only those set when
        the topic was created, and marks them as defaults, so asking for modified settings
        alone would drop them.
        """
        resource = ConfigResource(ConfigResourceType.TOPIC, name)
        described = self._admin.describe_configs([resource], config_filter="all")
        entries = described.get("topic", {}).get(name, {})
        return {key: entry["value"] for key, entry in entries.items()}

    def delete_topics(self, names: list[str]) -> None:
        """Delete topics; ones that do not exist are ignored."""
        if not names:
            return
        response = self._admin.delete_topics(list(names), raise_errors=False)
        for result in response["topics"]:
            code = result["error_code"]
            if code not in (0, _ERROR_UNKNOWN_TOPIC):
                raise TopicError(
                    f"cannot delete topic {result['name']!r}: error {code} "
                    f"{result.get('error_message') or ''}".strip()
                )

    def close(self) -> None:
        """Close the connections."""
        self._admin.close()
