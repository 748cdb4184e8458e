"""Radio profiles: TOML data files in which every table of numbers has its ``source``.

``device/energy/profiles/radios/`` ships ``ble``, ``lorawan`` (one file for every spreading
factor: ``lorawan-sf7`` .. ``lorawan-sf12``), ``ltem`` and ``nbiot``; ``none`` is built in.
A table without a source is refused, naming the file and the table (a
:class:`~device.energy.errors.RadioError`). The numbers' meaning: :mod:`device.energy.radio`.
"""

from __future__ import annotations

from pathlib import Path

from device.energy.errors import RadioError
from device.energy.radio import LORA_SFS, NO_RADIO, NONE, Link, Lora, Radio
from device.energy.sourced import SourcedTable, read_toml

#: Shipped radios: ``none`` is built in; ``lorawan-sf7`` .. ``lorawan-sf12`` read lorawan.toml.
RADIOS: tuple[str, ...] = ("none", "ble", *(f"lorawan-sf{sf}" for sf in LORA_SFS), "ltem", "nbiot")
_FILES: tuple[str, ...] = ("ble", "lorawan", "ltem", "nbiot")


def _link(table: SourcedTable) -> Link:
    link = Link(
        per_message_j=table.number("per_message_j"),
        per_message_s=table.number("per_message_s"),
        per_byte_j=table.number("per_byte_j"),
        per_byte_s=table.number("per_byte_s"),
    )
    table.source()
    table.done()
    return link


def parse_radio(data: dict[str, object], label: str, *, sf: int | None = None) -> Radio:
    """A :class:`Radio` from parsed TOML (``label`` names the file in errors); a ``lora`` file
    needs the spreading factor ``sf``, whose table ``[sf.N]`` gives its maximum payload."""
    top = SourcedTable(label, "", data, RadioError)
    kind = top.text("kind")
    idle = top.sub("idle")
    idle_w = idle.number("idle_w")
    sources = [(idle.section, idle.source())]
    idle.done()
    limits = top.sub("limits")
    duty = limits.number("duty_cycle", strict=True, maximum=1.0)
    sources.append((limits.section, limits.source()))
    limits.done()
    uplink = downlink = None
    lora = None
    if kind == "packet":
        up, down = top.sub("uplink"), top.sub("downlink")
        sources += [(up.section, up.source()), (down.section, down.source())]
        uplink, downlink = _link(up), _link(down)
    elif kind == "lora":
        modem = top.sub("modulation")
        power = top.sub("power")
        sf_tables = top.sub("sf")
        sources += [(t.section, t.source()) for t in (modem, power, sf_tables)]
        chosen = LORA_SFS[0] if sf is None else sf
        payload = sf_tables.sub(str(chosen)) if sf_tables.has(str(chosen)) else None
        if payload is None:
            raise RadioError(f"{label}: [sf] has no table for SF{chosen}")
        sf_tables.seen.update(str(s) for s in LORA_SFS)
        max_payload = payload.number("max_payload_bytes", strict=True)
        payload.done()
        lora = Lora(
            sf=chosen,
            bandwidth_hz=modem.number("bandwidth_hz", strict=True),
            coding_rate=int(modem.number("coding_rate", minimum=1)),
            preamble_symbols=int(modem.number("preamble_symbols")),
            tx_w=power.number("tx_w", strict=True),
            rx_w=power.number("rx_w", strict=True),
            rx_window_symbols=int(modem.number("rx_window_symbols")),
            rx2_sf=int(modem.number("rx2_sf", minimum=7)),
            max_payload_bytes=int(max_payload),
        )
        modem.done()
        power.done()
        sf_tables.done()
    else:
        raise top.fail("kind", f"must be packet or lora, got {kind!r}")
    name = top.text("name")
    radio = Radio(
        name=name if sf is None else f"{name}-sf{sf}",
        description=top.text("description", default=""),
        kind=kind,
        idle_w=idle_w,
        duty_cycle=duty,
        uplink=uplink,
        downlink=downlink,
        lora=lora,
        sources=tuple(sources),
    )
    top.done()
    return radio


def load_radio(name_or_path: str | Path) -> Radio:
    """A shipped radio (:data:`RADIOS`; ``none`` the default) or a radio TOML file (a LoRaWAN
    file as ``PATH:sfN``)."""
    key = str(name_or_path)
    if key == NONE:
        return NO_RADIO
    sf: int | None = None
    if key.startswith("lorawan-sf"):
        try:
            sf = int(key.removeprefix("lorawan-sf"))
        except ValueError:
            sf = None
        if sf not in LORA_SFS:
            raise RadioError(f"unknown radio {key!r}: LoRaWAN is lorawan-sf7 .. lorawan-sf12")
        key = "lorawan"
    elif key == "lorawan":
        raise RadioError("say the spreading factor: lorawan-sf7 .. lorawan-sf12")
    elif ":sf" in key:
        key, _, number = key.rpartition(":sf")
        if not number.isdigit() or int(number) not in LORA_SFS:
            raise RadioError(f"{name_or_path}: the spreading factor must be one of {LORA_SFS}")
        sf = int(number)
    elif key not in _FILES and not Path(key).is_file():
        raise RadioError(f"unknown radio {key!r}: not one of {', '.join(RADIOS)} and not a file")
    label, data = read_toml(key, "device.energy.profiles.radios", _FILES, RadioError, "radio")
    return parse_radio(data, label, sf=sf)


__all__ = ["RADIOS", "load_radio", "parse_radio"]
