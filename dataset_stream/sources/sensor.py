"""``synthetic-sensor``: multichannel float32 time-series windows for nodes that are not cameras.

Each sample is a window ``[3, 64]`` (channels first, like a 3-axis accelerometer at 64 samples per
window). A class is a signal pattern (flat, slow and fast oscillation, square wave, sawtooth,
bursts) with a per-channel phase; every window draws its own amplitude, frequency and phase
around the class's. Sessions (11, sessions 3, 7 and 10 for testing) are drift: per-channel gain
and offset, noise level, and sampling jitter (a rate error plus per-sample timing noise). Test
windows are drawn independently of training windows.
"""

from __future__ import annotations

import functools

import numpy as np

from dataset_stream.sources.base import ArrayStore, Dataset

CLASSES = ("flat", "sine-slow", "sine-fast", "square", "sawtooth", "bursts")
SESSIONS = tuple(range(1, 12))
TEST_SESSIONS = (3, 7, 10)
TRAIN_SESSIONS = tuple(s for s in SESSIONS if s not in TEST_SESSIONS)
CHANNELS = 3
LENGTH = 64
PER_CLASS_SESSION = 120

_CYCLES = {"flat": 0.0, "sine-slow": 1.5, "sine-fast": 6.0, "square": 3.0, "sawtooth": 2.5}


def _pattern(name: str, phase: np.ndarray, cycles: np.ndarray) -> np.ndarray:
    """Unit-amplitude pattern ``name`` at ``phase`` (cycles) ``[n, C, T]``; ``cycles`` ``[n]``."""
    arg = phase * cycles[:, None, None]
    if name == "flat":
        return np.zeros_like(phase)
    if name in ("sine-slow", "sine-fast"):
        return np.sin(2 * np.pi * arg)
    if name == "square":
        return np.sign(np.sin(2 * np.pi * arg))
    if name == "sawtooth":
        return 2.0 * (arg - np.floor(arg + 0.5))
    # bursts: short Gaussian pulses at ~4 per window, on all channels
    centres = (np.arange(4) + 0.5) / 4
    width = 0.03
    pulse = np.exp(-0.5 * ((phase[..., None] - centres) / width) ** 2).sum(axis=-1)
    return 2.0 * pulse - 0.5


def _session(cls: int, session: int, seed: int, n: int) -> np.ndarray:
    """``n`` windows ``[n, C, T]`` float32 of class ``cls`` recorded in ``session``."""
    drift = np.random.default_rng(np.random.SeedSequence([seed, 31337, session]))
    gain = drift.uniform(0.7, 1.3, size=(CHANNELS, 1))
    offset = drift.uniform(-0.5, 0.5, size=(CHANNELS, 1))
    noise = drift.uniform(0.05, 0.3)
    rate = drift.uniform(0.9, 1.1)
    jitter = drift.uniform(0.0, 0.4) / LENGTH

    rng = np.random.default_rng(np.random.SeedSequence([seed, 4242, session, cls]))
    name = CLASSES[cls]
    t = np.arange(LENGTH) / LENGTH * rate
    times = t + rng.normal(0.0, jitter, size=(n, 1, LENGTH))
    channel_phase = np.arange(CHANNELS)[None, :, None] / CHANNELS
    start = rng.uniform(0, 1, size=(n, 1, 1))
    phase = times + start + channel_phase
    cycles = _CYCLES.get(name, 0.0) * rng.uniform(0.85, 1.15, size=n)
    amplitude = rng.uniform(0.8, 1.2, size=(n, 1, 1))
    signal = amplitude * _pattern(name, phase if name != "bursts" else times % 1.0, cycles)
    signal = gain * signal + offset + rng.normal(0.0, noise, size=signal.shape)
    return signal.astype(np.float32)


@functools.lru_cache(maxsize=4)
def load_sensor_benchmark(seed: int = 0, per_class_session: int = PER_CLASS_SESSION) -> Dataset:
    """The synthetic-sensor benchmark for ``seed`` (cached)."""
    if per_class_session < 2:
        raise ValueError(f"per_class_session must be >= 2, not {per_class_session}")
    xs, ys, sessions = [], [], []
    for s in SESSIONS:
        for c in range(len(CLASSES)):
            xs.append(_session(c, s, seed, per_class_session))
            ys.append(np.full(per_class_session, c, dtype=np.int64))
            sessions.append(np.full(per_class_session, s, dtype=np.int64))
    x = np.concatenate(xs)
    return Dataset(
        name="synthetic-sensor",
        store=ArrayStore(x),
        y=np.concatenate(ys),
        session=np.concatenate(sessions),
        origin=np.arange(len(x), dtype=np.int64),
        classes=CLASSES,
        train_sessions=TRAIN_SESSIONS,
        test_sessions=TEST_SESSIONS,
    )
