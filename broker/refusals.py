"""Connection failures that retrying cannot fix, told apart from those that may pass.

:func:`permanent_failure` reads an aiomqtt error: a wrong password, an unknown host or a rejected
certificate stays so however often a client tries; a broker that is down or a network that
drops may come back. :class:`Refusals` is the give-up rule of a client that retries on its own
(a node's session, a gateway's): a permanent refusal is said once, retried for ``give_up_s``,
then raised as the client's own error.

A process that holds many clients (a fleet worker: one session per node) would print one line
per client per attempt while its broker is down: :class:`RetryLines` lets the first failure of
each kind through per window and counts the others into the next line that goes out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

log = logging.getLogger(__name__)

#: CONNACK refusals that retrying cannot fix (MQTT 3.1.1 codes and their MQTT 5 reason codes).
_PERMANENT_CONNACK: Final = {
    1: "the broker does not speak this MQTT version",
    2: "the broker refused the client id",
    4: "the broker refused the user name or password",
    5: "the broker refused the login (not authorized)",
    132: "the broker does not speak this MQTT version",
    133: "the broker refused the client id",
    134: "the broker refused the user name or password",
    135: "the broker refused the login (not authorized)",
    138: "the broker has banned this client",
    140: "the broker refused the authentication method",
}
#: Socket and TLS failures that retrying cannot fix, by the text aiomqtt keeps of them (it
#: re-raises connection errors as ``MqttError(str(exc))``, dropping their type).
_PERMANENT_TEXT: Final = {
    "Name or service not known": "the broker's host name does not exist",
    "No address associated with hostname": "the broker's host name has no address",
    "CERTIFICATE_VERIFY_FAILED": "the broker's TLS certificate was rejected",
    "WRONG_VERSION_NUMBER": "the broker does not speak TLS on this port (mqtts:// to mqtt?)",
    "certificate verify failed": "the broker's TLS certificate was rejected",
}


def permanent_failure(exc: aiomqtt.MqttError) -> str | None:
    """Why connecting can never succeed as configured (wrong password, unknown host, rejected
    certificate, ...), or ``None`` for a failure that may pass (broker down, network, timeout)."""
    rc = getattr(exc, "rc", None)
    code = getattr(rc, "value", rc)
    # only a CONNACK carries these codes: other MqttCodeErrors carry paho's own error numbers
    # (a publish on a lost connection is MQTT_ERR_NO_CONN, 4: not a refused password)
    if isinstance(exc, MqttConnectError) and isinstance(code, int):
        return _PERMANENT_CONNACK.get(code)
    text = str(exc)
    return next((why for marker, why in _PERMANENT_TEXT.items() if marker in text), None)


@dataclass(slots=True)
class RetryLines:
    """Which retry lines to print. Per kind of failure (its text), one client speaks for the
    process: every line of that client goes out, with the count of the same failures of other
    clients held back since its last one; another client takes over when the speaker has been
    silent for ``window_s``. A process with one client prints every line."""

    window_s: float = 10.0
    _kinds: dict[str, tuple[str, float, int]] = field(default_factory=dict)  # speaker, at, held

    def admit(self, kind: str, who: str, now_s: float) -> int | None:
        """``None`` to hold this line back; else the number held back since the last one."""
        speaker, at, held = self._kinds.get(kind, (who, now_s, 0))
        if speaker != who and now_s - at < self.window_s:
            self._kinds[kind] = (speaker, at, held + 1)
            return None
        if len(self._kinds) > 1000:  # kinds are error texts: few, but never unbounded
            self._kinds.clear()
        self._kinds[kind] = (who, now_s, 0)
        return held


#: The process's retry lines (every client of a process shares its standard error).
RETRY_LINES: Final = RetryLines()


@dataclass(slots=True)
class Refusals:
    """A client the broker refuses for good (:func:`permanent_failure`): say so once, keep
    trying for ``give_up_s``, then raise ``gave_up(message)``, the client's own error (at
    once, without the line before it, for ``give_up_s`` 0). Any other outcome resets it."""

    who: str
    give_up_s: float
    gave_up: Callable[[str], Exception]
    since: float | None = None  # loop time (s) of the first refusal in a row

    def clear(self) -> None:
        self.since = None

    def failed(self, broker: object, exc: aiomqtt.MqttError, delay_s: float, now_s: float) -> None:
        """After a connection failed (at loop time ``now_s``): one that may pass is logged (a
        retry in ``delay_s``); a refusal counts toward giving up (``gave_up`` raised once
        ``give_up_s`` is over)."""
        why = permanent_failure(exc)
        if why is None:
            self.since = None
            held = RETRY_LINES.admit(str(exc), self.who, now_s)
            if held is not None:
                more = f" (and {held} more such failure(s) of other clients)" if held else ""
                log.warning("%s: MQTT %s; reconnecting in %.1f s%s", self.who, exc, delay_s, more)
            return
        if self.give_up_s <= 0:  # no retry: the error itself is the one line
            raise self.gave_up(f"{self.who}: cannot connect to {broker}: {why} ({exc})")
        if self.since is None:
            self.since = now_s
            log.error(
                "%s: cannot connect to %s: %s (%s); trying again for %.0f s, then giving up",
                self.who,
                broker,
                why,
                exc,
                self.give_up_s,
            )
        if now_s - self.since >= self.give_up_s:
            raise self.gave_up(
                f"{self.who}: gave up connecting to {broker} after "
                f"{now_s - self.since:.0f} s: {why} ({exc})"
            )


__all__ = ["RETRY_LINES", "Refusals", "RetryLines", "permanent_failure"]
