"""How much a client may make Mosquitto hold: the largest packet it takes, the bytes it queues.

Without these, Mosquitto takes any packet MQTT can frame (256 MiB) and queues up to
``max_queued_messages`` of them for every client, whatever their size. The bounds are computed
from the wire protocol's own limits (``dataset_stream.protocol``): a packet as large as the
largest valid payload plus the largest PUBLISH header, and a queue as large as a node would
hold. :mod:`broker` imports nothing of ``dataset_stream``, so the protocol's numbers are
written here and ``tests/broker/test_limits.py`` recomputes them from the protocol (and from
the node's delivery settings): when those change, that test says which constant to update.

Mosquitto 2.0 spells the packet bound ``max_packet_size`` (it recommends it over the older
``message_size_limit``, which counts the payload only and is checked once the whole packet
has been read): a client that sends a larger packet is disconnected as soon as the packet's
length is read, before its payload is buffered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "LARGEST_BATCH_BYTES",
    "LARGEST_EVAL_BYTES",
    "MAX_HELD_BATCHES",
    "MAX_PACKET_BYTES",
    "MAX_QUEUED_BYTES",
    "MQTT_MAX_PACKET_BYTES",
    "PUBLISH_HEADER_MAX_BYTES",
    "BrokerLimits",
]

MiB: Final = 1024 * 1024

#: MQTT's own ceiling: a 1-byte packet type, a Remaining Length of at most 4 bytes, and at most
#: 268,435,455 bytes after it (MQTT 3.1.1 section 2.2.3, MQTT 5 section 1.5.5).
MQTT_MAX_PACKET_BYTES: Final = 1 + 4 + 268_435_455

#: ``Limits().max_payload_bytes``: the largest learning batch (and inference request) a node
#: decodes.
LARGEST_BATCH_BYTES: Final = 16 * MiB
#: ``EVAL_LIMITS.max_payload_bytes``: the largest eval set a node decodes.
LARGEST_EVAL_BYTES: Final = 256 * MiB
#: ``DeliverySettings().max_held``: the early batches a node holds while it waits for a gap.
MAX_HELD_BATCHES: Final = 64

#: A PUBLISH's bytes besides its payload, at most: the fixed header (1 + 4), the topic (a
#: 2-byte length and up to 65,535 bytes: MQTT's maximum, so any ``--prefix`` fits), the packet
#: id (2) and, for MQTT 5, the properties' length (up to 4) and as much again as the topic for
#: the properties themselves (vega-emu's clients send none).
PUBLISH_HEADER_MAX_BYTES: Final = 1 + 4 + (2 + 65_535) + 2 + 4 + 65_535

#: The largest packet a client may send: the largest valid payload -- an eval set -- plus the
#: largest header; never above what MQTT can frame. With the eval sets' 256 MiB that is MQTT's
#: own ceiling: the packet bound then only makes Mosquitto say so to MQTT 5 clients, and what
#: keeps a node from buffering a huge batch is its decoder's size check.
MAX_PACKET_BYTES: Final = min(
    MQTT_MAX_PACKET_BYTES, max(LARGEST_BATCH_BYTES, LARGEST_EVAL_BYTES) + PUBLISH_HEADER_MAX_BYTES
)

#: The payload bytes Mosquitto queues for one client (beyond those in flight): a node's eval
#: set and as many of the largest batches as the node itself would hold. Past it, Mosquitto
#: drops what comes for that client (a node sees a gap; a stream re-sends what is unanswered).
#: 64 x 16 MiB + 256 MiB = 1.25 GiB.
MAX_QUEUED_BYTES: Final = MAX_HELD_BATCHES * LARGEST_BATCH_BYTES + LARGEST_EVAL_BYTES

#: Mosquitto reads its numbers as a C int.
_C_INT_MAX: Final = 2**31 - 1
#: Mosquitto refuses a ``max_packet_size`` below this.
_MOSQUITTO_MIN_PACKET_BYTES: Final = 20


@dataclass(frozen=True, slots=True)
class BrokerLimits:
    """The bounds written into a Mosquitto config (defaults: computed above)."""

    max_packet_bytes: int = MAX_PACKET_BYTES
    max_queued_bytes: int = MAX_QUEUED_BYTES
    max_queued_messages: int = 100_000
    max_inflight_messages: int = 100

    def __post_init__(self) -> None:
        if not _MOSQUITTO_MIN_PACKET_BYTES <= self.max_packet_bytes <= MQTT_MAX_PACKET_BYTES:
            raise ValueError(
                f"max_packet_bytes {self.max_packet_bytes} is outside "
                f"{_MOSQUITTO_MIN_PACKET_BYTES}..{MQTT_MAX_PACKET_BYTES}"
            )
        for name in ("max_queued_bytes", "max_queued_messages", "max_inflight_messages"):
            value = getattr(self, name)
            if not 1 <= value <= _C_INT_MAX:
                raise ValueError(f"{name} {value} is outside 1..{_C_INT_MAX}")

    def config_lines(self) -> list[str]:
        """The ``mosquitto.conf`` lines (global options, Mosquitto 2.0)."""
        return [
            f"max_packet_size {self.max_packet_bytes}",
            f"max_queued_bytes {self.max_queued_bytes}",
            f"max_queued_messages {self.max_queued_messages}",
            f"max_inflight_messages {self.max_inflight_messages}",
        ]
