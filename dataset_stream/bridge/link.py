"""The bridge's side of the fleet's broker: publishing with reconnects, and where each device's
sequence numbers continue from.

:class:`NextSeqs` reads the retained ``{prefix}/{device}/status`` of the devices: a device's first
batch gets ``last_seq + 1``, so a bridge follows a stream or its own earlier run. The bridge waits
for the retained statuses at most ``wait_s`` after it subscribed; a device with none by then
starts at seq 1 (with a warning: no node has announced itself under that id). With ``from_seq``
every device starts there instead, and a device whose ``last_seq`` is at or past it is refused
(:class:`~dataset_stream.errors.SeqsRefused`: those seqs were learned before). Inference requests
have a sequence of their own; it continues from the status's ``last_infer_seq`` when a node
reports one, else it starts at the wall clock in milliseconds: a node answers a request seq it
has seen recently as a repeat (its first answer, not charged), so a restarted bridge must not
start again at 1; at most one request per device per millisecond keeps this monotonic.

:class:`TargetLink` is the connection (a clean session): it subscribes to the devices' statuses
and answers (``telemetry``, ``error``: each message goes to the bridge's
:class:`~dataset_stream.answers.AnswerLedger`) and re-subscribes after each reconnect (backoff
with jitter and a cap, :class:`~dataset_stream.reconnect.ReconnectPolicy`), then calls
``on_reconnect`` (the bridge publishes its unanswered batches again: answers sent while it was
away are not kept for a clean session); a refused subscription is a
:class:`~dataset_stream.errors.PublishError`. :meth:`TargetLink.publish` publishes at QoS 1 and,
when the connection is lost, publishes again on the next one. A node learns a batch seq once and
answers a copy ``duplicate``, so a message published twice is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

import aiomqtt

from broker.errors import OutageTooLong, SubscriptionRefused
from broker.session import Session, close, new_client_id, publish
from dataset_stream.answers import ANSWER_KINDS, STATUS_KIND, AnswerLedger
from dataset_stream.continuation import plan_seqs
from dataset_stream.errors import ForeignMessage, ProtocolError, PublishError, SeqsRefused
from dataset_stream.protocol import Status, read_node_message, topic, topic_filter
from dataset_stream.reconnect import ReconnectPolicy

if TYPE_CHECKING:
    from broker.url import BrokerURL

log = logging.getLogger(__name__)


class NextSeqs:
    """Next batch and inference seq of every device; see the module docstring."""

    def __init__(self, wait_s: float, from_seq: int | None = None) -> None:
        if from_seq is not None and from_seq < 1:
            raise ValueError(f"from_seq must be >= 1, not {from_seq!r}")
        self.wait_s = wait_s
        self.from_seq = from_seq
        self._status: dict[str, Status] = {}
        self._arrived: dict[str, asyncio.Event] = {}
        self._next: dict[str, int] = {}
        self._next_infer: dict[str, int] = {}
        self._deadline_s: float | None = None

    def listening(self) -> None:
        """The status subscription is in place: retained statuses arrive from now on."""
        if self._deadline_s is None:
            self._deadline_s = asyncio.get_running_loop().time() + self.wait_s

    def on_status(self, device: str, status: Status) -> None:
        self._status[device] = status
        self._event(device).set()
        last = status.last_seq
        if device in self._next and last is not None and last >= self._next[device]:
            log.warning("%s has learned up to seq %d (another producer?): going on from there",
                        device, last)  # fmt: skip
            self._next[device] = last + 1

    async def batch_seq(self, device: str) -> int:
        """The seq of ``device``'s next batch (not used up until :meth:`used`); raises
        :class:`SeqsRefused` for a device that learned ``from_seq`` before."""
        if device not in self._next:
            status = await self._status_of(device)
            last = status.last_seq if status is not None else None
            plan = plan_seqs({device: last}, {device: 10**18}, from_seq=self.from_seq)
            if plan.refused:
                raise SeqsRefused(plan.refusal_line())
            self._next[device] = plan.ranges[device][0]
            if status is None:
                log.warning(
                    "%s: no retained status within %.1f s (is its node running?); "
                    "starting at seq %d",
                    device,
                    self.wait_s,
                    self._next[device],
                )
        return self._next[device]

    def used(self, device: str, seq: int) -> None:
        self._next[device] = max(self._next.get(device, 0), seq + 1)

    async def infer_seq(self, device: str) -> int:
        if device not in self._next_infer:
            status = await self._status_of(device)
            last = status.extra.get("last_infer_seq") if status is not None else None
            ok = isinstance(last, int) and not isinstance(last, bool) and last >= 0
            start = last + 1 if ok else int(time.time() * 1000)  # type: ignore[operator]
            self._next_infer[device] = start
        return self._next_infer[device]

    def infer_used(self, device: str, seq: int) -> None:
        self._next_infer[device] = max(self._next_infer.get(device, 0), seq + 1)

    async def _status_of(self, device: str) -> Status | None:
        if device not in self._status and self._deadline_s is not None:
            remaining = self._deadline_s - asyncio.get_running_loop().time()
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._event(device).wait()
        return self._status.get(device)

    def _event(self, device: str) -> asyncio.Event:
        event = self._arrived.get(device)
        if event is None:
            event = self._arrived[device] = asyncio.Event()
        return event


class TargetLink:
    """The connection to the fleet's broker; see the module docstring.

    ``devices``: the ids whose statuses and answers to read, or None for all
    (``{prefix}/+/status`` and the like); ``answers``: where the answers go (None: statuses
    only); ``on_reconnect``: called after each reconnect. Enter it, run :meth:`maintain` in a
    task for as long as it is used, then leave it.
    """

    def __init__(
        self,
        broker: BrokerURL,
        seqs: NextSeqs,
        *,
        prefix: str,
        devices: Sequence[str] | None,
        reconnect: ReconnectPolicy,
        timeout_s: float = 10.0,
        answers: AnswerLedger | None = None,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self.broker = broker
        self.seqs = seqs
        self.answers = answers
        self.on_reconnect = on_reconnect
        self.prefix = prefix
        self.reconnect = reconnect
        self.timeout_s = timeout_s
        self.client_id = new_client_id("bridge")
        self._session = Session(broker, self.client_id, timeout_s=timeout_s, persistent=False)
        self._reconnect = reconnect.reconnect(broker=broker, who="bridge", client_id=self.client_id)
        kinds = (STATUS_KIND, *ANSWER_KINDS) if answers is not None else (STATUS_KIND,)
        if devices is None:
            self._filters = [(topic_filter(prefix, kind), 1) for kind in kinds]
        else:
            self._filters = [(topic(prefix, d, kind), 1) for d in devices for kind in kinds]
        self._client: aiomqtt.Client | None = None
        self._next_connection = asyncio.Event()  # set when the next connection is made

    @property
    def reconnects(self) -> int:
        return self._reconnect.reconnects

    @property
    def connected(self) -> bool:
        """Whether a connection is up (as far as the link knows)."""
        return self._client is not None

    async def __aenter__(self) -> Self:
        try:
            self._client = await self._connect()
        except (aiomqtt.MqttError, OSError) as exc:
            raise PublishError(f"cannot connect to the broker at {self.broker}: {exc}") from exc
        self._reconnect.connected()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        if client is not None:
            await close(client, within_s=self.timeout_s)

    async def _connect(self) -> aiomqtt.Client:
        try:
            client = await self._session.open(self._filters)
        except SubscriptionRefused as exc:
            raise PublishError(str(exc)) from exc
        self.seqs.listening()
        return client

    async def maintain(self) -> None:
        """Read statuses; reconnect when the connection is lost (forever, or PublishError
        after ``max_outage_s`` without a broker)."""
        while True:
            client = self._client
            assert client is not None, "enter the link before maintain()"
            cause: BaseException = PublishError("the connection ended")
            try:
                async for message in client.messages:
                    self._on_message(message)
            except aiomqtt.MqttError as exc:
                cause = exc
            self._client = None
            await close(client, within_s=self.timeout_s)
            try:
                self._client = await self._reconnect.again(self._connect, cause)
            except OutageTooLong as exc:
                last = exc.__cause__ or cause
                raise PublishError(f"{exc}: {last}") from last
            made, self._next_connection = self._next_connection, asyncio.Event()
            made.set()
            if self.on_reconnect is not None:
                self.on_reconnect()

    async def publish(self, where: str, payload: bytes) -> None:
        """Publish at QoS 1 until the broker acknowledges it (again after a reconnect)."""
        while True:
            client, made = self._client, self._next_connection
            if client is not None:
                try:
                    async with asyncio.timeout(self.timeout_s):
                        await publish(client, where, payload)
                    return
                except (aiomqtt.MqttError, TimeoutError) as exc:
                    log.debug("publishing to %s: %s; waiting for the next connection", where, exc)
            await made.wait()  # maintain() raises PublishError if it never comes

    def _on_message(self, message: aiomqtt.Message) -> None:
        if self.answers is not None:
            self.answers.handle(message.topic.value, message.payload, retained=message.retain)
        if not message.topic.value.endswith(f"/{STATUS_KIND}"):
            return
        try:
            device, report = read_node_message(self.prefix, message.topic.value, message.payload)
        except (ForeignMessage, ProtocolError) as exc:
            log.debug("bridge: ignoring %s: %s", message.topic.value[:200], exc)
            return
        if isinstance(report, Status):
            self.seqs.on_status(device, report)


__all__ = ["NextSeqs", "TargetLink"]
