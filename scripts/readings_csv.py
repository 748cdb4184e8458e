"""Write a CSV of simulated wrist accelerometer readings, the example of docs/own-data.md.

    python scripts/readings_csv.py --out readings.csv [--subjects 6] [--seconds 30] [--rate 25]

One line per reading, in time order: ``time`` (s since the subject's first reading), ``ax``,
``ay``, ``az`` (m/s^2), ``activity`` (sit, stand, walk, run, jump) and ``subject`` (s01, s02,
...). Each subject does every activity once, for ``--seconds`` seconds, in an order of its own.
An activity is a pattern of gravity and movement: sitting and standing hold the wrist still in
two orientations, walking and running swing it at about 1.8 and 2.8 steps per second (running
harder), jumping lands about once a second with a sharp peak. Each subject has a gait of its own
(a cadence, a strength, a slightly different orientation per axis) and sensor noise, so subjects
differ as people do. Only numpy; the same seed writes the same file.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

ACTIVITIES = ("sit", "stand", "walk", "run", "jump")
GRAVITY = 9.81


def readings(activity: str, seconds: float, rate_hz: float, rng: np.random.Generator) -> np.ndarray:
    """``[n, 3]`` readings of one subject doing ``activity`` (``rng`` holds the subject's gait
    first: it is drawn from in a fixed order)."""
    n = round(seconds * rate_hz)
    t = np.arange(n) / rate_hz
    tilt = rng.normal(0.0, 0.1, 3)
    cadence = rng.uniform(0.85, 1.15)
    strength = rng.uniform(0.8, 1.2)
    phase = rng.uniform(0, 2 * np.pi)
    if activity in ("sit", "stand"):
        down = np.array([0.2, 0.1, 1.0]) if activity == "sit" else np.array([1.0, 0.3, 0.1])
        move = 0.05 * np.sin(2 * np.pi * 0.3 * t + phase)[:, None] * np.ones(3)
    else:
        down = np.array([0.15, 0.95, 0.25])
        if activity == "walk":
            step = 1.8 * cadence
            wave = np.sin(2 * np.pi * step * t + phase)
            move = strength * np.stack(
                [1.5 * wave, 2.5 * np.abs(wave), 0.8 * np.cos(2 * np.pi * step * t)], 1
            )
        elif activity == "run":
            step = 2.8 * cadence
            wave = np.sin(2 * np.pi * step * t + phase)
            move = strength * np.stack(
                [3.5 * wave, 6.0 * np.abs(wave) ** 2, 2.0 * np.sin(4 * np.pi * step * t)], 1
            )
        else:  # jump: a landing about once a second, a sharp peak on every axis
            beat = (t * cadence + phase / (2 * np.pi)) % 1.0
            landing = np.exp(-0.5 * ((beat - 0.5) / 0.04) ** 2)
            move = strength * np.stack([2.0 * landing, 12.0 * landing - 3.0, 1.5 * landing], 1)
    orientation = down / np.linalg.norm(down) + tilt
    signal = GRAVITY * orientation[None, :] + move
    return signal + rng.normal(0.0, 0.3, signal.shape)


def write(path: Path, *, subjects: int, seconds: float, rate_hz: float, seed: int) -> int:
    """Write the CSV; returns the number of readings."""
    lines = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["time", "ax", "ay", "az", "activity", "subject"])
        for subject in range(1, subjects + 1):
            order = np.random.default_rng([seed, subject]).permutation(len(ACTIVITIES))
            clock = 0.0
            for index in order:
                activity = ACTIVITIES[index]
                rng = np.random.default_rng([seed, subject, index])
                for row in readings(activity, seconds, rate_hz, rng):
                    out.writerow(
                        [f"{clock:.2f}", *(f"{v:.3f}" for v in row), activity, f"s{subject:02d}"]
                    )
                    clock += 1.0 / rate_hz
                    lines += 1
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="CSV file to write")
    parser.add_argument("--subjects", type=int, default=6, help="subjects (sessions), >= 2")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of each activity")
    parser.add_argument("--rate", type=float, default=25.0, help="readings per second")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.subjects < 2 or args.seconds <= 0 or args.rate <= 0:
        parser.error("--subjects must be >= 2, --seconds and --rate positive")
    n = write(
        args.out, subjects=args.subjects, seconds=args.seconds, rate_hz=args.rate, seed=args.seed
    )
    print(f"wrote {n} readings of {args.subjects} subjects to {args.out}")


if __name__ == "__main__":
    main()
