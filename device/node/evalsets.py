"""Which eval set a node holds and which shared one it waits for (docs/protocol.md, "Eval sets
shared by reference").

A device's ``eval`` topic carries either the set itself or an :class:`EvalRef` to a set retained
once on ``{prefix}/evalsets/{sha256}/set``. :class:`EvalBook` decides, without I/O of its own
but the read of the saved set, what the node does with each:

- a reference to the set it holds already (the one saved in its state directory, kept across a
  restart, or one it received whole): nothing to fetch;
- a reference to another set: wanted, until a payload on that set's topic matches it (size and
  SHA-256); one that does not match is refused and the reference stays wanted;
- a set on a shared topic it does not want (a copy a gateway hands every node that follows the
  topic, or a repeat): ignored.

While a referenced set is on its way (at most until a deadline), the batches that arrive are
held here, unacknowledged, and released in arrival order once the set is in use or refused:
the factory model and the first events are then measured on it, as when the set itself comes on
the ``eval`` topic, retained, before any batch.

The nodes of one process (one event loop: a fleet worker) fetch each shared set once
(:class:`SharedSets`, :func:`shared_sets`): the first node that wants it subscribes to its topic
and, once it has the set and it matched, leaves the payload there; the others use it from there
or wait for that fetch instead of each receiving its own copy from the broker.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiomqtt

from dataset_stream.protocol import EvalRef, payload_sha256

__all__ = ["SHARED_SETS_KEPT", "EvalBook", "SetVerdict", "SharedSets", "shared_sets"]

#: Verified shared sets a process keeps for its nodes (the most recent ones; about 1.1 MB each
#: for the digits set): a fleet usually has one.
SHARED_SETS_KEPT: Final = 4


@dataclass(frozen=True, slots=True)
class SetVerdict:
    """What to do with a payload on a shared set's topic: ``use`` it, or not; ``mismatch``: it
    is the wanted set's topic but not its content (answered ``eval_mismatch``), with why."""

    use: bool
    mismatch: str | None = None


class EvalBook:
    """The digest of the eval set in use and the reference waited for; see the module docstring.

    ``saved``: where the node keeps its set (its digest is read from there the first time a
    reference asks, so a restarted node knows what it holds without hashing at every start).
    """

    def __init__(self, saved: Path) -> None:
        self._saved = saved
        self._held: str | None = None
        self._read = False
        self.wanted: EvalRef | None = None
        self._held_batches: list[aiomqtt.Message] = []
        self.holding = asyncio.Event()  # set while batches are held for a wanted set
        self.deadline = 0.0  # loop time until which they are

    @property
    def waiting(self) -> bool:
        """Whether batches are held for a wanted set now."""
        return self.holding.is_set()

    def hold_batches(self, deadline: float) -> None:
        """Hold the batches that arrive from now on, until the set comes or ``deadline``."""
        if not self.holding.is_set():
            self.deadline = deadline
            self.holding.set()

    def defer(self, message: aiomqtt.Message) -> bool:
        """Keep ``message`` (a batch) for later if batches are held now; else False."""
        if not self.holding.is_set():
            return False
        self._held_batches.append(message)
        return True

    def release(self) -> list[aiomqtt.Message]:
        """The held batches, in arrival order; batches are no longer held."""
        self.holding.clear()
        held, self._held_batches = self._held_batches, []
        return held

    @property
    def held(self) -> str | None:
        """The SHA-256 of the set in use (None: none)."""
        if not self._read:
            self._read = True
            try:
                self._held = payload_sha256(self._saved.read_bytes())
            except OSError:
                self._held = None
        return self._held

    def referenced(self, ref: EvalRef) -> bool:
        """A reference arrived: True when its set must be fetched (it is now wanted)."""
        if ref.sha256 == self.held:
            self.wanted = None
            return False
        self.wanted = ref
        return True

    def shared(self, sha256: str, payload: bytes) -> SetVerdict:
        """A payload on the shared set ``sha256``'s topic: use it only if it is the wanted set."""
        wanted = self.wanted
        if wanted is None or wanted.sha256 != sha256:
            return SetVerdict(use=False)
        if not wanted.matches(payload):
            got = f"{len(payload)} B, SHA-256 {payload_sha256(payload)}"
            want = f"{wanted.size} B, SHA-256 {wanted.sha256}"
            return SetVerdict(use=False, mismatch=f"shared eval set is {got}, not {want}: unused")
        return SetVerdict(use=True)

    def used(self, payload: bytes, sha256: str | None = None) -> None:
        """The node now evaluates on ``payload``: the wanted set, or one that came whole on its
        ``eval`` topic (it replaced the retained reference there, so nothing is wanted now)."""
        self._held = sha256 if sha256 is not None else payload_sha256(payload)
        self._read = True
        self.wanted = None


class SharedSets:
    """The shared eval sets of one event loop's nodes: each set's verified payload, or the
    fetch of it in progress (a future the fetching node resolves with the payload, or with None
    when it gave up: mismatch, refused subscription, lost connection, stop).

    Keyed by the set's SHA-256; only a payload that matched its reference is kept, and only the
    ``kept`` most recent. ``subscriptions`` counts the nodes of the loop that subscribed to
    each set's topic (what the sharing saves is visible there).
    """

    def __init__(self, kept: int = SHARED_SETS_KEPT) -> None:
        self._kept = kept
        self._sets: OrderedDict[str, bytes] = OrderedDict()
        self._fetches: dict[str, asyncio.Future[bytes | None]] = {}
        self.subscriptions: Counter[str] = Counter()

    def payload(self, sha256: str) -> bytes | None:
        """The verified set ``sha256``, if a node of the loop has it."""
        return self._sets.get(sha256)

    def fetching(self, sha256: str) -> asyncio.Future[bytes | None] | None:
        """The fetch of set ``sha256`` in progress, if any."""
        return self._fetches.get(sha256)

    def claim(self, sha256: str) -> asyncio.Future[bytes | None]:
        """A node starts fetching set ``sha256``: the others wait for the returned future."""
        fetch = self._fetches.get(sha256)
        if fetch is None:
            fetch = asyncio.get_running_loop().create_future()
            self._fetches[sha256] = fetch
        return fetch

    def fetched(self, sha256: str, payload: bytes) -> None:
        """A node has set ``sha256`` and it matched its reference: kept, the waiters woken."""
        self._sets[sha256] = payload
        self._sets.move_to_end(sha256)
        while len(self._sets) > self._kept:
            self._sets.popitem(last=False)
        fetch = self._fetches.pop(sha256, None)
        if fetch is not None and not fetch.done():
            fetch.set_result(payload)

    def abandon(self, sha256: str, fetch: asyncio.Future[bytes | None]) -> None:
        """The node fetching set ``sha256`` gave up: its waiters are woken empty-handed."""
        if self._fetches.get(sha256) is fetch:
            del self._fetches[sha256]
        if not fetch.done():
            fetch.set_result(None)


_SHARED_SETS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SharedSets] = (
    weakref.WeakKeyDictionary()
)


def shared_sets() -> SharedSets:
    """The running event loop's :class:`SharedSets`.

    Per loop, not per process: its futures belong to one loop, and the nodes that share a
    connection's worth of sets are those of one loop (a fleet worker); a new loop (a test, a
    restarted worker) starts empty, and the registry goes with its loop.
    """
    loop = asyncio.get_running_loop()
    sets = _SHARED_SETS.get(loop)
    if sets is None:
        sets = _SHARED_SETS[loop] = SharedSets()
    return sets
