"""A publishing task stops when it is cancelled once: :func:`broker.session.publish` does not
lose the cancellation that aiomqtt's ``asyncio.wait_for`` drops on Python 3.11 (gh-86296).

Cancelled at a random moment of a loop of QoS 1 publishes, a raw ``client.publish`` loop went
on publishing in about one round of four on the 2-core machine (77 of 300): a ``stream --forever``
then missed its clean stop and was ended at once (exit 143) by the grace timer.
"""

from __future__ import annotations

import asyncio
import random

import aiomqtt
import pytest

from broker.embedded import EmbeddedBroker
from broker.session import kept_cancel, publish

ROUNDS = 100


async def test_a_publishing_loop_cancelled_once_always_stops(
    embedded_broker: EmbeddedBroker,
) -> None:
    url = embedded_broker.url
    rng = random.Random(7)
    published = 0
    went_on: list[int] = []
    async with aiomqtt.Client(url.host, url.port, identifier="kept-cancel") as client:

        async def loop() -> None:
            nonlocal published
            while True:
                await publish(client, "kept/cancel", b"p" * 100)
                published += 1

        for round_ in range(ROUNDS):
            task = asyncio.create_task(loop())
            await asyncio.sleep(rng.uniform(0.001, 0.02))
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=1.0)
            if not done:  # the cancel was lost: stop it for good, and count the round
                went_on.append(round_)
                while not task.done():
                    task.cancel()
                    await asyncio.wait({task}, timeout=0.2)
            assert task.cancelled()
    assert published > ROUNDS  # the cancels landed among completing publishes, not before
    assert went_on == [], f"{len(went_on)} of {ROUNDS} loops went on publishing after a cancel"


async def test_a_cancel_that_lands_as_the_call_completes_is_raised() -> None:
    async def completes_but_swallows() -> str:
        # what wait_for does on 3.11: the result is ready when the cancel lands, and wins
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            return "result"
        raise AssertionError("the cancel did not land")

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(kept_cancel(completes_but_swallows()))


async def test_a_cancel_before_the_call_is_not_raised_again() -> None:
    """A task that was cancelled before (and handled it) may still publish, e.g. its last status."""

    async def cleanup_after_a_cancel() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:

            async def done() -> str:
                return "published"

            return await kept_cancel(done())
        raise AssertionError("not cancelled")

    task = asyncio.create_task(cleanup_after_a_cancel())
    await asyncio.sleep(0)
    task.cancel()
    assert await task == "published"
