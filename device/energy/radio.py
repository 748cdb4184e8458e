"""Radios: what sending and receiving a node's messages costs, and what a radio cannot carry.

A radio is a TOML data file (``device/energy/profiles/radios/``, read by
:mod:`device.energy.radio_profile`) in which every table has its ``source``. Two kinds:

- ``packet`` (BLE, LTE-M, NB-IoT): a message of ``n`` bytes costs
  ``per_message_j + n x per_byte_j`` and takes ``per_message_s + n x per_byte_s``, one line each
  for the uplink and the downlink; the stack splits long messages itself.
- ``lora`` (LoRaWAN class A, EU868): a message's time on air is Semtech's formula (SX1276
  datasheet, "Time on air") for the spreading factor, over the payload plus the 13-byte LoRaWAN
  frame overhead; the transmitter draws ``tx_w`` while on air, each uplink opens the two
  receive windows (``rx_w`` for a few symbols), a downlink is received in RX1 at ``rx_w``. A
  payload over the regional maximum for the spreading factor cannot be sent, and the airtime of a
  sub-band is limited by its duty cycle (EU868: 1 %).

Between messages the radio draws ``idle_w`` (a BLE connection's empty events, an LTE modem in
power-saving mode). :func:`price_traffic` prices a node's traffic per hour and lists what the
radio cannot carry as :class:`RadioProblem` values: it never prices those silently.
``none`` (the default, the paper's case) costs nothing: capture is local, nothing is sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from device.energy.errors import RadioError

#: LoRa spreading factors a LoRaWAN radio can use.
LORA_SFS: tuple[int, ...] = (7, 8, 9, 10, 11, 12)
NONE = "none"
#: A compact JSON telemetry message as docs/protocol.md shows it (387 bytes): the default size.
TELEMETRY_BYTES = 387
#: A compact JSON prediction for one request of two samples as docs/protocol.md shows it.
PREDICTION_BYTES = 262
#: LoRaWAN frame overhead around the application payload: MHDR 1 + FHDR 7 + FPort 1 + MIC 4.
LORAWAN_OVERHEAD_BYTES = 13


@dataclass(frozen=True, slots=True)
class Link:
    """One direction of a packet radio: fixed and per-byte energy and time of one message."""

    per_message_j: float
    per_message_s: float
    per_byte_j: float
    per_byte_s: float

    def energy_j(self, n_bytes: float) -> float:
        return self.per_message_j + n_bytes * self.per_byte_j

    def time_s(self, n_bytes: float) -> float:
        return self.per_message_s + n_bytes * self.per_byte_s


@dataclass(frozen=True, slots=True)
class Lora:
    """A LoRa modulation (spreading factor ``sf`` at ``bandwidth_hz``, coding rate 4/(4+cr))
    and the radio's powers; ``max_payload_bytes`` is the regional maximum application payload
    at this data rate; ``rx_window_symbols`` how long an empty receive window stays open."""

    sf: int
    bandwidth_hz: float
    coding_rate: int
    preamble_symbols: int
    tx_w: float
    rx_w: float
    rx_window_symbols: int
    rx2_sf: int
    max_payload_bytes: int

    def symbol_s(self, sf: int | None = None) -> float:
        return float(2 ** (self.sf if sf is None else sf)) / self.bandwidth_hz

    def time_on_air_s(self, payload_bytes: int, *, uplink: bool = True) -> float:
        """Semtech's time on air of a LoRaWAN frame carrying ``payload_bytes`` of application
        data (explicit header; CRC on uplinks only; low data rate optimisation at SF11/12 and
        125 kHz, as LoRaWAN requires)."""
        sf = self.sf
        phy = payload_bytes + LORAWAN_OVERHEAD_BYTES
        de = 1 if sf >= 11 and self.bandwidth_hz <= 125_000 else 0
        crc = 1 if uplink else 0
        numerator = 8 * phy - 4 * sf + 28 + 16 * crc
        symbols = 8 + max(math.ceil(numerator / (4 * (sf - 2 * de))) * (self.coding_rate + 4), 0)
        return (self.preamble_symbols + 4.25 + symbols) * self.symbol_s()

    def empty_windows_s(self) -> tuple[float, float]:
        """Receive time of the two empty class A windows after an uplink (RX1 at the uplink's
        spreading factor, RX2 at ``rx2_sf``)."""
        n = self.rx_window_symbols
        return n * self.symbol_s(), n * self.symbol_s(self.rx2_sf)


@dataclass(frozen=True, slots=True)
class Radio:
    """A radio: ``kind`` ``none``, ``packet`` (``uplink``/``downlink``) or ``lora`` (``lora``);
    ``idle_w`` drawn between messages; ``duty_cycle`` the largest share of the time it may
    transmit (1: no limit); ``sources`` each table's source."""

    name: str
    description: str
    kind: str
    idle_w: float = 0.0
    duty_cycle: float = 1.0
    uplink: Link | None = None
    downlink: Link | None = None
    lora: Lora | None = None
    sources: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("none", "packet", "lora"):
            raise RadioError(f"{self.name}: kind must be none, packet or lora")
        if self.kind == "packet" and (self.uplink is None or self.downlink is None):
            raise RadioError(f"{self.name}: a packet radio needs [uplink] and [downlink]")
        if self.kind == "lora" and self.lora is None:
            raise RadioError(f"{self.name}: a lora radio needs its modulation")
        if not 0 < self.duty_cycle <= 1:
            raise RadioError(f"{self.name}: duty_cycle must be in (0, 1]")

    @property
    def max_payload_bytes(self) -> int | None:
        """The largest message the radio carries (None: the stack splits any message)."""
        return None if self.lora is None else self.lora.max_payload_bytes

    def send(self, n_bytes: int) -> tuple[float, float, float]:
        """``(energy_j, time_s, airtime_s)`` of one uplink message of ``n_bytes``."""
        if self.kind == "none":
            return 0.0, 0.0, 0.0
        if self.lora is not None:
            lora = self.lora
            air = lora.time_on_air_s(n_bytes)
            rx1, rx2 = lora.empty_windows_s()
            return lora.tx_w * air + lora.rx_w * (rx1 + rx2), air + rx1 + rx2, air
        assert self.uplink is not None
        time = self.uplink.time_s(n_bytes)
        return self.uplink.energy_j(n_bytes), time, time

    def receive(self, n_bytes: int) -> tuple[float, float]:
        """``(energy_j, time_s)`` of receiving one downlink message of ``n_bytes`` (LoRaWAN:
        in RX1 after an uplink, instead of the empty window)."""
        if self.kind == "none" or n_bytes == 0:
            return 0.0, 0.0
        if self.lora is not None:
            air = self.lora.time_on_air_s(n_bytes, uplink=False)
            return self.lora.rx_w * air, air
        assert self.downlink is not None
        return self.downlink.energy_j(n_bytes), self.downlink.time_s(n_bytes)


