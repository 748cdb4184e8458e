"""Whether a test may use the real Mosquitto broker, decided once for every test."""

from __future__ import annotations

import os
from typing import Final

import pytest

from broker import MosquittoNotFound, find_mosquitto

__all__ = ["REQUIRE_MOSQUITTO", "require_mosquitto"]

#: CI sets VEGA_EMU_REQUIRE_MOSQUITTO=1: a missing binary then fails instead of skipping
REQUIRE_MOSQUITTO: Final = os.environ.get("VEGA_EMU_REQUIRE_MOSQUITTO") == "1"


def require_mosquitto() -> None:
    """Skip without Mosquitto -- unless CI says it must be there, then fail."""
    try:
        find_mosquitto()
        return
    except MosquittoNotFound:
        pass
    if REQUIRE_MOSQUITTO:
        pytest.fail("VEGA_EMU_REQUIRE_MOSQUITTO=1 but the mosquitto binary is missing")
    pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
