"""The worker's heap trimming gives freed memory back to the system (glibc only)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from device.fleet import heap

pytestmark = pytest.mark.skipif(not heap.available(), reason="no glibc malloc_trim here")


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_freed_heap_comes_back_only_when_trimmed() -> None:
    # 100 MiB in 64 KiB blocks (below the mmap threshold: from the heap), every other one kept
    # so that nothing freed is at the top of the heap, where free() would give it back itself
    blocks = [bytearray(b"x" * 65_536) for _ in range(1_600)]
    kept = blocks[1::2]
    full = rss_kib()
    del blocks
    freed = rss_kib()
    assert full - freed < 10 * 1024  # glibc kept the freed half
    assert heap.trim()
    trimmed = rss_kib()
    assert full - trimmed > 40 * 1024  # most of the freed 50 MiB went back to the system
    assert len(kept) == 800


async def test_trim_every_runs_until_cancelled() -> None:
    task = asyncio.ensure_future(heap.trim_every(0.01))
    await asyncio.sleep(0.1)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
