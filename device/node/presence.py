"""Whether a device is reachable: the switch an availability schedule turns, the session obeys.

A device that goes offline in the field does not say goodbye: its radio drops. A node with a
:class:`Presence` (:class:`device.node.session.NodeSession`) does the same when it is switched
off: on its own session it drops its socket without an MQTT DISCONNECT, so the broker fires its
last will (retained status ``offline``); behind a shared connection it stops reading its inbox
and publishes that status itself, as its gateway would for a sensor it lost. An event in
progress finishes first; nothing is learned while offline. When switched on again it connects
as after any loss; with ``miss`` the broker first forgets what it queued while the device was
away (one clean-session connect), otherwise (``wait``) the queued batches are delivered then,
each learned once. The battery needs nothing
here: a node charges sleep power for the simulated time between its events, offline or not.
"""

from __future__ import annotations

import asyncio

__all__ = ["Presence"]


class Presence:
    """``online`` is set while the device is reachable, ``offline`` while it is not.

    ``miss``: batches sent while offline are lost instead of waiting at the broker.
    ``outages`` counts the times it went offline.
    """

    def __init__(self, *, miss: bool = False) -> None:
        self.miss = miss
        self.online = asyncio.Event()
        self.online.set()
        self.offline = asyncio.Event()
        self.outages = 0
        self._forget = False

    @property
    def is_online(self) -> bool:
        return self.online.is_set()

    def go_offline(self) -> None:
        """Drop off the network now (no-op while offline)."""
        if self.offline.is_set():
            return
        self.online.clear()
        self.offline.set()
        self.outages += 1
        self._forget = self.miss

    def go_online(self) -> None:
        """Come back (no-op while online)."""
        self.offline.clear()
        self.online.set()

    def take_forget(self) -> bool:
        """Whether the next connect must first forget what the broker queued meanwhile (once
        per outage, with ``miss``)."""
        forget, self._forget = self._forget, False
        return forget
