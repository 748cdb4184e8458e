"""A node running ``defer-to-sun`` with a real engine (real SQLite, real onnxruntime), over a
real broker and through a real ``kill -9``: batches arriving in the dark are committed as
``deferred``, kept in the state file and answered ``deferred``; the first batch in the sun
learns them in seq order, each answered by its telemetry, then itself; beyond ``hold_events``
the oldest held is dropped (``energy_policy``); a copy of a held seq is answered ``deferred``
again; a process killed while batches are held, or half-way through learning them, loses
none and learns none twice.

The sun is a CSV irradiance trace of two hourly steps repeating (dark, then 800 W/m2), laid on
the stream's clock: a batch at ``T0 + s`` is in the dark for ``s`` in [0, 3600) and in the sun
for ``s`` in [3600, 7200).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest
from typer.testing import CliRunner

from broker import BrokerURL
from dataset_stream import Scenario, build_scenario
from dataset_stream.answers import AnswerLedger
from dataset_stream.protocol import (
    Batch,
    ErrorMessage,
    Telemetry,
    encode_batch,
    validate_telemetry,
)
from dataset_stream.protocol.node_messages import NODE_ERROR_CODES
from device.cli import app
from device.energy import PolicyError
from device.learning.nn import SGDConfig
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.node.engine import NodeEngine
from device.node.errors import PowerLost
from device.node.node import Node
from device.node.settings import NodeSettings, PowerSettings
from tests.support.times import T0

DEVICE = "node-0026"
SUN_AT_S = 3600.0  # the trace's sun begins this long after T0 (and ends twice as long after)


def sun_trace(directory: Path) -> str:
    """A ``--harvest`` value: dark for an hour, 800 W/m2 for an hour, repeating from T0."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "sun.csv"
    path.write_text(f"time_s,irradiance_w_m2\n{T0:.0f},0\n{T0 + SUN_AT_S:.0f},800\n", "utf-8")
    return f"solar:{path}"


def settings(state_dir: Path, hold_events: int = 24) -> NodeSettings:
    return NodeSettings(
        DEVICE,
        state_dir,
        sgd=SGDConfig(learning_rate=0.05),
        power=PowerSettings(
            policy="defer-to-sun",
            harvest=sun_trace(state_dir.parent / "trace"),
            hold_events=hold_events,
        ),
    )


def batch_t(seq: int, sun: bool) -> float:
    """The simulated time of ``seq``: a minute per seq, in the dark or an hour later in the sun."""
    return T0 + 60 * seq + (SUN_AT_S if sun else 0.0)


def batch(scenario: Scenario, seq: int, sun: bool) -> Batch:
    event = scenario.events(DEVICE)[seq]
    return Batch(event.x, event.y, seq=seq, t=batch_t(seq, sun), source="t")


def engine(bundle: ModelBundle, node_settings: NodeSettings) -> NodeEngine:
    return NodeEngine(node_settings, bundle, FrozenStage.shared(bundle))


