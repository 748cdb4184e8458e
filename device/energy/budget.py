"""A node's whole power budget: compute (events, inferences, sleep), radio and self-discharge.

:func:`budget` adds to a :class:`~device.energy.lifetime.Duty` (the SoC's mean power) what the
radio spends on the node's traffic (:mod:`device.energy.radio`) and what the cell loses to
self-discharge at its temperature (:mod:`device.energy.chemistry`), on the usable energy of the
chemistry's cell::

    P = P_duty + P_radio + P_self,    lifetime_h = E_usable / P / 3600

With no radio and the ideal battery it is the duty's own lifetime, to the last digit.
"""

from __future__ import annotations

from dataclasses import dataclass

from device.energy.chemistry import Chemistry, Temperature, mean_self_discharge_w
from device.energy.lifetime import Duty, lifetime_hours
from device.energy.profile import Profile
from device.energy.radio import Radio, RadioCost, Traffic, price_traffic


@dataclass(frozen=True, slots=True)
class Budget:
    """Mean powers (W) of a node and the lifetime of its cell (h; inf when nothing is spent)."""

    compute_w: float
    radio: RadioCost
    self_discharge_w: float
    usable_j: float
    chemistry: Chemistry
    temperature: Temperature

    @property
    def power_w(self) -> float:
        return self.compute_w + self.radio.power_w + self.self_discharge_w

    @property
    def lifetime_h(self) -> float:
        return lifetime_hours(self.usable_j, self.power_w)

    def share(self, watts: float) -> float:
        """``watts`` as a share of the mean power (0 when nothing is spent)."""
        return watts / self.power_w if self.power_w > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        lifetime = self.lifetime_h
        return {
            "power_w": self.power_w,
            "compute_w": self.compute_w,
            "radio": self.radio.as_dict(),
            "radio_share": self.share(self.radio.power_w),
            "self_discharge_w": self.self_discharge_w,
            "self_discharge_share": self.share(self.self_discharge_w),
            "battery": {
                "chemistry": self.chemistry.name,
                "usable_j": self.usable_j,
                "temperature": self.temperature.describe(),
            },
            "lifetime_h": lifetime if lifetime != float("inf") else None,
        }


def budget(
    duty: Duty,
    profile: Profile,
    *,
    radio: Radio,
    chemistry: Chemistry,
    temperature: Temperature,
    traffic: Traffic | None = None,
) -> Budget:
    """The budget of ``duty`` on ``profile``'s capacity in a cell of ``chemistry`` at
    ``temperature``, sending ``traffic`` (default: one telemetry per event of the duty, one
    prediction per inference) over ``radio``."""
    if traffic is None:
        traffic = Traffic(duty.events_per_hour, predictions_per_s=duty.inference_per_s)
    usable = chemistry.usable_j(profile.capacity_mah)
    return Budget(
        compute_w=duty.power_w,
        radio=price_traffic(radio, traffic),
        self_discharge_w=mean_self_discharge_w(chemistry, usable, temperature),
        usable_j=usable,
        chemistry=chemistry,
        temperature=temperature,
    )


__all__ = ["Budget", "budget"]
