"""What a running node adds to its compute: a radio, a battery chemistry and its temperature.

``vega-emu energy`` and ``plan`` price these over a mean rate (:mod:`device.energy.budget`); a
node charges them as it goes, with :class:`NodePower`:

- the battery it starts with holds the chemistry's usable energy (:meth:`NodePower.as_built`:
  the profile's capacity scaled by ``usable_fraction x nominal_v / voltage_v``, so that its
  ``battery_j`` is :meth:`~device.energy.chemistry.Chemistry.usable_j`);
- its sleep power gains the radio's ``idle_w`` and the cell's self-discharge at the constant
  temperature (``r(T) x E_usable``), so every second slept pays both;
- each telemetry and each prediction it publishes costs ``radio.send(bytes)``, each downlink it
  receives ``radio.receive(bytes)`` (:meth:`NodePower.send_j`, :meth:`NodePower.downlink_j`;
  without a radio a downlink keeps the per-byte stand-in of :mod:`device.energy.downlink`);
- what the radio cannot carry at the node's rate (:meth:`NodePower.problems`) is reported,
  never priced silently.

The default (no radio, the ideal battery) changes nothing: :meth:`NodePower.as_built` returns the
profile itself and the node prices no message, so its numbers are the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from device.energy.chemistry import IDEAL, Chemistry, Temperature, load_chemistry
from device.energy.chemistry import mean_self_discharge_w as _self_discharge_w
from device.energy.downlink import downlink_energy_j
from device.energy.profile import Profile
from device.energy.radio import NO_RADIO, TELEMETRY_BYTES, Radio, RadioProblem, Traffic
from device.energy.radio import price_traffic as _price_traffic
from device.energy.radio_profile import load_radio

__all__ = ["NodePower", "load_node_power"]


@dataclass(frozen=True, slots=True)
class NodePower:
    """A node's radio and cell: ``chemistry`` None is the paper's ideal battery."""

    radio: Radio = NO_RADIO
    chemistry: Chemistry | None = None
    temperature_c: float = 20.0

    @property
    def priced(self) -> bool:
        """Whether the node prices its messages (a radio other than ``none``)."""
        return self.radio.kind != "none"

    def usable_j(self, profile: Profile) -> float:
        """The energy a full cell of ``profile``'s capacity delivers."""
        if self.chemistry is None:
            return profile.battery_j
        return self.chemistry.usable_j(profile.capacity_mah)

    def self_discharge_w(self, profile: Profile) -> float:
        """Power the cell loses on the shelf at the node's temperature (0 for the ideal one)."""
        if self.chemistry is None:
            return 0.0
        temperature = Temperature(constant_c=self.temperature_c)
        return _self_discharge_w(self.chemistry, self.usable_j(profile), temperature)

    def as_built(self, profile: Profile) -> Profile:
        """``profile`` with the cell's usable capacity and a sleep power that includes the
        radio's idle draw and the self-discharge; ``profile`` itself by default."""
        if self.chemistry is None and self.radio.idle_w == 0:
            return profile
        sleep_w = profile.sleep_w + self.radio.idle_w + self.self_discharge_w(profile)
        capacity_mah = self.usable_j(profile) / (3.6 * profile.voltage_v)
        return replace(profile, sleep_w=sleep_w, capacity_mah=capacity_mah)

    def send_j(self, n_bytes: int) -> float:
        """Joules to send one message of ``n_bytes`` (0 without a radio)."""
        return self.radio.send(n_bytes)[0]

    def receive_j(self, n_bytes: int) -> float:
        """Joules to receive one message of ``n_bytes`` (0 without a radio)."""
        return self.radio.receive(n_bytes)[0]

    def downlink_j(self, n_bytes: int) -> float:
        """Joules to receive a downlink of ``n_bytes`` (a pushed head): the radio's cost, or
        without a radio the documented per-byte stand-in
        (:data:`~device.energy.downlink.DOWNLINK_J_PER_BYTE`), as before radios existed."""
        if not self.priced:
            return downlink_energy_j(n_bytes)
        return self.receive_j(n_bytes)

    def problems(
        self, events_per_hour: float, telemetry_bytes: int = TELEMETRY_BYTES
    ) -> tuple[RadioProblem, ...]:
        """What the radio cannot carry: a telemetry of ``telemetry_bytes`` per event at
        ``events_per_hour`` (a payload over the maximum, a duty cycle over the limit)."""
        if not self.priced:
            return ()
        traffic = Traffic(events_per_hour=events_per_hour, telemetry_bytes=telemetry_bytes)
        return _price_traffic(self.radio, traffic).problems


def load_node_power(
    radio: str = "none", battery: str = IDEAL, temperature_c: float = 20.0
) -> NodePower:
    """:class:`NodePower` from names or files (a :class:`~device.energy.errors.RadioError` or
    :class:`~device.energy.errors.ChemistryError` names what is wrong)."""
    chemistry = None if battery == IDEAL else load_chemistry(battery)
    return NodePower(load_radio(radio), chemistry, temperature_c)
