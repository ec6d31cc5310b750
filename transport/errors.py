"""The errors the Kafka adapter raises, and the kafka-python ones it lets through.

Callers catch `KafkaClientError` for anything the adapter itself reports, and kafka-python's
`KafkaError` (re-exported here) for what a send future or a poll can raise.
"""

from __future__ import annotations

from kafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
)

__all__ = [
    "ClientNotInstalled",
    "DeliveryFailed",
    "KafkaClientError",
    "KafkaError",
    "KafkaUnavailable",
    "TopicError",
    "UnsupportedKafkaPython",
]

# What kafka-python 3 raises at construction when it cannot bootstrap.
UNREACHABLE = (KafkaTimeoutError, KafkaConnectionError, NodeNotReadyError)


class KafkaClientError(Exception):
    """Base class of the errors raised by the Kafka adapter."""


class KafkaUnavailable(KafkaClientError):
    """The broker could not be reached when a client was created."""

    def __init__(self, bootstrap_servers: str, reason: str):
        self.bootstrap_servers = bootstrap_servers
        super().__init__(f"Kafka unavailable at {bootstrap_servers}: {reason}")

    @classmethod
    def because(cls, bootstrap_servers: str, exc: Exception) -> KafkaUnavailable:
        """From the error kafka-python raised; it names only the address, so no secret of the
        settings can reach the message."""
        return cls(bootstrap_servers, str(exc) or type(exc).__name__)


class DeliveryFailed(KafkaClientError, KafkaError):
    """Records that Kafka did not take for good (retries over, or refused, e.g. too large).

    Raised by `Producer.flush` (a KafkaError too, so code that handles an unreachable Kafka
    handles it): kafka-python's own flush returns normally when records failed.
    """

    def __init__(self, failed: int, first: BaseException):
        why = first if isinstance(first, KafkaError) else f"{type(first).__name__}: {first}"
        super().__init__(f"{failed} record(s) not delivered; the first: {why}")
        self.failed = failed
        self.first = first


class ClientNotInstalled(KafkaClientError, ImportError):
    """The Kafka client chosen (``--kafka-client``) is not installed.

    An ImportError too: making a consumer or producer imports it.
    """

    def __init__(self, client: str, package: str, extra: str):
        self.client = client
        super().__init__(
            f"--kafka-client {client} needs the {package} package, which is not installed: "
            f"pip install 'driftstream[{extra}]'"
        )


class TopicError(KafkaClientError):
    """A topic could not be created, or exists with the wrong layout."""


class UnsupportedKafkaPython(KafkaClientError, ImportError):
    """The installed kafka-python is not the one version whose internals the adapter uses.

    An ImportError too: importing the adapter is what fails.
    """

    def __init__(self, installed: str, supported: str):
        self.installed = installed
        self.supported = supported
        super().__init__(
            f"driftstream needs kafka-python {supported}, but kafka-python {installed} is "
            f"installed (the Kafka adapter relies on that version's internals, see "
            f"driftstream/transport/_kafka_python.py): pip install kafka-python=={supported}"
        )
