"""The end-of-run summary (``vega-emu up --summary-json``) as a type: :class:`RunSummary`.

Written once by ``vega-emu up``, read by ``vega-emu plan --summary`` and by benchmarks; JSON
only at the file edge (``to_json`` / ``from_json``, which names the field that is wrong).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Self

from dataset_stream.errors import ProtocolError


@dataclass(frozen=True, slots=True)
class DeviceSummary:
    """One device at the end of a run; accuracies are ``None`` without an eval set.

    ``prequential_accuracy`` over ``prequential_n`` scored predictions (None before any);
    ``predictions``: prediction messages the monitor counted.
    """

    device: str
    events: int
    accuracy: float | None
    accuracy_first_event: float | None
    accuracy_factory_classes: float | None
    accuracy_new_classes: float | None
    energy_j: float
    lifetime_h: float | None
    soc: float | None
    state: str
    errors: int
    gaps: int = 0
    host_s_mean: float | None = None
    replay: Mapping[str, int] | None = None
    prequential_accuracy: float | None = None
    prequential_n: int = 0
    predictions: int = 0


@dataclass(frozen=True, slots=True)
class StreamSummary:
    """What the stream delivered: batches sent, learned (acked), rejected; devices stalled.

    ``lost``: rejected because the node skipped them in a gap; ``reconnects``, ``outage_s``:
    broker outages the stream rode out; ``late``: events published late because of one;
    ``republished``: batches published again after a reconnect (or a device's return);
    ``invalid``, ``foreign``: messages the stream received and ignored; ``infer_sent``:
    inference requests published; ``duplicates``: batches of ``acked`` answered ``duplicate``
    (learned before); ``unanswered``: batches sent that no answer came for; ``unsent``:
    batches never sent (a device that stopped answering); ``resent``: batches published again
    because no answer came in time; ``skipped``: batches of ``rejected`` a node's energy-aware
    policy did not learn (``energy_policy``: neither learned nor refused); ``deferred``: batches
    a node still held for the sun at the end (answered ``deferred``, not learned yet).
    """

    sent: int
    acked: int
    rejected: int
    wall_s: float
    stalled: tuple[str, ...] = ()
    reconnects: int = 0
    lost: int = 0
    outage_s: float = 0.0
    late: int = 0
    republished: int = 0
    invalid: int = 0
    foreign: int = 0
    infer_sent: int = 0
    duplicates: int = 0
    unanswered: int = 0
    unsent: int = 0
    resent: int = 0
    skipped: int = 0
    deferred: int = 0


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A whole run: every device, the stream, the factory classes and the run's settings."""

    devices: tuple[DeviceSummary, ...]
    stream: StreamSummary
    factory_classes: tuple[int, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)

    def with_config(self, config: Mapping[str, Any]) -> RunSummary:
        return RunSummary(self.devices, self.stream, self.factory_classes, dict(config))

    def to_dict(self) -> dict[str, Any]:
        return {
            "devices": [asdict(d) for d in self.devices],
            "stream": asdict(self.stream) | {"stalled": list(self.stream.stalled)},
            "factory_classes": list(self.factory_classes),
            "config": dict(self.config),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> Self:
        """Parse a summary file; ``ProtocolError("bad_format")`` names what is wrong."""
        try:
            obj = json.loads(text) if isinstance(text, str | bytes) else dict(text)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError("bad_format", f"run summary is not JSON: {exc}") from None
        try:
            devices = tuple(DeviceSummary(**d) for d in obj["devices"])
            stream = dict(obj["stream"])
            stream["stalled"] = tuple(stream.get("stalled", ()))
            return cls(
                devices=devices,
                stream=StreamSummary(**stream),
                factory_classes=tuple(int(c) for c in obj.get("factory_classes", ())),
                config=dict(obj.get("config", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError("bad_format", f"run summary: missing or bad field: {exc}") from None


__all__ = ["DeviceSummary", "RunSummary", "StreamSummary"]