NO_RADIO = Radio(NONE, "no radio: capture is local, nothing is sent (the paper's case)", "none")


@dataclass(frozen=True, slots=True)
class Traffic:
    """What a node sends and receives: per learning event one telemetry message of
    ``telemetry_bytes`` (and, when batches arrive over the radio, ``batch_bytes`` received);
    ``predictions_per_s`` prediction messages of ``prediction_bytes``; ``downlink_bytes_per_h``
    of other downlinks (desired states, pushed heads) in messages of at most
    ``downlink_message_bytes``."""

    events_per_hour: float
    telemetry_bytes: int = TELEMETRY_BYTES
    predictions_per_s: float = 0.0
    prediction_bytes: int = PREDICTION_BYTES
    batch_bytes: int = 0
    downlink_bytes_per_h: float = 0.0
    downlink_message_bytes: int = 0

    def __post_init__(self) -> None:
        for name in ("events_per_hour", "predictions_per_s", "downlink_bytes_per_h"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise RadioError(f"{name} must be finite and >= 0, got {value!r}")
        for name in ("telemetry_bytes", "prediction_bytes", "batch_bytes"):
            if getattr(self, name) < 0:
                raise RadioError(f"{name} must be >= 0")


@dataclass(frozen=True, slots=True)
class RadioProblem:
    """Something a radio cannot carry: ``code`` ``payload_over_max`` or ``duty_cycle``, and a
    sentence that names the message and the numbers."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class RadioCost:
    """A radio's mean power for some traffic, split by what it is spent on (W), the share of
    the time on air, and what the radio cannot carry (``problems``: then the powers are those
    of the traffic as asked, not of anything the radio can do)."""

    radio: str
    telemetry_w: float
    predictions_w: float
    downlink_w: float
    idle_w: float
    airtime_share: float
    busy_share: float
    problems: tuple[RadioProblem, ...] = ()

    @property
    def power_w(self) -> float:
        return self.telemetry_w + self.predictions_w + self.downlink_w + self.idle_w

    @property
    def carried(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        return {
            "radio": self.radio,
            "power_w": self.power_w,
            "telemetry_w": self.telemetry_w,
            "predictions_w": self.predictions_w,
            "downlink_w": self.downlink_w,
            "idle_w": self.idle_w,
            "airtime_share": self.airtime_share,
            "problems": [{"code": p.code, "message": p.message} for p in self.problems],
        }


def price_traffic(radio: Radio, traffic: Traffic) -> RadioCost:
    """Mean power of ``traffic`` over ``radio``; what it cannot carry is in ``problems``."""
    problems: list[RadioProblem] = []
    limit = radio.max_payload_bytes
    messages = (
        ("telemetry", traffic.telemetry_bytes, traffic.events_per_hour > 0),
        ("prediction", traffic.prediction_bytes, traffic.predictions_per_s > 0),
        ("batch", traffic.batch_bytes, traffic.batch_bytes > 0),
        ("downlink", traffic.downlink_message_bytes, traffic.downlink_bytes_per_h > 0),
    )
    for what, size, used in messages:
        if used and limit is not None and size > limit:
            problems.append(
                RadioProblem(
                    "payload_over_max",
                    f"a {what} message of {size} B is over {radio.name}'s maximum payload of "
                    f"{limit} B",
                )
            )
    per_event_s = traffic.events_per_hour / 3600.0
    tel_j, tel_s, tel_air = radio.send(traffic.telemetry_bytes)
    pred_j, pred_s, pred_air = radio.send(traffic.prediction_bytes)
    batch_j, batch_s = radio.receive(traffic.batch_bytes)
    down_j_per_byte = down_s_per_byte = 0.0
    if traffic.downlink_bytes_per_h > 0:
        size = max(traffic.downlink_message_bytes, 1)
        one_j, one_s = radio.receive(size)
        down_j_per_byte, down_s_per_byte = one_j / size, one_s / size
    down_per_s = traffic.downlink_bytes_per_h / 3600.0
    telemetry_w = tel_j * per_event_s
    predictions_w = pred_j * traffic.predictions_per_s
    downlink_w = batch_j * per_event_s + down_j_per_byte * down_per_s
    airtime = tel_air * per_event_s + pred_air * traffic.predictions_per_s
    busy = (
        (tel_s + batch_s) * per_event_s
        + pred_s * traffic.predictions_per_s
        + down_s_per_byte * down_per_s
    )
    if airtime > radio.duty_cycle:
        problems.append(
            RadioProblem(
                "duty_cycle",
                f"{radio.name} would transmit {airtime:.2%} of the time, over its "
                f"{radio.duty_cycle:.0%} duty-cycle limit (a {traffic.telemetry_bytes} B "
                f"telemetry takes {tel_air:.3g} s on air; {traffic.events_per_hour:g} per hour)",
            )
        )
    idle_w = radio.idle_w * max(0.0, 1.0 - min(busy, 1.0))
    return RadioCost(
        radio.name,
        telemetry_w,
        predictions_w,
        downlink_w,
        idle_w,
        airtime,
        busy,
        tuple(problems),
    )


__all__ = [
    "LORAWAN_OVERHEAD_BYTES",
    "LORA_SFS",
    "NONE",
    "NO_RADIO",
    "PREDICTION_BYTES",
    "TELEMETRY_BYTES",
    "Link",
    "Lora",
    "Radio",
    "RadioCost",
    "RadioProblem",
    "Traffic",
    "price_traffic",
]
