"""``digits``: scikit-learn's bundled handwritten digits as a CORe50-like benchmark.

The 1797 8x8 images are split (seeded, stratified 80/20) into training images and held-out test
images *before* any session is made. Each image is upscaled to 24x24 and centred in a 32x32 frame
(uint8, channels first: ``[1, 32, 32]``). As in CORe50's 11 sessions, there are 11 sessions, and
sessions 3, 7 and 10 are the test sessions: every training image appears in each of the 8
training sessions and every test image in each of the 3 test sessions, each session rendering
its images through one fixed, seeded appearance transform (rotation, scale, shift, blur,
contrast, brightness, sensor noise). New instances of known classes therefore keep arriving, and
no test image is ever seen in training.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from dataset_stream.sources.base import ArrayStore, Dataset, stratified_split

SESSIONS = tuple(range(1, 12))
TEST_SESSIONS = (3, 7, 10)
TRAIN_SESSIONS = tuple(s for s in SESSIONS if s not in TEST_SESSIONS)
SIZE = 32
_INNER = 24
_TEST_FRACTION = 0.2


@dataclass(frozen=True, slots=True)
class SessionLook:
    """The fixed appearance transform of one session."""

    rotation_deg: float
    scale: float
    shift: tuple[float, float]
    blur_sigma: float
    contrast: float
    brightness: float
    noise_std: float

    def __post_init__(self) -> None:
        if not 0.5 <= self.scale <= 2.0:
            raise ValueError(f"scale {self.scale} is outside 0.5..2")
        if self.blur_sigma < 0 or self.noise_std < 0 or self.contrast <= 0:
            raise ValueError(f"blur, noise and contrast must be positive: {self}")

    @classmethod
    def draw(cls, rng: np.random.Generator) -> SessionLook:
        return cls(
            rotation_deg=float(rng.uniform(-20, 20)),
            scale=float(rng.uniform(0.8, 1.15)),
            shift=(float(rng.uniform(-3, 3)), float(rng.uniform(-3, 3))),
            blur_sigma=float(rng.uniform(0.0, 1.2)),
            contrast=float(rng.uniform(0.6, 1.15)),
            brightness=float(rng.uniform(0, 40)),
            noise_std=float(rng.uniform(2, 18)),
        )

    def render(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``images`` float32 ``[N, 32, 32]`` in 0..255 -> uint8 ``[N, 32, 32]``."""
        from scipy import ndimage

        theta = math.radians(self.rotation_deg)
        rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        inverse = rot / self.scale  # output pixel -> input pixel
        matrix = np.eye(3)
        matrix[1:, 1:] = inverse
        centre = np.full(2, (SIZE - 1) / 2)
        offset = np.zeros(3)
        offset[1:] = centre - inverse @ (centre + np.asarray(self.shift))
        out = ndimage.affine_transform(images, matrix, offset=offset, order=1, mode="constant")
        if self.blur_sigma > 0:
            out = ndimage.gaussian_filter(out, sigma=(0, self.blur_sigma, self.blur_sigma))
        out = self.brightness + self.contrast * out
        out += rng.normal(0.0, self.noise_std, size=out.shape).astype(np.float32)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def session_looks(seed: int = 0) -> dict[int, SessionLook]:
    """The appearance transform of every session, fixed by ``seed``."""
    return {
        s: SessionLook.draw(np.random.default_rng(np.random.SeedSequence([seed, 7919, s])))
        for s in SESSIONS
    }


@functools.lru_cache(maxsize=4)
def load_digits_benchmark(seed: int = 0) -> Dataset:
    """The digits benchmark for ``seed`` (cached: built once per process, ~0.5 s)."""
    from scipy import ndimage
    from sklearn.datasets import load_digits

    bunch = load_digits()
    raw = np.asarray(bunch.images, dtype=np.float32) * (255.0 / 16.0)
    labels = np.asarray(bunch.target, dtype=np.int64)
    inner = ndimage.zoom(
        raw, (1, _INNER / 8, _INNER / 8), order=1, grid_mode=True, mode="grid-constant"
    )
    pad = (SIZE - _INNER) // 2
    base = np.pad(np.clip(inner, 0, 255), ((0, 0), (pad, pad), (pad, pad))).astype(np.float32)

    rng = np.random.default_rng(np.random.SeedSequence([seed, 1797]))
    train_ids, test_ids = stratified_split(labels, _TEST_FRACTION, rng)
    looks = session_looks(seed)
    xs, ys, sessions, origins = [], [], [], []
    for s in SESSIONS:
        ids = test_ids if s in TEST_SESSIONS else train_ids
        noise_rng = np.random.default_rng(np.random.SeedSequence([seed, 104729, s]))
        xs.append(looks[s].render(base[ids], noise_rng))
        ys.append(labels[ids])
        sessions.append(np.full(len(ids), s, dtype=np.int64))
        origins.append(ids.astype(np.int64))
    x = np.concatenate(xs)[:, np.newaxis]  # [N, 1, 32, 32]
    return Dataset(
        name="digits",
        store=ArrayStore(x),
        y=np.concatenate(ys),
        session=np.concatenate(sessions),
        origin=np.concatenate(origins),
        classes=tuple(str(d) for d in range(10)),
        train_sessions=TRAIN_SESSIONS,
        test_sessions=TEST_SESSIONS,
    )
