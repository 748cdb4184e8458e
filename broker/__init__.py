"""MQTT brokers for vega-emu: amqtt in-process (zero setup) and a Mosquitto launcher; the one
MQTT session helper every client uses is :mod:`broker.session` (with :mod:`broker.reconnect`,
:mod:`broker.backoff` and :mod:`broker.refusals`).

``EmbeddedBroker`` is imported on first use: a node or fleet worker that only parses a broker
URL does not load amqtt and its dependencies.
"""

from typing import TYPE_CHECKING, Any

from broker.acl import (
    MONITOR_USER,
    OPERATOR_USER,
    STREAM_USER,
    acl_text,
    hash_password,
    password_file_text,
    service_role,
)
from broker.backoff import Backoff, BackoffPolicy
from broker.errors import (
    BrokerError,
    BrokerStartError,
    BrokerURLError,
    MosquittoNotFound,
    OutageTooLong,
    SessionError,
    SubscriptionRefused,
)
from broker.mosquitto import Mosquitto, MosquittoConfig, MosquittoTLS, find_mosquitto
from broker.url import BrokerURL, free_port, parse_broker_url

if TYPE_CHECKING:
    from broker.embedded import EmbeddedBroker


def __getattr__(name: str) -> Any:
    if name == "EmbeddedBroker":
        from broker.embedded import EmbeddedBroker

        return EmbeddedBroker
    raise AttributeError(f"module 'broker' has no attribute {name!r}")


__all__ = [
    "MONITOR_USER",
    "OPERATOR_USER",
    "STREAM_USER",
    "Backoff",
    "BackoffPolicy",
    "BrokerError",
    "BrokerStartError",
    "BrokerURL",
    "BrokerURLError",
    "EmbeddedBroker",
    "Mosquitto",
    "MosquittoConfig",
    "MosquittoNotFound",
    "MosquittoTLS",
    "OutageTooLong",
    "SessionError",
    "SubscriptionRefused",
    "acl_text",
    "find_mosquitto",
    "free_port",
    "hash_password",
    "parse_broker_url",
    "password_file_text",
    "service_role",
]
