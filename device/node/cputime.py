"""Where a process's CPU goes in its learning events: the CPU time of each part, summed.

Each part is timed with ``time.thread_time()`` (the CPU of the thread that runs the event, not
wall time, not the event loop's): the frozen stage (onnxruntime), training, evaluation, and
the whole event (``event``: the engine's ``apply``, which holds the other three plus the LR
memory update, the commit and the bookkeeping). The totals are the process's, kept whatever
the number of nodes. A fleet worker writes them to a file when asked
(:func:`write_totals`; ``benchmarks/fleet_capacity.py`` reads them to split a fleet's CPU per
event). Timing costs two clock reads per part, a microsecond or so.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

PARTS: Final = ("event", "frozen", "training", "eval")

_lock = threading.Lock()
_seconds = dict.fromkeys(PARTS, 0.0)
_counts = dict.fromkeys(PARTS, 0)


@contextlib.contextmanager
def charged(part: str) -> Iterator[None]:
    """Add the CPU time the current thread spends in the block to ``part`` (one of
    :data:`PARTS`)."""
    if part not in _seconds:
        raise ValueError(f"unknown part {part!r}: one of {', '.join(PARTS)}")
    start = time.thread_time()
    try:
        yield
    finally:
        spent = time.thread_time() - start
        with _lock:
            _seconds[part] += spent
            _counts[part] += 1


def totals() -> dict[str, dict[str, float]]:
    """``{part: {"s": CPU seconds, "n": times}}`` so far, and the process's own CPU seconds
    (``process``: every thread, user and system)."""
    with _lock:
        parts = {p: {"s": _seconds[p], "n": float(_counts[p])} for p in PARTS}
    parts["process"] = {"s": time.process_time(), "n": 0.0}
    return parts


def write_totals(path: Path) -> None:
    """:func:`totals` as JSON in ``path``, replaced whole (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "at": time.time(), "parts": totals()}))
    tmp.replace(path)


__all__ = ["PARTS", "charged", "totals", "write_totals"]
