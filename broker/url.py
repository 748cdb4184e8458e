"""Broker URLs: ``mqtt://[user:pass@]host:port`` and ``mqtts://`` (TLS).

Every command parses its ``--broker`` option here and nowhere else. Credentials may come from
the URL, a password file, or the environment (``VEGA_EMU_MQTT_USERNAME`` /
``VEGA_EMU_MQTT_PASSWORD``); the password never appears in ``str()``, ``repr()`` or an error.

An error shows the URL as :func:`mask_url` prints it, on every path: a URL is malformed in ways
the parser cannot foresee (``stream:PW@host``, ``mqtt:/...``, ``mqtt//...``), so where the
password would be is found without trusting the rest of the URL.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from broker.errors import BrokerURLError

ENV_USERNAME = "VEGA_EMU_MQTT_USERNAME"
ENV_PASSWORD = "VEGA_EMU_MQTT_PASSWORD"
ENV_CA_FILE = "VEGA_EMU_MQTT_CA_FILE"

_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
MASK = "***"
#: What may follow a host's ``:`` and still be shown: a port number (of any size), then maybe a
#: path, query or fragment. Anything else after the colon may be a password typed without its
#: ``@host`` (``mqtt://stream:PW``).
_SHOWN_PORT = re.compile(r"[0-9]*(?:[/?#].*)?", re.DOTALL)


@dataclass(frozen=True, slots=True)
class BrokerURL:
    """Where and how to reach an MQTT broker."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise BrokerURLError("broker URL has no host")
        if not 0 < self.port < 65536:
            raise BrokerURLError(f"broker port {self.port} is outside 1..65535")
        if self.password is not None and self.username is None:
            raise BrokerURLError("broker URL has a password but no user name")
        if self.ca_file is not None and not self.tls:
            raise BrokerURLError("a CA file only makes sense with mqtts://")

    @property
    def scheme(self) -> str:
        return "mqtts" if self.tls else "mqtt"

    def __str__(self) -> str:
        """The URL with the password masked: safe to print and log."""
        user = ""
        if self.username is not None:
            user = self.username + (":***" if self.password is not None else "") + "@"
        return f"{self.scheme}://{user}{self.host}:{self.port}"

    def with_credentials(self, username: str | None, password: str | None) -> BrokerURL:
        return BrokerURL(self.host, self.port, self.tls, username, password, self.ca_file)

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        try:
            return ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file is not None else None
            )
        except (OSError, ssl.SSLError) as exc:  # ssl's FileNotFoundError does not name the file
            raise BrokerURLError(f"cannot use the CA file {self.ca_file}: {exc}") from exc

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`aiomqtt.Client` (hostname, port, credentials, TLS)."""
        kwargs: dict[str, Any] = {"hostname": self.host, "port": self.port}
        if self.username is not None:
            kwargs["username"] = self.username
            kwargs["password"] = self.password
        context = self.ssl_context()
        if context is not None:
            kwargs["tls_context"] = context
        return kwargs


def parse_broker_url(
    url: str,
    *,
    ca_file: str | Path | None = None,
    password_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> BrokerURL:
    """Parse ``mqtt://[user[:pass]@]host[:port]`` or ``mqtts://...``.

    The password comes from the URL, else from ``password_file`` (its first line), else from
    ``VEGA_EMU_MQTT_PASSWORD``; a user name missing from the URL from ``VEGA_EMU_MQTT_USERNAME``;
    the CA file from ``ca_file`` or ``VEGA_EMU_MQTT_CA_FILE``. The user part ends at the last
    ``@``, so a password may hold ``/``, ``?``, ``#`` or ``@`` as typed (percent-encoding works
    too). No error message ever holds any part of the password.
    """
    env = os.environ if environ is None else environ
    shown = mask_url(url)  # the only form of the URL an error may hold
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not sep or scheme not in _DEFAULT_PORTS:
        raise BrokerURLError(f"broker URL {shown!r} must start with mqtt:// or mqtts://")
    try:
        parts = urlsplit(f"{scheme}://{hostpart}")
        port = parts.port
    except ValueError:
        parts = None  # raised below, outside the handler: no exception context holds the URL
    if parts is None:
        raise BrokerURLError(
            f"cannot parse broker URL {shown!r}: want host or host:port with a port in 1..65535"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BrokerURLError(f"broker URL {shown!r} must not have a path, query or fragment")
    if not parts.hostname:
        raise BrokerURLError(f"broker URL {shown!r} has no host")
    user_text, colon, password_text = userinfo.partition(":")
    if "@" in user_text:  # user@password@host: a typo that would show the password as a name
        raise BrokerURLError(
            f"broker URL {shown!r}: the user name holds an '@'; a password goes after ':' "
            "(user:password@host), an '@' in a user name is written %40"
        )
    username = unquote(user_text) if at and user_text else env.get(ENV_USERNAME)
    password = unquote(password_text) if colon else None
    if password is not None and password_file is not None:
        raise BrokerURLError("give the password once: in the URL or in --password-file, not both")
    if password is None and password_file is not None:
        password = _read_password(Path(password_file))
    if password is None and username is not None:
        password = env.get(ENV_PASSWORD)
    tls = scheme == "mqtts"
    ca = ca_file if ca_file is not None else env.get(ENV_CA_FILE) if tls else None
    ca_path = Path(ca) if ca else None
    if ca_path is not None and not ca_path.is_file():
        raise BrokerURLError(f"CA file {ca_path} does not exist")
    return BrokerURL(
        host=parts.hostname,
        port=port if port is not None else _DEFAULT_PORTS[scheme],
        tls=tls,
        username=username or None,
        password=password,
        ca_file=ca_path,
    )


def _read_password(path: Path) -> str:
    """The first line of a password file (errors name the file, never its content)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise BrokerURLError(f"cannot read password file {path}: {reason}") from None
    password = text.splitlines()[0] if text else ""
    if not password:
        raise BrokerURLError(f"password file {path} is empty")
    return password


def mask_url(text: str) -> str:
    """``text`` (any string given as a broker URL) safe to print, however malformed it is.

    Everything before the last ``@`` -- where a password is whenever there is one -- becomes
    ``***``, except a leading ``mqtt://`` or ``mqtts://``; what follows a host's ``:`` is
    masked too unless it is a port number (possibly with a path). So
    ``mqtt://alice:pw@h:1`` -> ``mqtt://***@h:1``, ``stream:PW@h`` and ``mqtt:stream:PW@h``
    -> ``***@h``, ``mqtt://stream:PW`` -> ``mqtt://stream:***``.
    """
    scheme = next((s for s in ("mqtt://", "mqtts://") if text.startswith(s)), "")
    _, at, hostpart = text[len(scheme) :].rpartition("@")
    return f"{scheme}{MASK if at else ''}{at}{_mask_port(hostpart)}"


def _mask_port(hostpart: str) -> str:
    """``host:port...`` with anything after the host's colon that is not a port masked."""
    bracket = hostpart.find("]") + 1 if hostpart.startswith("[") else 0  # [v6 address]
    host, colon, rest = hostpart[bracket:].partition(":")
    if not colon or _SHOWN_PORT.fullmatch(rest):
        return hostpart
    return f"{hostpart[:bracket]}{host}:{MASK}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
