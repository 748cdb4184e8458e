"""What receiving bytes over the radio costs a node: one documented per-byte figure.

A node without a radio profile (``--radio none``, the default; a node with one charges the
radio's downlink cost, :mod:`device.energy.node_power`) charges every byte it receives on the
downlink (a pushed head) :data:`DOWNLINK_J_PER_BYTE`, a BLE 1M PHY stand-in
(docs/energy-model.md, "Downlink"): an nRF52832 receiving draws 5.4 mA at 3 V (16.2 mW); at
1 Mbit/s a byte is on air 8 us, and link-layer headers, acknowledgements and connection-event
gaps halve the useful rate, so a byte costs 16.2 mW x 16 us = 0.26 uJ.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DOWNLINK_J_PER_BYTE", "RX_POWER_W", "RX_USEFUL_BIT_RATE_BPS", "downlink_energy_j"]

#: nRF52832 radio in receive (1 Mbit/s BLE): 5.4 mA from a 3 V supply (datasheet, DC/DC on).
RX_POWER_W: Final = 5.4e-3 * 3.0
#: Payload bits per second a BLE 1M PHY link delivers: half its 1 Mbit/s air rate.
RX_USEFUL_BIT_RATE_BPS: Final = 0.5e6
#: Joules to receive one payload byte (~0.26 uJ).
DOWNLINK_J_PER_BYTE: Final = RX_POWER_W * 8 / RX_USEFUL_BIT_RATE_BPS


def downlink_energy_j(size_bytes: int) -> float:
    """What receiving ``size_bytes`` of payload costs (:data:`DOWNLINK_J_PER_BYTE` each)."""
    if size_bytes < 0:
        raise ValueError(f"size_bytes must be >= 0, got {size_bytes}")
    return size_bytes * DOWNLINK_J_PER_BYTE
