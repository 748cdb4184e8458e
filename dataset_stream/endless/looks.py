"""How a generated event renders training samples anew: seeded appearance and sensor transforms.

A *look* is one transform's parameters. Each generated session draws one look per training
session it re-renders (a new recording of the same instances), each class draws one drift (the
same kind of value, read as how far each parameter moves at full drift), and a sample's look at
drift intensity ``a`` is ``session look + a x drift``, parameter by parameter (clamped where a
parameter has a bound). Every sample also gets its own sensor noise, from a generator seeded by
its event and its position in the event, so any subset of an event renders exactly as the same
samples of the whole event do.

- :class:`ImageLook` (``uint8`` samples ``[C, H, W]`` or ``[H, W]``): rotation about the centre,
  scale, shift (a fraction of the image size), Gaussian blur, contrast about mid-grey,
  brightness, sensor noise (grey levels).
- :class:`SignalLook` (``float32`` samples, channels first): per-channel gain and offset, noise,
  and a time shift along the last axis of ``[C, T]`` windows (linear interpolation, the edge
  values held); offsets and noise are in units of each channel's standard deviation over the
  training samples.

:class:`Rendering` holds what one generated event needs to render any of its samples: the looks
of its (session, class) groups, each sample's group and the seed of its noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

from dataset_stream.sources import Dataset

#: Samples whose sensor noise one generator draws (any subset of an event renders alike).
NOISE_BLOCK: Final = 64

_MID_GREY = 127.5


@dataclass(frozen=True, slots=True)
class ImageLook:
    """An appearance transform of images (see the module docstring); as a drift, how far each
    parameter moves at full intensity."""

    rotation_deg: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    blur_sigma: float = 0.0
    contrast: float = 1.0
    brightness: float = 0.0
    noise_std: float = 0.0

    @classmethod
    def session(cls, rng: np.random.Generator) -> ImageLook:
        """A new session's look: mild, as a camera set up again might give."""
        return cls(
            rotation_deg=float(rng.uniform(-12, 12)),
            scale=float(rng.uniform(0.9, 1.1)),
            shift=(float(rng.uniform(-0.06, 0.06)), float(rng.uniform(-0.06, 0.06))),
            blur_sigma=float(rng.uniform(0.0, 0.8)),
            contrast=float(rng.uniform(0.8, 1.15)),
            brightness=float(rng.uniform(-15, 20)),
            noise_std=float(rng.uniform(1, 8)),
        )

    @classmethod
    def drift(cls, rng: np.random.Generator) -> ImageLook:
        """A class's drift at full intensity: turned, resized, washed out, brighter, blurred."""
        sign = lambda: float(rng.choice((-1.0, 1.0)))  # noqa: E731
        return cls(
            rotation_deg=sign() * float(rng.uniform(20, 35)),
            scale=sign() * float(rng.uniform(0.1, 0.2)),
            shift=(0.0, 0.0),
            blur_sigma=float(rng.uniform(0.3, 0.8)),
            contrast=-float(rng.uniform(0.25, 0.45)),
            brightness=float(rng.uniform(25, 50)),
            noise_std=float(rng.uniform(2, 6)),
        )

    def moved(self, drift: ImageLook, amount: float) -> ImageLook:
        """This look moved by ``amount`` times ``drift``, every parameter kept in its range."""
        if amount == 0:
            return self
        return ImageLook(
            rotation_deg=self.rotation_deg + amount * drift.rotation_deg,
            scale=min(2.0, max(0.5, self.scale + amount * drift.scale)),
            shift=(
                self.shift[0] + amount * drift.shift[0],
                self.shift[1] + amount * drift.shift[1],
            ),
            blur_sigma=max(0.0, self.blur_sigma + amount * drift.blur_sigma),
            contrast=max(0.1, self.contrast + amount * drift.contrast),
            brightness=self.brightness + amount * drift.brightness,
            noise_std=max(0.0, self.noise_std + amount * drift.noise_std),
        )

    def render(self, x: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """``x`` uint8 ``[n, C, H, W]`` -> uint8, the same shape; ``noise``: standard normal
        float32 of that shape (each sample's own)."""
        from scipy import ndimage

        height, width = x.shape[-2:]
        theta = math.radians(self.rotation_deg)
        rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        inverse = rot / self.scale  # output pixel -> input pixel
        centre = np.array([(height - 1) / 2, (width - 1) / 2])
        shift = np.array([self.shift[0] * height, self.shift[1] * width])
        out = _warp(x.astype(np.float32), inverse, centre - inverse @ (centre + shift))
        if self.blur_sigma > 0:
            out = ndimage.gaussian_filter(out, sigma=(0, 0, self.blur_sigma, self.blur_sigma))
        out = _MID_GREY + self.contrast * (out - _MID_GREY) + self.brightness
        out += self.noise_std * noise
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@dataclass(frozen=True, slots=True)
class SignalLook:
    """A sensor transform of channels-first windows (see the module docstring); as a drift, how
    far each parameter moves at full intensity. ``gain`` and ``offset`` have one entry per
    channel; ``offset`` and ``noise_std`` are in channel standard deviations, ``shift`` in
    samples."""

    gain: tuple[float, ...]
    offset: tuple[float, ...]
    noise_std: float = 0.0
    shift: float = 0.0

    def __post_init__(self) -> None:
        if len(self.gain) != len(self.offset) or not self.gain:
            raise ValueError(f"gain and offset need one entry per channel: {self}")

    @classmethod
    def session(cls, rng: np.random.Generator, channels: int, length: int) -> SignalLook:
        """A new session's look: the sensor worn or mounted again, re-calibrated slightly."""
        return cls(
            gain=tuple(float(v) for v in rng.uniform(0.85, 1.15, size=channels)),
            offset=tuple(float(v) for v in rng.uniform(-0.15, 0.15, size=channels)),
            noise_std=float(rng.uniform(0.02, 0.1)),
            shift=float(rng.uniform(-length / 16, length / 16)),
        )

    @classmethod
    def drift(cls, rng: np.random.Generator, channels: int, length: int) -> SignalLook:
        """A class's drift at full intensity: gains and offsets away, more noise, later."""
        signs = rng.choice((-1.0, 1.0), size=(2, channels))
        return cls(
            gain=tuple(float(v) for v in signs[0] * rng.uniform(0.3, 0.5, size=channels)),
            offset=tuple(float(v) for v in signs[1] * rng.uniform(0.5, 1.0, size=channels)),
            noise_std=float(rng.uniform(0.1, 0.3)),
            shift=float(rng.choice((-1.0, 1.0)) * rng.uniform(length / 8, length / 4)),
        )

    def moved(self, drift: SignalLook, amount: float) -> SignalLook:
        """This look moved by ``amount`` times ``drift``, gains kept >= 0.1 and noise >= 0."""
        if amount == 0:
            return self
        return SignalLook(
            gain=tuple(
                max(0.1, a + amount * b) for a, b in zip(self.gain, drift.gain, strict=True)
            ),
            offset=tuple(a + amount * b for a, b in zip(self.offset, drift.offset, strict=True)),
            noise_std=max(0.0, self.noise_std + amount * drift.noise_std),
            shift=self.shift + amount * drift.shift,
        )

    def render(
        self, x: np.ndarray, noise: np.ndarray, scale: np.ndarray, *, time_axis: bool
    ) -> np.ndarray:
        """``x`` ``[n, C, L]`` -> float32, the same shape; ``noise``: standard normal of that
        shape; ``scale``: each channel's standard deviation ``[C]``; ``time_axis``: ``L`` is
        time (windows), so the look's ``shift`` applies."""
        out = x.astype(np.float32)
        if time_axis and self.shift:
            out = _shifted(out, self.shift)
        per_channel = (1, len(self.gain), 1)
        gain = np.asarray(self.gain, dtype=np.float32).reshape(per_channel)
        sigma = scale.astype(np.float32).reshape(per_channel)
        offset = np.asarray(self.offset, dtype=np.float32).reshape(per_channel) * sigma
        out = gain * out + offset + np.float32(self.noise_std) * sigma * noise
        return out.astype(np.float32)


def _warp(x: np.ndarray, inverse: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``x`` ``[..., H, W]`` resampled (bilinear, edge pixels held): output pixel ``p`` takes
    the input at ``inverse @ p + offset``."""
    height, width = x.shape[-2:]
    grid = np.stack(np.meshgrid(np.arange(height), np.arange(width), indexing="ij"), axis=-1)
    source = grid @ inverse.T + offset  # [H, W, 2]
    rows = np.clip(source[..., 0], 0, height - 1)
    cols = np.clip(source[..., 1], 0, width - 1)
    top, left = np.floor(rows).astype(np.intp), np.floor(cols).astype(np.intp)
    bottom, right = np.minimum(top + 1, height - 1), np.minimum(left + 1, width - 1)
    dy, dx = (rows - top).astype(np.float32), (cols - left).astype(np.float32)
    upper = (1 - dx) * x[..., top, left] + dx * x[..., top, right]
    lower = (1 - dx) * x[..., bottom, left] + dx * x[..., bottom, right]
    return (1 - dy) * upper + dy * lower


def _shifted(x: np.ndarray, shift: float) -> np.ndarray:
    """``x`` ``[n, C, T]`` delayed by ``shift`` samples (linear interpolation, edges held)."""
    length = x.shape[-1]
    where = np.clip(np.arange(length, dtype=np.float64) - shift, 0, length - 1)
    left = np.floor(where).astype(np.intp)
    right = np.minimum(left + 1, length - 1)
    frac = (where - left).astype(np.float32)
    return (1 - frac) * x[..., left] + frac * x[..., right]


Look = ImageLook | SignalLook


@dataclass(frozen=True, slots=True, eq=False)
class Rendering:
    """How a generated event's samples are rendered: ``looks``, the look of each position
    (``look_of`` int ``[n]``), the noise seed and, for sensor data, each channel's standard
    deviation (``scale``, None for images)."""

    looks: tuple[Look, ...]
    look_of: np.ndarray
    noise_entropy: tuple[int, ...]
    scale: np.ndarray | None = None

    def samples(self, dataset: Dataset, rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The rendered samples at ``positions`` of the event whose rows are ``rows``."""
        positions = np.asarray(positions, dtype=np.intp)
        raw = dataset.take(rows[positions])
        if not len(positions):
            return raw
        noise = self._noise(positions, raw.shape[1:])
        out = np.empty(raw.shape, dtype=raw.dtype)
        which = self.look_of[positions]
        for index in np.unique(which):
            mask = which == index
            out[mask] = self._render(self.looks[int(index)], raw[mask], noise[mask])
        return out

    def _noise(self, positions: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Standard normal noise ``[len(positions), *shape]``: position ``p``'s is row
        ``p mod NOISE_BLOCK`` of block ``p // NOISE_BLOCK``, each block from its own seed."""
        out = np.empty((len(positions), *shape), dtype=np.float32)
        blocks, slot = np.divmod(positions, NOISE_BLOCK)
        for block in np.unique(blocks):
            seq = np.random.SeedSequence([*self.noise_entropy, int(block)])
            drawn = np.random.default_rng(seq).standard_normal(
                (NOISE_BLOCK, *shape), dtype=np.float32
            )
            mine = blocks == block
            out[mine] = drawn[slot[mine]]
        return out

    def _render(self, look: Look, x: np.ndarray, noise: np.ndarray) -> np.ndarray:
        if isinstance(look, ImageLook):
            four = x if x.ndim == 4 else x[:, np.newaxis]
            return look.render(four, noise.reshape(four.shape)).reshape(x.shape)
        assert self.scale is not None
        windows = x.ndim == 3
        three = x.reshape(len(x), len(self.scale), -1)
        shaped = look.render(three, noise.reshape(three.shape), self.scale, time_axis=windows)
        out = shaped.reshape(x.shape)
        if x.dtype == np.uint8:
            return np.clip(np.rint(out), 0, 255).astype(np.uint8)
        return out


__all__ = ["NOISE_BLOCK", "ImageLook", "Look", "Rendering", "SignalLook"]
