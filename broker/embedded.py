"""The zero-setup broker: amqtt running inside this process.

``EmbeddedBroker(port=0)`` binds a free port on loopback and exposes it as ``.port``. It speaks
MQTT 3.1.1 with QoS 0/1/2, retained messages and persistent sessions (kept in memory: they
survive a client going away, not the broker process). It runs
:class:`~broker.amqtt_fix.ScopedRetainBroker`: amqtt's ``Broker`` with a bug fixed that sent a
connecting client other clients' retained messages.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from broker.errors import BrokerStartError
from broker.url import BrokerURL, free_port

log = logging.getLogger(__name__)
SHUTDOWN_TIMEOUT_S = 5.0


class OpenAuthPlugin(BaseAuthPlugin):
    """Accept every client and keep its session by the MQTT rules.

    amqtt's own ``AnonymousAuthPlugin`` marks every client anonymous, and amqtt drops the
    queued QoS 1 messages of anonymous sessions; the embedded broker is loopback-only and open,
    but persistent sessions (``clean_session=False``) must work exactly as on Mosquitto.
    """

    @dataclass
    class Config:
        """No options."""

    async def authenticate(self, *, session: Session) -> bool:
        return True


def amqtt_config(host: str, port: int, max_connections: int = -1) -> dict[str, Any]:
    """amqtt's broker configuration: one TCP listener on ``host:port``, open authentication."""
    return {
        "listeners": {
            "default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": max_connections}
        },
        "plugins": {"broker.embedded.OpenAuthPlugin": {}},
    }


class EmbeddedBroker:
    """amqtt broker as an async context manager.

    >>> async with EmbeddedBroker(port=0) as b:   # doctest: +SKIP
    ...     print(b.url)
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, max_connections: int = -1):
        if not 0 <= port < 65536:
            raise ValueError(f"port {port} is outside 0..65535")
        self.host = host
        self._requested_port = port
        self._max_connections = max_connections
        self._broker: Any = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the embedded broker is not running")
        return self._port

    @property
    def url(self) -> BrokerURL:
        return BrokerURL(host=self.host, port=self.port)

    async def __aenter__(self) -> Self:
        from broker.amqtt_fix import ScopedRetainBroker  # imported here: amqtt is slow to import

        port = self._requested_port or free_port(self.host)  # amqtt cannot report a port-0 bind
        broker = ScopedRetainBroker(amqtt_config(self.host, port, self._max_connections))
        try:
            await broker.start()
        except Exception as exc:  # amqtt raises its own BrokerError wrapping OSError
            raise BrokerStartError(
                f"embedded broker could not listen on {self.host}:{port}: {exc}"
            ) from exc
        self._broker = broker
        self._port = port
        log.info("embedded broker listening on %s:%d", self.host, port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        broker, self._broker = self._broker, None
        self._port = None
        if broker is not None:
            try:
                async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
                    await asyncio.shield(broker.shutdown())
            except TimeoutError:
                log.warning("embedded broker did not shut down within %.0f s", SHUTDOWN_TIMEOUT_S)
