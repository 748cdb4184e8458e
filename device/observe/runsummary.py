"""A node's part of a run summary, from what the fleet monitor saw of it."""

from __future__ import annotations

from collections.abc import Collection

from dataset_stream.protocol import DeviceSummary
from device.observe.monitor import DeviceRecord


def device_summary(record: DeviceRecord, factory_classes: Collection[int]) -> DeviceSummary:
    """Final and first accuracy, accuracy on the factory and on the new classes, energy, battery.

    ``factory_classes``: the classes the model was trained on before deployment; the others are
    the classes the device learned on its own.
    """
    last, first = record.telemetry, record.first
    by_class = (last.accuracy_by_class if last is not None else None) or {}
    seen_factory = [v for k, v in by_class.items() if k in factory_classes]
    seen_new = [v for k, v in by_class.items() if k not in factory_classes]
    return DeviceSummary(
        device=record.device,
        events=record.events,
        accuracy=last.accuracy if last is not None else None,
        accuracy_first_event=first.accuracy if first is not None else None,
        accuracy_factory_classes=_mean(seen_factory),
        accuracy_new_classes=_mean(seen_new),
        energy_j=record.energy_j,
        lifetime_h=last.lifetime_h if last is not None else None,
        soc=last.battery.soc if last is not None else None,
        state=record.state,
        errors=record.errors,
        gaps=last.gaps if last is not None else 0,
        host_s_mean=record.host_s / record.events if record.events else None,
        replay=last.replay.to_dict() if last is not None else None,
        prequential_accuracy=last.prequential_accuracy if last is not None else None,
        prequential_n=(last.prequential_n or 0) if last is not None else 0,
        predictions=record.predictions,
    )


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


__all__ = ["device_summary"]
