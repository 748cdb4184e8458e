"""``--dump DIR``: write a fleet's stream as files instead of publishing it.

Layout: ``DIR/{device}/eval.safetensors`` and ``DIR/{device}/{seq:06d}.safetensors``; each file
holds exactly the bytes the publisher would send, so ``safetensors.numpy.load_file`` reads it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from dataset_stream.payloads import ProgressCallback, StreamStats, batch_payload, eval_payload
from dataset_stream.protocol.topics import validate_device_id
from dataset_stream.scenarios import Event, Scenario


def event_path(directory: Path, device_id: str, seq: int) -> Path:
    """``DIR/{device}/{seq:06d}.safetensors``."""
    return directory / validate_device_id(device_id) / f"{seq:06d}.safetensors"


def eval_path(directory: Path, device_id: str) -> Path:
    """``DIR/{device}/eval.safetensors``."""
    return directory / validate_device_id(device_id) / "eval.safetensors"


async def dump_stream(
    scenario: Scenario,
    device_ids: Sequence[str],
    directory: str | Path,
    *,
    events: int | None = None,
    same_order: bool = False,
    cadence_s: float = 60.0,
    t0: float | None = None,
    on_progress: ProgressCallback | None = None,
) -> StreamStats:
    """Write every device's eval set and first ``events`` events under ``directory``.

    Files are written one at a time in a worker thread, so the coroutine can be cancelled
    between two files (a file is never left half written under its final name).
    """
    if events is not None and events < 1:
        raise ValueError(f"events must be >= 1, not {events!r}")
    directory = Path(directory)
    started = time.monotonic()
    start_t = time.time() if t0 is None else t0
    per_device = min(scenario.num_events, events or scenario.num_events)
    written = evals = 0
    eval_bytes = await asyncio.to_thread(eval_payload, scenario)
    for device_id in device_ids:
        await asyncio.to_thread(_write, eval_path(directory, device_id), eval_bytes)
        evals += 1
        stream: Sequence[Event] = scenario.events(device_id, same_order)[:per_device]
        for event in stream:
            path = event_path(directory, device_id, event.seq)
            await asyncio.to_thread(_write_event, path, scenario, event, start_t, cadence_s)
            written += 1
            if on_progress is not None:
                on_progress(written, 0)
    return StreamStats(
        devices=len(device_ids),
        total=per_device * len(device_ids),
        sent=written,
        acked=0,
        rejected=0,
        eval_sent=evals,
        elapsed_s=time.monotonic() - started,
    )


def _write_event(path: Path, scenario: Scenario, event: Event, t0: float, cadence_s: float) -> None:
    _write(path, batch_payload(scenario, event, t0=t0, cadence_s=cadence_s))


def _write(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(payload)
    partial.replace(path)
