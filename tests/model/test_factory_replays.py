"""The factory replays a bundle carries: written by build-default, listed, checked, optional."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from dataset_stream.scenarios import factory_split
from device.learning.replay import dequantize
from device.model.bundle import MANIFEST, ModelBundle
from device.model.errors import BundleError
from device.model.frozen import FrozenStage
from device.model.info import bundle_report
from device.model.replays import FACTORY_LR_BITS, FACTORY_LR_SIZE, REPLAYS


def test_the_default_bundle_carries_class_balanced_factory_latents(
    default_bundle: ModelBundle,
) -> None:
    replays = default_bundle.factory_replays
    assert replays is not None
    x, y = factory_split("digits", "nic", 0)
    # every factory sample fits the default memory, so all are there, at the default bits
    assert len(replays) == min(len(y), FACTORY_LR_SIZE) and replays.bits == FACTORY_LR_BITS
    assert replays.class_counts() == {int(c): int((y == c).sum()) for c in np.unique(y)}
    assert sorted(replays.class_counts()) == default_bundle.meta["factory_classes"]
    # they are the bundle's own INT8 latents of the factory data, quantized per LR
    latents = FrozenStage.shared(default_bundle).run(x).reshape(len(x), -1)
    stored = dequantize(replays.lrs)
    span = latents.max(axis=1) - latents.min(axis=1)
    for row, label in zip(stored[:50], replays.labels[:50], strict=True):
        error = np.abs(latents - row).max(axis=1)
        match = int(np.argmin(error))
        assert error[match] <= span[match] / 255 / 2 + 1e-5 and y[match] == label
    table = tomllib.loads((default_bundle.path / MANIFEST).read_text())["replays"]
    assert table["file"] == REPLAYS and table["count"] == len(replays)
    assert table["bits"] == FACTORY_LR_BITS and table["lr_size"] == FACTORY_LR_SIZE
    info = bundle_report(default_bundle)["factory_replays"]
    assert info["count"] == len(replays) and info["per_class"] == {
        str(c): n for c, n in replays.class_counts().items()
    }


def _copy(bundle: ModelBundle, to: Path) -> str:
    shutil.copytree(bundle.path, to)
    return (to / MANIFEST).read_text()


def test_a_bundle_without_factory_replays_still_loads(
    default_bundle: ModelBundle, tmp_path: Path
) -> None:
    text = _copy(default_bundle, tmp_path / "old")
    (tmp_path / "old" / REPLAYS).unlink()
    (tmp_path / "old" / MANIFEST).write_text(text.split("\n[replays]\n")[0] + "\n")
    old = ModelBundle.load(tmp_path / "old")
    assert old.factory_replays is None
    assert bundle_report(old)["factory_replays"] is None


def test_listed_factory_replays_are_checked(default_bundle: ModelBundle, tmp_path: Path) -> None:
    text = _copy(default_bundle, tmp_path / "b")
    (tmp_path / "b" / REPLAYS).unlink()
    with pytest.raises(BundleError, match=f"missing file {REPLAYS}"):
        ModelBundle.load(tmp_path / "b")
    shutil.copy(default_bundle.path / REPLAYS, tmp_path / "b" / REPLAYS)
    count = len(default_bundle.factory_replays or ())
    (tmp_path / "b" / MANIFEST).write_text(text.replace(f"count = {count}\n", "count = 7\n"))
    with pytest.raises(BundleError, match="count = 7"):
        ModelBundle.load(tmp_path / "b")
    (tmp_path / "b" / MANIFEST).write_text(text)
    labels = {"labels": np.zeros(3, np.int64)}
    save_file(labels, str(tmp_path / "b" / REPLAYS), metadata={"bits": "8"})
    with pytest.raises(BundleError, match="missing tensors"):
        ModelBundle.load(tmp_path / "b")
