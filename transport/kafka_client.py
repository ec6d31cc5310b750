"""The adapter's former single module, kept so that existing imports keep working.

New code imports from `driftstream.transport`; this module re-exports the same names.
"""

from driftstream.transport import (
    ROLES,
    Admin,
    Consumer,
    DeliveryFailed,
    KafkaClientError,
    KafkaError,
    KafkaSettings,
    KafkaUnavailable,
    Producer,
    Record,
    TopicError,
    topic_names,
)

__all__ = [
    "ROLES",
    "Admin",
    "Consumer",
    "DeliveryFailed",
    "KafkaClientError",
    "KafkaError",
    "KafkaSettings",
    "KafkaUnavailable",
    "Producer",
    "Record",
    "TopicError",
    "topic_names",
]
