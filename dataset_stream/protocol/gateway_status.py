"""A gateway's status: :class:`GatewayStatus`, retained on ``{prefix}/gateway/{gateway}/status``.

A gateway (``vega-emu fleet --connection shared``) carries many devices on one MQTT connection,
and MQTT has one last will per connection, so a device behind it has none of its own. The
gateway keeps this message retained (``schemas/gateway_status.json``)::

    {"gateway": "gw-node-0000-500", "state": "online", "devices": ["node-0000", ...]}

and its last will is the same message with ``"state": "offline"``: a consumer that sees a
gateway go offline takes every listed device as offline. Serialised only at the edge, like the
node's messages; :func:`read_gateway_status` reads one off its topic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self

from dataset_stream.errors import ForeignMessage, ProtocolError
from dataset_stream.protocol.messages import JsonMessage, extra_fields
from dataset_stream.protocol.topics import parse_gateway_topic, validate_device_id

#: A gateway's ``state`` values.
GATEWAY_STATES: Final = ("online", "offline")


@dataclass(frozen=True, slots=True)
class GatewayStatus(JsonMessage):
    """Gateway ``gateway`` is ``online`` or ``offline``, and with it the ``devices`` it carries."""

    SCHEMA: ClassVar[str] = "gateway_status"
    KNOWN: ClassVar[frozenset[str]] = frozenset(["gateway", "state", "devices"])

    gateway: str
    state: str
    devices: Sequence[str]
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_device_id(self.gateway)
        if self.state not in GATEWAY_STATES:
            raise ValueError(f"gateway state {self.state!r} is not one of {GATEWAY_STATES}")
        if isinstance(self.devices, str):
            raise ValueError("gateway devices must be a list of device ids, not one string")
        for device in self.devices:
            validate_device_id(device)

    @property
    def online(self) -> bool:
        return self.state == "online"

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "gateway": self.gateway,
            "state": self.state,
            "devices": list(self.devices),
        }

    @classmethod
    def from_valid(cls, obj: dict[str, Any]) -> Self:
        return cls(
            gateway=obj["gateway"],
            state=obj["state"],
            devices=tuple(obj["devices"]),
            extra=extra_fields(obj, cls.KNOWN),
        )


def read_gateway_status(prefix: str, where: str, payload: object) -> GatewayStatus:
    """The gateway status published on topic ``where``.

    Raises :class:`ForeignMessage` for a topic that is not a gateway's status under ``prefix``,
    or a message that names another gateway than its topic; ``ProtocolError("bad_format")`` for
    a payload that is not a valid gateway status.
    """
    try:
        gateway = parse_gateway_topic(prefix, where)
    except ProtocolError as exc:
        raise ForeignMessage(f"a message on {where[:200]!r}: {exc.message}") from None
    if not isinstance(payload, bytes | bytearray):
        raise ProtocolError("bad_format", f"{where}: payload is not bytes")
    status = GatewayStatus.from_json(bytes(payload))
    if status.gateway != gateway:
        raise ForeignMessage(f"status of gateway {status.gateway!r} on the topic of {gateway}")
    return status


__all__ = ["GATEWAY_STATES", "GatewayStatus", "read_gateway_status"]
