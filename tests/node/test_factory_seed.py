"""A new node's replay memory starts from the bundle's factory replays (real bundle, real
onnxruntime, real SQLite, the node's own engine)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from dataset_stream import Scenario
from dataset_stream.protocol import Batch, EvalSet
from device.learning.nn import SGDConfig
from device.learning.replay import dequantize
from device.model.bundle import MANIFEST, ModelBundle
from device.model.frozen import FrozenStage
from device.model.replays import REPLAYS
from device.node.engine import NodeEngine
from device.node.settings import NodeSettings, ReplaySettings

T0 = 1_764_000_000.0


def _engine(
    bundle: ModelBundle, state: Path, device: str = "node-0000", **replay: int
) -> NodeEngine:
    settings = NodeSettings(
        device,
        state,
        replay=ReplaySettings(**replay),
        sgd=SGDConfig(learning_rate=bundle.recommended_learning_rate),
    )
    return NodeEngine(settings, bundle, FrozenStage.shared(bundle))


def test_a_new_memory_starts_from_the_factory_replays_and_a_restart_keeps_it(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    factory = default_bundle.factory_replays
    assert factory is not None
    engine = _engine(default_bundle, tmp_path)
    memory = engine.memory
    assert memory.size == len(factory) and memory.bits == 8 and memory.updates == 1
    assert memory.class_counts() == factory.class_counts()
    np.testing.assert_array_equal(
        memory.contents()[0].reshape(len(factory), -1), dequantize(factory.lrs)
    )
    event = digits_nic.events("node-0000")[0]
    engine.apply(Batch(event.x, event.y, seq=1, t=T0, source="digits"))
    after = engine.memory.contents()
    # the paper's policy from the first event on: the factory batch was AR1* event 0
    assert engine.memory.updates == 2 and engine.memory.size == len(factory) + len(event)
    engine.close()
    again = _engine(default_bundle, tmp_path)  # a restart: the same memory, not seeded again
    assert again.memory.updates == 2
    np.testing.assert_array_equal(again.memory.contents()[0], after[0])
    np.testing.assert_array_equal(again.memory.contents()[1], after[1])
    again.close()


@pytest.mark.parametrize(("lr_size", "bits"), [(100, 6), (1500, 32), (0, 8)])
def test_a_memory_of_other_size_or_bits_gets_a_balanced_requantized_subset(
    default_bundle: ModelBundle, tmp_path: Path, lr_size: int, bits: int
) -> None:
    factory = default_bundle.factory_replays
    assert factory is not None
    engine = _engine(default_bundle, tmp_path, lr_size=lr_size, bits=bits)
    memory = engine.memory
    assert memory.size == min(lr_size, len(factory)) and memory.bits == bits
    counts = list(memory.class_counts().values())
    if lr_size < len(factory):
        assert not counts or max(counts) - min(counts) <= 1
    x, y = memory.contents()
    stored = dequantize(factory.lrs)
    span = stored.max(axis=1) - stored.min(axis=1)
    for row, label in zip(x.reshape(len(x), memory.config.dim), y, strict=True):  # factory LRs
        match = int(np.argmin(np.abs(stored - row).max(axis=1)))
        step = 0.0 if bits == 32 else span[match] / (2**bits - 1)
        assert np.abs(stored[match] - row).max() <= step / 2 + 1e-5
        assert factory.labels[match] == label
    engine.close()


def test_the_first_event_keeps_the_factory_classes(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    """Over a fleet of 8 devices (each its own first event), the mean accuracy on the factory
    classes after the first event stays within 10 points of the factory model's."""
    classes = default_bundle.meta["factory_classes"]
    ex, ey = digits_nic.eval_set
    before, after = [], []
    for d in range(8):
        device = f"node-{d:04d}"
        engine = _engine(default_bundle, tmp_path / device, device)
        engine.set_eval(EvalSet(ex, ey, "digits"))
        first = engine.evaluate()
        event = digits_nic.events(device)[0]
        engine.apply(Batch(event.x, event.y, seq=1, t=T0, source="digits"))
        then = engine.evaluate()
        assert first is not None and then is not None
        before.append(np.mean([first.per_class[c] for c in classes]))
        after.append(np.mean([then.per_class[c] for c in classes]))
        engine.close()
    assert np.mean(after) >= np.mean(before) - 0.10, (before, after)


def test_a_bundle_without_factory_replays_starts_empty_and_says_so_once(
    default_bundle: ModelBundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copytree(default_bundle.path, tmp_path / "old")
    (tmp_path / "old" / REPLAYS).unlink()
    text = (tmp_path / "old" / MANIFEST).read_text()
    (tmp_path / "old" / MANIFEST).write_text(text.split("\n[replays]\n")[0] + "\n")
    old = ModelBundle.load(tmp_path / "old")
    caplog.set_level(logging.WARNING)
    engines = [_engine(old, tmp_path / "state", f"node-{d:04d}") for d in range(2)]
    assert [e.memory.size for e in engines] == [0, 0]
    assert [e.memory.updates for e in engines] == [0, 0]
    notes = [r for r in caplog.records if "carries no factory replays" in r.getMessage()]
    assert len(notes) == 1
    for e in engines:
        e.close()
