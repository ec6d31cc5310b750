"""The Kafka adapter: the one narrow interface through which driftstream touches Kafka.

Every other layer imports `Record`, `KafkaSettings`, `Consumer`, `Producer`, `Admin` and the
errors from here, never a client library itself. Two clients go behind the same interface,
chosen by ``KafkaSettings.client`` (``--kafka-client``): kafka-python (the default; its
internals are used in one module only, `_kafka_python`, which refuses any kafka-python but the
one version it was written for) and confluent-kafka (librdkafka, `_confluent`, optional).
Settings are tuned to work with both Apache Kafka and Tansu (docs/design.md, "Broker").
"""

from driftstream.transport.admin import Admin
from driftstream.transport.consumer import Consumer, Partition, Record
from driftstream.transport.errors import (
    ClientNotInstalled,
    DeliveryFailed,
    KafkaClientError,
    KafkaError,
    KafkaUnavailable,
    TopicError,
    UnsupportedKafkaPython,
)
from driftstream.transport.producer import Producer
from driftstream.transport.settings import CLIENTS, ROLES, KafkaSettings, topic_names

__all__ = [
    "CLIENTS",
    "ROLES",
    "Admin",
    "ClientNotInstalled",
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
