"""The two loops of end-to-end delivery a producer runs around its
:class:`~dataset_stream.outstanding.Outstanding` book, shared by the stream and the bridge:

- :func:`resend_when_due`: look at the book every quarter of ``first_s`` (at most every second)
  and publish again what it says is due, through the producer's own ``publish_again``;
- :func:`drain`: at the end, wait until the book is empty, a stop, or a time budget spent while
  connected.

The rules themselves are the book's; these only carry them out in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final, NoReturn

from dataset_stream.outstanding import Outstanding

log = logging.getLogger(__name__)

#: Devices whose first re-send on a timeout is logged as a warning (the rest: counted).
RESEND_WARNINGS: Final = 5
#: Seconds between two looks at the drain's progress (and at a stop).
DRAIN_STEP_S: Final = 0.25

PublishAgain = Callable[[Mapping[str, Sequence[int]]], Awaitable[None]]


async def resend_when_due(
    book: Outstanding, publish_again: PublishAgain, *, skip: Callable[[str], bool] | None = None
) -> NoReturn:
    """Forever: publish again (``publish_again(seqs by device)``) the batches that got no
    answer in time, but those of devices ``skip`` names. The first few devices are logged."""
    tick_s = min(1.0, max(0.05, book.policy.first_s / 4))
    warned: set[str] = set()
    while True:
        await asyncio.sleep(tick_s)
        due = {
            d: seqs for d, seqs in book.due(time.monotonic()).items() if skip is None or not skip(d)
        }
        if not due:
            continue
        for device, seqs in due.items():
            if device in warned:
                continue
            warned.add(device)
            if len(warned) <= RESEND_WARNINGS:
                log.warning(
                    "%s: no answer to seq %d in time; publishing it again (with backoff, up to "
                    "%d times)",
                    device,
                    seqs[0],
                    book.policy.max_resends,
                )
            elif len(warned) == RESEND_WARNINGS + 1:
                log.warning("further devices without answers in time are counted, not logged")
        await publish_again(due)


async def drain(
    book: Outstanding,
    answered: asyncio.Event,
    budget_s: float,
    *,
    counting: Callable[[], bool] | None = None,
    stop: asyncio.Event | None = None,
) -> float:
    """Wait until ``book`` has nothing outstanding, ``stop`` is set, or ``budget_s`` seconds have
    passed while ``counting()`` (e.g. while connected); return the seconds counted.
    ``answered`` is set by the producer at every answer (this clears it)."""
    waited_s = 0.0
    while book.count and waited_s < budget_s and not (stop is not None and stop.is_set()):
        answered.clear()
        before = time.monotonic()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(DRAIN_STEP_S, budget_s - waited_s)):
                await answered.wait()
        if counting is None or counting():
            waited_s += time.monotonic() - before
    return waited_s


__all__ = ["DRAIN_STEP_S", "RESEND_WARNINGS", "PublishAgain", "drain", "resend_when_due"]