def test_dark_batches_are_held_then_learned_in_order_when_the_sun_comes(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    node_settings = settings(tmp_path / "state")
    eng = engine(default_bundle, node_settings)
    try:
        for seq in (1, 2, 3):
            outcome = eng.apply(batch(digits_nic, seq, sun=False))
            assert outcome.refusal is not None and outcome.refusal.code == "deferred"
            assert outcome.refusal.seq == seq and not outcome.held and not outcome.dropped
            assert f"held for the sun: {seq} held" in outcome.refusal.message
            assert eng.store.event_outcome(seq) == "deferred" and eng.has_event(seq)
        assert eng.last_seq == 3 and eng.state.events_applied == 0
        assert [b.seq for b in eng.store.deferred()] == [1, 2, 3]
        kept = eng.store.deferred()[0]
        original = batch(digits_nic, 1, sun=False)
        assert np.array_equal(kept.x, original.x) and np.array_equal(kept.y, original.y)
        assert kept.x.dtype == original.x.dtype and kept.t == original.t
    finally:
        eng.close()
    again = engine(default_bundle, node_settings)  # restarted: still held
    try:
        assert [b.seq for b in again.store.deferred()] == [1, 2, 3]
        sun = again.apply(batch(digits_nic, 4, sun=True))
        assert sun.refusal is None and sun.telemetry.seq == 4
        assert [t.seq for t in sun.held] == [1, 2, 3]
        for telemetry in (*sun.held, sun.telemetry):
            validate_telemetry(telemetry.to_dict())
            assert telemetry.samples > 0
        assert again.state.events_applied == 4 and again.last_seq == 4
        assert again.store.deferred() == []
        assert [(e.seq, e.outcome) for e in again.store.events()] == [
            (seq, "learned") for seq in (1, 2, 3, 4)
        ]
    finally:
        again.close()


def test_beyond_hold_events_the_oldest_held_is_dropped(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    eng = engine(default_bundle, settings(tmp_path / "state", hold_events=2))
    try:
        outcomes = [eng.apply(batch(digits_nic, seq, sun=False)) for seq in (1, 2, 3, 4)]
        assert [o.dropped for o in outcomes[:2]] == [(), ()]
        for seq, outcome in zip((1, 2), outcomes[2:], strict=True):
            (dropped,) = outcome.dropped
            assert dropped.code == "energy_policy" and dropped.seq == seq
            assert "dropped: held for the sun beyond 2 events" in dropped.message
            assert outcome.refusal is not None and "2 held" in outcome.refusal.message
        assert [b.seq for b in eng.store.deferred()] == [3, 4]
        assert eng.store.event_outcome(1) == eng.store.event_outcome(2) == "policy"
        sun = eng.apply(batch(digits_nic, 5, sun=True))
        assert [t.seq for t in sun.held] == [3, 4] and sun.telemetry.seq == 5
        assert eng.state.events_applied == 3
    finally:
        eng.close()


def test_defer_to_sun_needs_a_harvester(default_bundle: ModelBundle, tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="defer-to-sun needs --harvest"):
        PowerSettings(policy="defer-to-sun")
    args = ["node", "--id", DEVICE, "--broker", "mqtt://127.0.0.1:1"]
    args += ["--state-dir", str(tmp_path), "--model", str(default_bundle.path)]
    result = CliRunner().invoke(app, [*args, "--policy", "defer-to-sun"])
    assert result.exit_code == 2, result.output
    assert "defer-to-sun needs --harvest" in result.output


async def test_a_night_then_a_day_over_a_broker(
    embedded_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    assert "deferred" in NODE_ERROR_CODES
    url: BrokerURL = embedded_broker.url
    ledger = AnswerLedger("vega", [DEVICE])
    night, day = (1, 2, 3, 4), (5, 6)
    events = digits_nic.events(DEVICE)

    def payload(seq: int) -> bytes:
        event = events[seq]
        t = batch_t(seq, sun=seq in day)
        return encode_batch(event.x, event.y, seq=seq, t=t, source="t")

    answers: list[Telemetry | ErrorMessage] = []

    async def collect(client: aiomqtt.Client, until: int) -> None:
        async with asyncio.timeout(60):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                ledger.handle(message.topic.value, message.payload)
                if message.topic.value.endswith("/telemetry"):
                    answers.append(Telemetry.from_json(message.payload))
                else:
                    answers.append(ErrorMessage.from_json(message.payload))
                if len(answers) == until:
                    return

    async with (
        aiomqtt.Client(**url.client_kwargs()) as client,
        Node(settings(tmp_path / "state"), default_bundle, url) as node,
    ):
        for kind in ("telemetry", "error"):
            await client.subscribe(f"vega/{DEVICE}/{kind}", qos=1)
        await asyncio.wait_for(node.connected.wait(), 10)
        for seq in night:
            ledger.handing_over(DEVICE, seq)
            await client.publish(f"vega/{DEVICE}/batch", payload(seq), qos=1)
        await collect(client, len(night))
        held = ledger.delivery()
        assert held.deferred == len(night) and held.complete and held.learned == 0
        assert "4 deferred (not learned yet)" in held.summary_line()
        assert not held.nothing_learned  # they are yet to be learned
        # a copy of a held seq is answered deferred again (not duplicate)
        await client.publish(f"vega/{DEVICE}/batch", payload(2), qos=1)
        await collect(client, len(night) + 1)
        for seq in day:
            ledger.handing_over(DEVICE, seq)
            await client.publish(f"vega/{DEVICE}/batch", payload(seq), qos=1)
        await collect(client, len(night) + 1 + len(night) + len(day))
    errors = [a for a in answers if isinstance(a, ErrorMessage)]
    assert [(e.code, e.seq) for e in errors] == [("deferred", s) for s in (*night, 2)]
    learned = [a.seq for a in answers if isinstance(a, Telemetry)]
    assert learned == [*night, *day]  # in seq order, each exactly once
    delivery = ledger.delivery()
    assert delivery.learned == len(night) + len(day) and delivery.deferred == 0
    assert delivery.complete and delivery.refused == 0 and delivery.skipped == 0
    assert "deferred" not in delivery.summary_line()
    assert ledger.ignored.repeated == 1  # the second deferred answer to seq 2


def test_an_overflow_drop_moves_a_deferred_seq_to_skipped() -> None:
    ledger = AnswerLedger("vega", [DEVICE])
    for seq in (1, 2):
        ledger.handing_over(DEVICE, seq)
        held = ErrorMessage(DEVICE, "deferred", "held for the sun", seq=seq)
        ledger.handle(f"vega/{DEVICE}/error", held.to_json())
    dropped = ErrorMessage(DEVICE, "energy_policy", "dropped", seq=1)
    ledger.handle(f"vega/{DEVICE}/error", dropped.to_json())
    delivery = ledger.delivery()
    assert (delivery.deferred, delivery.skipped, delivery.learned) == (1, 1, 0)
    assert delivery.complete
    assert "1 skipped by the energy policy, 1 deferred (not learned yet)" in (
        delivery.summary_line()
    )


# -- kill -9 ---------------------------------------------------------------------------------

_CHILD = """
import os, signal, sys
from pathlib import Path
from tests.node.test_node_defer import crash_while_releasing
crash_while_releasing(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
"""


def crash_while_releasing(state_dir: Path, model: Path, learn_first: int) -> None:
    """In a child process: hold seqs 1..3 in the dark, then, for the sun batch 4, learn the
    first ``learn_first`` held ones and SIGKILL this process (no cleanup, no close)."""
    bundle = ModelBundle.load(model, warn_old_keys=False)
    scenario = build_scenario("digits", "nic", seed=0)
    eng = engine(bundle, settings(state_dir))
    for seq in (1, 2, 3):
        eng.apply(batch(scenario, seq, sun=False))
    if learn_first:
        learning = eng._learning  # the steps of the engine's apply, one by one
        at_t, held = learning.to_release(batch(scenario, 4, sun=True))
        for one in held[:learn_first]:
            learning.learn_held(one, at_t)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("learn_first", [0, 1, 3])
def test_kill_9_while_held_or_half_way_learns_each_once(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path, learn_first: int
) -> None:
    state = tmp_path / "state"
    env = os.environ | {"PYTHONPATH": os.getcwd()}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(state), str(default_bundle.path), str(learn_first)],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    eng = engine(default_bundle, settings(state))
    try:
        assert [b.seq for b in eng.store.deferred()] == [1, 2, 3][learn_first:]
        assert eng.state.events_applied == learn_first and eng.last_seq == 3
        sun = eng.apply(batch(digits_nic, 4, sun=True))  # the sun batch, delivered again
        assert [t.seq for t in sun.held] == [1, 2, 3][learn_first:]
        assert eng.state.events_applied == 4 and eng.store.deferred() == []
        assert [(e.seq, e.outcome) for e in eng.store.events()] == [
            (seq, "learned") for seq in (1, 2, 3, 4)
        ]
        killed = eng.store.load_weights()
    finally:
        eng.close()
    # the same batches on a node that was never killed: the same weights
    whole = engine(default_bundle, settings(tmp_path / "whole"))
    try:
        for seq in (1, 2, 3):
            whole.apply(batch(digits_nic, seq, sun=False))
        whole.apply(batch(digits_nic, 4, sun=True))
        reference = whole.store.load_weights()
    finally:
        whole.close()
    assert killed is not None and reference is not None and killed.keys() == reference.keys()
    for name, array in reference.items():
        assert np.array_equal(killed[name], array), name


def test_a_power_loss_while_learning_the_held_ones_rolls_back_and_they_come_again(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    eng = engine(default_bundle, settings(tmp_path / "state"))
    try:
        for seq in (1, 2):
            eng.apply(batch(digits_nic, seq, sun=False))
        eng.cut_power_in_next_event()  # the first held one loses power before its commit
        with pytest.raises(PowerLost):
            eng.apply(batch(digits_nic, 3, sun=True))
        assert [b.seq for b in eng.store.deferred()] == [1, 2]
        assert eng.state.events_applied == 0 and eng.last_seq == 2
        sun = eng.apply(batch(digits_nic, 3, sun=True))  # delivered again
        assert [t.seq for t in sun.held] == [1, 2] and sun.telemetry.seq == 3
        assert eng.state.events_applied == 3 and eng.store.deferred() == []
    finally:
        eng.close()
