"""MQTT topics of wire contract v1: ``{prefix}/{device_id}/{kind}``, and a gateway's
``{prefix}/gateway/{gateway_id}/status`` (four levels: ``{prefix}/+/status`` never matches it).

Device ids match ``[A-Za-z0-9_-]{1,64}``; fleet ids are ``{prefix}{index:04d}`` so that
``vega-emu stream --devices N`` and the fleet's ``-n N`` name the same nodes. A gateway id
follows the device id rule.
"""

from __future__ import annotations

import re
from typing import Final

from dataset_stream.errors import ProtocolError

KINDS: Final = (
    "batch",
    "eval",
    "telemetry",
    "status",
    "error",
    "infer",
    "prediction",
    "fault",
    "desired",
    "reported",
)
DEFAULT_PREFIX: Final = "vega"
FLEET_PREFIX: Final = "node-"

_DEVICE_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


def is_device_id(value: object) -> bool:
    """``True`` when ``value`` is a valid device id."""
    return isinstance(value, str) and _DEVICE_ID_RE.fullmatch(value) is not None


def validate_device_id(value: object) -> str:
    """Return ``value`` if it is a valid device id, else raise ``ProtocolError("bad_format")``."""
    if isinstance(value, str) and _DEVICE_ID_RE.fullmatch(value):
        return value
    raise ProtocolError("bad_format", f"device id {value!r} does not match [A-Za-z0-9_-]{{1,64}}")


def validate_prefix(prefix: str) -> str:
    """A topic prefix: slash-separated levels of ``[A-Za-z0-9_.-]``, no wildcards."""
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise ProtocolError("bad_format", f"topic prefix {prefix!r} is not a plain topic path")
    return prefix


def topic(prefix: str, device_id: str, kind: str) -> str:
    """``topic("vega", "node-0001", "batch")`` -> ``"vega/node-0001/batch"``."""
    if kind not in KINDS:
        raise ProtocolError("bad_format", f"topic kind {kind!r} is not one of {', '.join(KINDS)}")
    return f"{validate_prefix(prefix)}/{validate_device_id(device_id)}/{kind}"


def topic_filter(prefix: str, kind: str) -> str:
    """The subscription filter for one kind across all devices: ``vega/+/telemetry``."""
    if kind not in KINDS:
        raise ProtocolError("bad_format", f"topic kind {kind!r} is not one of {', '.join(KINDS)}")
    return f"{validate_prefix(prefix)}/+/{kind}"


def parse_topic(prefix: str, value: str) -> tuple[str, str]:
    """Split ``{prefix}/{device_id}/{kind}`` into ``(device_id, kind)``."""
    head = validate_prefix(prefix) + "/"
    if not value.startswith(head):
        raise ProtocolError("bad_format", f"topic {value!r} does not start with {head!r}")
    device_id, sep, kind = value[len(head) :].partition("/")
    if not sep or kind not in KINDS:
        raise ProtocolError("bad_format", f"topic {value!r} is not {head}{{device}}/{{kind}}")
    return validate_device_id(device_id), kind


def gateway_topic(prefix: str, gateway_id: str) -> str:
    """``gateway_topic("vega", "gw-0")`` -> ``"vega/gateway/gw-0/status"``: a gateway's
    retained status and its last will."""
    return f"{validate_prefix(prefix)}/gateway/{validate_device_id(gateway_id)}/status"


def gateway_filter(prefix: str) -> str:
    """The subscription filter for every gateway's status: ``vega/gateway/+/status``."""
    return f"{validate_prefix(prefix)}/gateway/+/status"


def parse_gateway_topic(prefix: str, value: str) -> str:
    """The gateway id of ``{prefix}/gateway/{gateway_id}/status``."""
    head = f"{validate_prefix(prefix)}/gateway/"
    gateway_id, sep, rest = value.removeprefix(head).partition("/")
    if not value.startswith(head) or not sep or rest != "status":
        raise ProtocolError("bad_format", f"topic {value[:200]!r} is not a gateway status")
    return validate_device_id(gateway_id)


def fleet_ids(n: int, prefix: str = FLEET_PREFIX, *, start: int = 0) -> list[str]:
    """``fleet_ids(2)`` -> ``["node-0000", "node-0001"]``; ``start`` is the first index."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"fleet size must be a non-negative int, not {n!r}")
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"fleet start index must be a non-negative int, not {start!r}")
    ids = [f"{prefix}{i:04d}" for i in range(start, start + n)]
    for device_id in ids[:1] + ids[-1:]:
        if not is_device_id(device_id):
            raise ValueError(f"fleet prefix {prefix!r} makes invalid device id {device_id!r}")
    return ids
