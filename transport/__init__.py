"""The Kafka adapter: the one narrow interface through which driftstream touches Kafka.

Every other layer imports `Record`, `KafkaSettings`, `Consumer`, `Producer`, `Admin` and the
errors from here, never kafka-python itself, so another client could later go behind the
same interface without touching the worker. kafka-python's internals are used in one module
only, `_kafka_python`, which refuses any kafka-python but the one version it was written for.
Settings are tuned to work with both Apache Kafka and Tansu (docs/design.md, "Broker").
"""

from driftstream.transport.admin import Admin
from driftstream.transport.consumer import Consumer, Partition, Record
from driftstream.transport.errors import (
    DeliveryFailed,
    KafkaClientError,
    KafkaError,
    KafkaUnavailable,
    TopicError,
    UnsupportedKafkaPython,
)
from driftstream.transport.producer import Producer
from driftstream.transport.settings import ROLES, KafkaSettings, topic_names

__all__ = [
    "ROLES",
    "Admin",
    "Consumer",
    "DeliveryFailed",
    "KafkaClientError",
    "KafkaError",
    "KafkaSettings",
    "KafkaUnavailable",
    "Partition",
    "Producer",
    "Record",
    "TopicError",
    "UnsupportedKafkaPython",
    "topic_names",
]
