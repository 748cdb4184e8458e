"""A node's state is private: directory 0700, every file 0600, whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from dataset_stream import Scenario
from dataset_stream.protocol import Batch, decode_eval, encode_eval
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.node.engine import NodeEngine
from device.node.settings import NodeSettings

DEVICE = "node-0012"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_state_files_are_0600_in_a_0700_directory(
    umask_022: None, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    state = tmp_path / "deep" / "state"
    engine = NodeEngine(
        NodeSettings(DEVICE, state), default_bundle, FrozenStage.shared(default_bundle)
    )
    try:
        ex, ey = digits_nic.eval_set
        payload = encode_eval(ex, ey, source="t")
        eval_set = decode_eval(
            payload,
            sample_shape=default_bundle.input_shape,
            dtype=default_bundle.input_dtype,
            num_classes=default_bundle.num_classes,
        )
        engine.set_eval(eval_set, payload)
        event = digits_nic.events(DEVICE)[0]
        engine.apply(Batch(event.x, event.y, seq=1, t=1.0, source="t"))
        files = sorted(state.iterdir())
        names = {p.name for p in files}
        assert {f"{DEVICE}.db", f"{DEVICE}.db-wal", f"{DEVICE}.db-shm"} <= names
        assert f"{DEVICE}.eval.safetensors" in names
        assert mode(state) == 0o700
        assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    finally:
        engine.close()


def test_an_old_world_readable_state_file_is_tightened(
    umask_022: None, default_bundle: ModelBundle, tmp_path: Path
) -> None:
    first = NodeEngine(
        NodeSettings(DEVICE, tmp_path), default_bundle, FrozenStage.shared(default_bundle)
    )
    first.close()
    for path in tmp_path.iterdir():
        os.chmod(path, 0o644)  # as an earlier version left them
    again = NodeEngine(
        NodeSettings(DEVICE, tmp_path), default_bundle, FrozenStage.shared(default_bundle)
    )
    try:
        assert {p.name: mode(p) for p in tmp_path.iterdir()} == {
            p.name: 0o600 for p in tmp_path.iterdir()
        }
    finally:
        again.close()
