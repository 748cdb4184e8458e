"""Shared fixtures: real brokers on random loopback ports."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import settings

from broker import EmbeddedBroker, Mosquitto, MosquittoConfig
from dataset_stream import Scenario
from device.model.bundle import ModelBundle
from tests.support.mosquitto import require_mosquitto


@pytest.fixture
async def embedded_broker() -> AsyncIterator[EmbeddedBroker]:
    async with EmbeddedBroker(port=0) as b:
        yield b


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    require_mosquitto()
    async with Mosquitto(MosquittoConfig(data_dir=tmp_path / "mosquitto")) as m:
        yield m


@pytest.fixture(params=["embedded", "mosquitto"])
async def any_broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[object]:
    """Each test using this runs once per broker engine; yields an object with ``.url``."""
    if request.param == "embedded":
        async with EmbeddedBroker(port=0) as b:
            yield b
    else:
        require_mosquitto()
        async with Mosquitto(MosquittoConfig(data_dir=tmp_path / "mosquitto")) as m:
            yield m


@pytest.fixture(scope="session")
def default_bundle(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    """The real default model (cached in $VEGA_EMU_CACHE when set, else built once per run)."""
    from dataset_stream.scenarios import factory_split
    from device.model.default import default_bundle_path, default_cache_dir

    cache = default_cache_dir() if os.environ.get("VEGA_EMU_CACHE") else None
    target = cache or tmp_path_factory.mktemp("models") / "default"
    return ModelBundle.load(default_bundle_path(target, factory=factory_split), warn_old_keys=False)


@pytest.fixture(scope="session")
def digits_nic() -> Scenario:
    from dataset_stream import build_scenario

    return build_scenario("digits", "nic", seed=0)


# Hypothesis profiles, picked by VEGA_EMU_HYPOTHESIS: "ci" (the default; hypothesis's own
# defaults) or "long", 10,000 examples for every property that does not pin its count, e.g.
# VEGA_EMU_HYPOTHESIS=long pytest tests/node/test_hostile_input.py (see that module's docstring).
settings.register_profile("ci", max_examples=100)
settings.register_profile("long", max_examples=10_000, print_blob=True)
settings.load_profile(os.environ.get("VEGA_EMU_HYPOTHESIS", "ci"))
