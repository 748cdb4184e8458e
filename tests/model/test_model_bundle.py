"""Default bundle: INT8 vs FP32, features for unseen classes, bundle validation, cache."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from sklearn.datasets import load_digits

from device.learning import nn
from device.model.bundle import DEFAULT_LEARNING_RATE, MANIFEST, ModelBundle
from device.model.default import (
    RECOMMENDED_LEARNING_RATE,
    build_default,
    default_bundle_path,
    default_cache_dir,
    load_default,
)
from device.model.errors import BundleError, ModelError, ModelInputError
from device.model.export import FROZEN_FP32, run_onnx
from device.model.frozen import FrozenStage
from device.model.info import bundle_report, lr_bytes
from device.model.onnx_read import load_onnx
from device.model.quantize import COMPUTE_OPS, quantized_ops
from device.model.train import FitConfig, fit

FACTORY_CLASSES = (0, 8, 9)


def digits32() -> tuple[np.ndarray, np.ndarray]:
    """sklearn digits as uint8 [N, 1, 32, 32] (24x24 centred, light noise), shuffled."""
    bunch = load_digits()
    inner = ndimage.zoom(bunch.images.astype(np.float32) * (255 / 16), (1, 3, 3), order=1)
    x = np.pad(np.clip(inner, 0, 255), ((0, 0), (4, 4), (4, 4)))
    rng = np.random.default_rng(0)
    x = np.clip(np.rint(x + rng.normal(0, 6, x.shape)), 0, 255).astype(np.uint8)[:, None]
    perm = rng.permutation(len(x))
    return x[perm], bunch.target.astype(np.int64)[perm]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return digits32()


@pytest.fixture(scope="module")
def factory(data: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    x, y = data
    keep = np.isin(y[:1200], FACTORY_CLASSES)
    return x[:1200][keep], y[:1200][keep]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, factory: tuple) -> ModelBundle:
    out = tmp_path_factory.mktemp("default") / "bundle"
    return build_default(*factory, out, fit_config=FitConfig(epochs=12))


def test_bundle_files_and_quantized_operators(bundle: ModelBundle) -> None:
    assert bundle.input_shape == (1, 32, 32) and bundle.input_dtype == np.uint8
    assert bundle.lr_shape == (32, 4, 4) and bundle.num_classes == 10
    counts = quantized_ops(load_onnx(bundle.frozen_path))
    assert COMPUTE_OPS & counts.keys(), counts
    kinds = [la.kind for la in bundle.layers() if la.adaptive]
    assert {"depthwise", "pointwise", "pool", "linear"} <= set(kinds)
    assert bundle_report(bundle)["lr"]["bytes"]["7"] == lr_bytes(512, 7)


def test_int8_close_to_fp32_on_held_out(bundle: ModelBundle, data: tuple) -> None:
    x = data[0][1200:]
    int8 = FrozenStage.shared(bundle).run(x)
    fp32 = run_onnx(bundle.path / FROZEN_FP32, bundle.input.normalize(x))
    a, b = int8.reshape(len(x), -1), fp32.reshape(len(x), -1)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    assert cos.mean() > 0.99 and np.median(cos) > 0.99


def test_frozen_features_serve_all_classes(bundle: ModelBundle, data: tuple) -> None:
    """A head trained on INT8 latents of all ten classes (7 never seen by the frozen stage)."""
    x, y = data
    stage = FrozenStage.shared(bundle)
    z_train, z_test = stage.run(x[:1200]), stage.run(x[1200:])
    rng = np.random.default_rng(0)
    head = nn.build_sequential(bundle.adaptive_specs, rng)
    fit(head, z_train, y[:1200], FitConfig(epochs=15, sgd=nn.SGDConfig(0.05, 0.9, 5e-4)), rng)
    pred = head.predict(z_test)
    unseen = ~np.isin(y[1200:], FACTORY_CLASSES)
    assert (pred == y[1200:]).mean() > 0.85
    assert (pred[unseen] == y[1200:][unseen]).mean() > 0.8


def test_head_roundtrip_and_shared_session(bundle: ModelBundle) -> None:
    head = bundle.build_head()
    assert set(head.params()) == set(bundle.weights)
    again = ModelBundle.load(bundle.path)
    assert FrozenStage.shared(again) is FrozenStage.shared(bundle)
    stage = FrozenStage.shared(bundle)
    with pytest.raises(ModelInputError, match="dtype"):
        stage.run(np.zeros((2, 1, 32, 32), np.float32))
    with pytest.raises(ModelInputError, match="shape"):
        stage.run(np.zeros((2, 32, 32), np.uint8))
    x = np.random.default_rng(0).integers(0, 255, (8, 1, 32, 32), dtype=np.uint8)
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(stage.run(x))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, results[0]) for r in results)


def test_bundle_validation_names_the_problem(bundle: ModelBundle, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(bundle.path, bad)
    (bad / "adaptive.safetensors").unlink()
    with pytest.raises(BundleError, match=r"adaptive\.safetensors"):
        ModelBundle.load(bad)
    shutil.copy(bundle.path / "adaptive.safetensors", bad)
    text = (bad / "model.toml").read_text()
    (bad / "model.toml").write_text(text.replace("count = 10", "count = 7"))
    with pytest.raises(BundleError, match=r"\(7,\)"):
        ModelBundle.load(bad)
    (bad / "model.toml").write_text(text.replace('tensor = "lr"', 'tensorx = "lr"'))
    with pytest.raises(BundleError, match=r"lr\.'tensor'"):
        ModelBundle.load(bad)
    with pytest.raises(BundleError, match="not a directory"):
        ModelBundle.load(tmp_path / "nope")


def test_learning_rate_is_written_learning_rate_and_old_bundles_still_load(
    bundle: ModelBundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = (bundle.path / MANIFEST).read_text()
    assert f"[train]\nlearning_rate = {RECOMMENDED_LEARNING_RATE}\n" in text  # what we write
    assert bundle.recommended_learning_rate == RECOMMENDED_LEARNING_RATE
    old = tmp_path / "old"
    shutil.copytree(bundle.path, old)
    (old / MANIFEST).write_text(
        text.replace(f"learning_rate = {RECOMMENDED_LEARNING_RATE}", "lr = 0.07")
    )
    assert ModelBundle.load(old).recommended_learning_rate == 0.07  # the old spelling
    assert "[train] lr is the deprecated spelling of [train] learning_rate" in caplog.text
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    caplog.clear()
    assert ModelBundle.load(old, warn_old_keys=False).recommended_learning_rate == 0.07
    assert not caplog.records
    both = text.replace(
        f"learning_rate = {RECOMMENDED_LEARNING_RATE}",
        f"learning_rate = {RECOMMENDED_LEARNING_RATE}\nlr = 0.07",
    )
    (old / MANIFEST).write_text(both)
    with pytest.raises(BundleError, match="both learning_rate and its old spelling lr"):
        ModelBundle.load(old)
    (old / MANIFEST).write_text(
        text.replace(f"[train]\nlearning_rate = {RECOMMENDED_LEARNING_RATE}\n", "")
    )
    assert ModelBundle.load(old).recommended_learning_rate == DEFAULT_LEARNING_RATE


def test_a_default_model_cached_with_the_old_spelling_loads_quietly(
    bundle: ModelBundle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Earlier versions cached the default model with ``[train] lr``; its bytes are part of
    the model id of every state file made with it, so it is read as it is, without a notice."""
    monkeypatch.setenv("VEGA_EMU_CACHE", str(tmp_path))
    cache = default_cache_dir(0)
    shutil.copytree(bundle.path, cache)
    text = (cache / MANIFEST).read_text()
    (cache / MANIFEST).write_text(
        text.replace(
            f"learning_rate = {RECOMMENDED_LEARNING_RATE}", f"lr = {RECOMMENDED_LEARNING_RATE}"
        )
    )

    def never() -> tuple[np.ndarray, np.ndarray]:
        raise AssertionError("the cached model is there: nothing to build")

    assert load_default(0, factory=never).recommended_learning_rate == RECOMMENDED_LEARNING_RATE
    assert not caplog.records


def test_build_default_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="uint8"):
        build_default(np.zeros((3, 1, 32, 32)), np.zeros(3, np.int64), tmp_path / "b")
    x = np.zeros((3, 1, 32, 32), np.uint8)
    with pytest.raises(ModelError, match="LR layer"):
        build_default(x, np.zeros(3, np.int64), tmp_path / "b", lr_layer="nope")


def test_default_bundle_path_builds_once(factory: tuple, tmp_path: Path) -> None:
    calls = []
    small = (factory[0][:64], factory[1][:64])

    def make() -> tuple[np.ndarray, np.ndarray]:
        calls.append(1)
        return small

    target = tmp_path / "cache" / "default"
    # a leftover temp dir of a crashed build must not matter
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / ".default-crashed").mkdir()
    path = default_bundle_path(target, factory=make)
    assert path == target and ModelBundle.load(path).num_classes == 10
    assert default_bundle_path(target, factory=make) == target
    assert len(calls) == 1
