"""What the stream makes of the fleet's answers: typed, checked, each seq accounted once.

The ledger is fed real wire payloads (bytes built by the typed messages, or broken on purpose);
the last tests send them through a real broker from a real device client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import aiomqtt
import pytest

from broker import EmbeddedBroker
from broker.backoff import Backoff
from broker.session import new_client_id
from broker.url import BrokerURL
from dataset_stream import StreamPublisher, build_scenario
from dataset_stream.answers import PER_DEVICE_UP_TO, AnswerLedger, IgnoredMessages
from dataset_stream.protocol import ErrorMessage, Status, decode_batch, fleet_ids
from dataset_stream.reconnect import ReconnectPolicy
from dataset_stream.scenarios import Scenario
from tests.support.messages import telemetry
from tests.support.times import T0

DEVICE = "node-0000"


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return build_scenario("digits", "nic", seed=0)


def error(code: str, seq: int | None = None, device: str = DEVICE, **gap: int) -> bytes:
    return ErrorMessage(device, code, f"{code} here", seq=seq, **gap).to_json()


def ledger_with(sent: int) -> AnswerLedger:
    ledger = AnswerLedger("vega", [DEVICE, "node-0001"])
    for seq in range(1, sent + 1):
        ledger.handing_over(DEVICE, seq)
    return ledger


def test_answer_semantics() -> None:
    ledger = ledger_with(8)
    answers = [
        ("telemetry", telemetry(DEVICE, 1)),  # learned
        ("error", error("duplicate", 2)),  # learned before: a redelivery
        ("error", error("stale_seq", 3)),  # came after the node gave up on it: rejected
        ("error", error("store_failed", 4)),  # not committed, will be retried: not an answer
        ("error", error("gap", gap_first=5, gap_last=6, next_seq=7)),  # never arrived: lost
        ("error", error("internal", 7)),  # the node failed on it and skipped it: rejected
    ]
    for kind, payload in answers:
        ledger.handle(f"vega/{DEVICE}/{kind}", payload)
    assert (ledger.acked, ledger.rejected, ledger.lost) == (2, 4, 2)
    assert ledger.unanswered() == {DEVICE: [4, 8]}
    assert ledger.ignored == IgnoredMessages(store_failed=1)
    ledger.handle(f"vega/{DEVICE}/telemetry", telemetry(DEVICE, 4))  # the retry worked
    ledger.handle(f"vega/{DEVICE}/error", error("bad_label", 8))
    assert (ledger.acked, ledger.rejected, ledger.lost) == (3, 5, 2)
    assert ledger.unanswered() == {}


def test_each_seq_is_accounted_once() -> None:
    ledger = ledger_with(3)
    for _ in range(3):  # a QoS 1 redelivery, then the answer to a re-published batch
        ledger.handle(f"vega/{DEVICE}/telemetry", telemetry(DEVICE, 1))
    ledger.handle(f"vega/{DEVICE}/error", error("duplicate", 1))
    ledger.handle(f"vega/{DEVICE}/error", error("gap", gap_first=2, gap_last=3, next_seq=4))
    ledger.handle(f"vega/{DEVICE}/error", error("stale_seq", 2))  # arrived after the gap
    ledger.handle(f"vega/{DEVICE}/error", error("gap", gap_first=2, gap_last=3, next_seq=4))
    assert (ledger.acked, ledger.rejected, ledger.lost) == (1, 2, 2)
    assert ledger.ignored == IgnoredMessages(repeated=5)


def test_publishing_an_answered_seq_again_leaves_it_answered() -> None:
    ledger = ledger_with(2)
    ledger.handle(f"vega/{DEVICE}/telemetry", telemetry(DEVICE, 1))
    assert ledger.handing_over(DEVICE, 1) is False  # re-published after a reconnect
    assert ledger.handing_over(DEVICE, 2) is False
    assert ledger.handing_over(DEVICE, 3) is True
    assert ledger.unanswered() == {DEVICE: [2, 3]}
    ledger.handle(f"vega/{DEVICE}/error", error("duplicate", 1))  # its answer
    assert (ledger.acked, ledger.ignored.repeated) == (1, 1)


def test_foreign_and_invalid_messages_are_counted_not_acted_on() -> None:
    ledger = ledger_with(2)
    other = "node-0001"
    foreign = [
        (f"vega/{DEVICE}/telemetry", telemetry(other, 1)),  # device field of another device
        (f"vega/{DEVICE}/error", error("bad_label", 1, device=other)),
        (f"vega/{DEVICE}/telemetry", telemetry(DEVICE, 3)),  # a seq the stream never sent
        (f"vega/{DEVICE}/error", error("gap", gap_first=5, gap_last=9, next_seq=10)),
        ("vega/node-0099/telemetry", telemetry("node-0099", 1)),  # not a device it streams to
        (f"other/{DEVICE}/telemetry", telemetry(DEVICE, 1)),  # another prefix
        (f"vega/{DEVICE}/batch", b"x"),  # not an answer
        (f"vega/{DEVICE}/status", Status("idle", device=other).to_json()),
    ]
    invalid = [
        (f"vega/{DEVICE}/telemetry", b"not json"),
        (f"vega/{DEVICE}/telemetry", json.dumps({"device": DEVICE, "seq": 1}).encode()),
        (f"vega/{DEVICE}/telemetry", telemetry(DEVICE, 1).replace(b'"seq": 1', b'"seq": "1"')),
        (f"vega/{DEVICE}/error", json.dumps({"device": DEVICE, "seq": 1}).encode()),
        (f"vega/{DEVICE}/error", error("gap", next_seq=3)),  # a gap without its range
        (f"vega/{DEVICE}/status", b'{"state": "Sleeping!"}'),
        (f"vega/{DEVICE}/telemetry", None),
    ]
    for where, payload in foreign + invalid:
        ledger.handle(where, payload)
    assert ledger.ignored == IgnoredMessages(invalid=len(invalid), foreign=len(foreign))
    assert (ledger.acked, ledger.rejected) == (0, 0)
    assert ledger.unanswered() == {DEVICE: [1, 2]}
    assert not ledger.devices[DEVICE].online.is_set()


def test_errors_without_a_seq_and_unknown_codes(caplog: pytest.LogCaptureFixture) -> None:
    ledger = ledger_with(2)
    ledger.handle(f"vega/{DEVICE}/error", error("bad_format"))  # the node could not read a seq
    ledger.handle(f"vega/{DEVICE}/error", error("overheated", 1))  # a node's own code
    ledger.handle(f"vega/{DEVICE}/error", error("overheated", 2))
    assert (ledger.rejected, ledger.ignored) == (2, IgnoredMessages(unattributed=1))
    assert (
        sum("overheated" in r.getMessage() and "contract" in r.getMessage() for r in caplog.records)
        == 1
    )


def test_status_error_is_logged_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    ledger = ledger_with(0)
    where = f"vega/{DEVICE}/status"
    failing = Status("error", device=DEVICE, reason="disk I/O error").to_json()
    with caplog.at_level(logging.WARNING, logger="dataset_stream.answers"):
        for payload in (failing, failing, Status("idle", device=DEVICE).to_json(), failing):
            ledger.handle(where, payload)
        ledger.handle(where, b'{"state": "offline"}')  # the last will names no device
    logged = [r for r in caplog.records if "loop failed" in r.getMessage()]
    assert len(logged) == 2 and "disk I/O error" in logged[0].getMessage()
    assert not ledger.devices[DEVICE].online.is_set()
    assert ledger.ignored.total == 0


def test_a_device_back_online_with_batches_unanswered_is_reported() -> None:
    back: list[str] = []
    ledger = AnswerLedger("vega", [DEVICE, "node-0001"], on_back=back.append)
    idle = Status("idle", device=DEVICE).to_json()
    ledger.handle(f"vega/{DEVICE}/status", idle)  # nothing unanswered: nothing to re-send
    ledger.handing_over(DEVICE, 1)
    ledger.handle(f"vega/{DEVICE}/status", idle, retained=True)  # stored, not a (re)connect
    ledger.handle(f"vega/{DEVICE}/status", b'{"state": "offline"}')
    assert back == []
    ledger.handle(f"vega/{DEVICE}/status", idle)
    assert back == [DEVICE]


def test_subscriptions_name_the_streams_devices_or_wildcards_for_many() -> None:
    few = AnswerLedger("vega", ["a", "b"]).subscriptions(with_status=False)
    assert few == [
        ("vega/a/telemetry", 1),
        ("vega/a/error", 1),
        ("vega/b/telemetry", 1),
        ("vega/b/error", 1),
    ]
    many = AnswerLedger("vega", fleet_ids(PER_DEVICE_UP_TO + 1))
    assert many.subscriptions(with_status=True) == [
        ("vega/+/telemetry", 1),
        ("vega/+/error", 1),
        ("vega/+/status", 1),
    ]


def test_reconnect_policy_and_backoff() -> None:
    for bad in ({"initial_s": 0}, {"initial_s": 2, "cap_s": 1}, {"max_outage_s": 0}):
        with pytest.raises(ValueError):
            ReconnectPolicy(**bad)  # type: ignore[arg-type]
    backoff = Backoff(0.1, 1.0)
    delays = [backoff.next_delay() for _ in range(8)]
    assert 0.05 <= delays[0] <= 0.1 and all(0.5 <= d <= 1.0 for d in delays[4:])
    backoff.reset()
    assert backoff.next_delay() <= 0.1
    assert new_client_id("stream") != new_client_id("stream")


# -- through a real broker --------------------------------------------------------------------


async def scripted_device(url: BrokerURL, script: dict[int, list[tuple[str, bytes]]]) -> None:
    """Wait for every scripted batch, then publish the scripted answers, in seq order."""
    async with aiomqtt.Client(**url.client_kwargs()) as client:
        await client.subscribe(f"vega/{DEVICE}/batch", qos=1)
        await client.publish(
            f"vega/{DEVICE}/status", Status("idle", device=DEVICE).to_json(), qos=1, retain=True
        )
        seen: set[int] = set()
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            seen.add(decode_batch(message.payload).seq)
            if seen == set(script):
                break
        for seq in sorted(script):
            for kind, payload in script[seq]:
                await client.publish(f"vega/{DEVICE}/{kind}", payload, qos=1)
        await asyncio.Event().wait()  # stay connected until cancelled


async def test_answers_over_a_broker(embedded_broker: EmbeddedBroker, scenario: Scenario) -> None:
    script = {
        1: [
            ("telemetry", b"{not json"),
            ("telemetry", telemetry("node-0001", 1)),
            ("telemetry", telemetry(DEVICE, 99)),
            ("telemetry", telemetry(DEVICE, 1)),
            ("telemetry", telemetry(DEVICE, 1)),
        ],
        2: [("error", error("duplicate", 2))],
        3: [("error", error("stale_seq", 3))],
        4: [("error", error("store_failed", 4)), ("telemetry", telemetry(DEVICE, 4))],
        5: [("error", error("gap", gap_first=5, gap_last=6, next_seq=7))],
        6: [],
        7: [("error", error("internal", 7))],
    }
    url = embedded_broker.url
    async with asyncio.timeout(15):
        device = asyncio.create_task(scripted_device(url, script))
        try:
            async with StreamPublisher(
                url, scenario, [DEVICE], speed=1e6, events=7, t0=T0, wait_for_answers=True
            ) as stream:
                stats = await stream.run()
        finally:
            device.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await device
    assert (stats.sent, stats.acked, stats.rejected, stats.lost) == (7, 3, 4, 2)
    assert stats.stalled == ()
    assert stats.ignored == IgnoredMessages(invalid=1, foreign=2, repeated=1, store_failed=1)
    assert stats.link.reconnects == 0


async def test_two_streams_get_client_ids_of_their_own(
    embedded_broker: EmbeddedBroker, scenario: Scenario
) -> None:
    url = embedded_broker.url
    policy = ReconnectPolicy(max_outage_s=5)
    async with (
        StreamPublisher(url, scenario, ["a"], speed=1e6, events=2, reconnect=policy) as one,
        StreamPublisher(url, scenario, ["b"], speed=1e6, events=2, reconnect=policy) as two,
    ):
        assert one.client_id != two.client_id
        first, second = await asyncio.gather(one.run(), two.run())
    assert first.link.reconnects == second.link.reconnects == 0
    assert first.sent == second.sent == 2


async def test_a_stream_leaves_no_session_behind(any_broker: object, scenario: Scenario) -> None:
    url: BrokerURL = any_broker.url  # type: ignore[attr-defined]
    async with StreamPublisher(
        url, scenario, [DEVICE], speed=1e6, events=1, client_id="stream-a"
    ) as stream:
        await stream.run()
    async with aiomqtt.Client(**url.client_kwargs()) as node:  # an answer after the stream left
        await node.publish(f"vega/{DEVICE}/telemetry", telemetry(DEVICE, 1), qos=1)
    async with aiomqtt.Client(
        **url.client_kwargs(), identifier="stream-a", clean_session=False
    ) as again:
        with pytest.raises(TimeoutError):  # no session, no subscription: nothing was kept
            async with asyncio.timeout(0.5):
                await anext(aiter(again.messages))
