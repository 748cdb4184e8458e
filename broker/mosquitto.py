"""Run Mosquitto as a child process: config file, persistence, passwords, ACL, TLS.

``Mosquitto`` writes ``mosquitto.conf`` into its data directory, starts ``mosquitto -c`` and
waits until the listener accepts TCP connections; leaving the context sends SIGTERM (Mosquitto
then saves its persistence database) and waits for the process to end.

With a password file the client id is bound to the user name (``use_username_as_clientid``):
whatever client id a client sends, Mosquitto uses its user name, so one device's credentials
cannot take over another device's connection or persistent session. With ``tls`` the one
listener speaks TLS only (``mqtts://``); there is no plain port next to it. The config bounds
the packets and queues Mosquitto takes (:mod:`broker.limits`).

The data directory holds the password hashes, the ACL and the persistence database: it is made
0700 (an existing one too) and every file written into it is created 0600, the log included.
Started by root, the broker stays root (``user`` is root's own name): Mosquitto would otherwise
switch to its ``mosquitto`` user, which can neither enter that 0700 directory nor read the 0600
password file; started by anyone else, there is no ``user`` line (Mosquitto switches users
only when it runs as root).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from broker.acl import SERVICE_USER, acl_text, normalize_password_file, password_file_users
from broker.errors import BrokerError, BrokerStartError, MosquittoNotFound
from broker.limits import BrokerLimits
from broker.url import BrokerURL, free_port

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
DATA_DIR_MODE = 0o700
FILE_MODE = 0o600


@dataclass(frozen=True, slots=True)
class MosquittoTLS:
    """A TLS listener: the server's certificate and key, and the CA clients trust (PEM files).

    ``ca_file`` is the CA that signed ``cert_file`` (it goes into :attr:`Mosquitto.url`, for
    clients to verify the server with) and, with ``require_certificate``, the CA every client
    certificate must chain to (mutual TLS). ``None``: a certificate from a public CA, which
    clients verify with the system's trust store.
    """

    cert_file: Path
    key_file: Path
    ca_file: Path | None = None
    require_certificate: bool = False

    def __post_init__(self) -> None:
        for what, path in (("certificate", self.cert_file), ("key", self.key_file)):
            if not Path(path).is_file():
                raise BrokerError(f"TLS {what} file {path} does not exist")
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise BrokerError(f"TLS CA file {self.ca_file} does not exist")
        if self.require_certificate and self.ca_file is None:
            raise ValueError("require_certificate needs ca_file: the CA of client certificates")


@dataclass(frozen=True, slots=True)
class MosquittoConfig:
    """What the launcher writes into ``mosquitto.conf``."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port
    persistence: bool = True
    # how often the persistence file is written: a SIGKILL loses what changed since the last save
    autosave_interval_s: int = 60
    password_file: Path | None = None  # lines "user:password" or "user:$7$..." hashes
    acl_devices: tuple[str, ...] | None = None  # None: no ACL
    topic_prefix: str = "vega"
    allow_anonymous: bool | None = None  # default: only when there is no password file
    # client id := user name; default: whenever there is a password file and no anonymous access
    bind_client_id: bool | None = None
    tls: MosquittoTLS | None = None  # None: plain MQTT
    limits: BrokerLimits = field(default_factory=BrokerLimits)  # packet and queue bounds

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f"port {self.port} is outside 0..65535")
        if self.autosave_interval_s < 1:
            raise ValueError(f"autosave_interval_s must be >= 1, got {self.autosave_interval_s}")
        if self.password_file is not None and not Path(self.password_file).is_file():
            raise BrokerError(f"password file {self.password_file} does not exist")
        if self.bind_client_id and self.anonymous:
            raise ValueError(
                "bind_client_id refuses anonymous clients (they have no user name to bind): "
                "it cannot go with allow_anonymous"
            )

    @property
    def anonymous(self) -> bool:
        """Whether clients without a user name are let in."""
        if self.allow_anonymous is None:
            return self.password_file is None
        return self.allow_anonymous

    @property
    def binds_client_id(self) -> bool:
        """Whether Mosquitto replaces each client's id with its user name."""
        if self.bind_client_id is None:
            return self.password_file is not None and not self.anonymous
        return self.bind_client_id


def find_mosquitto() -> str:
    """Path of the mosquitto binary: ``$VEGA_EMU_MOSQUITTO``, else PATH, else /usr/sbin."""
    override = os.environ.get("VEGA_EMU_MOSQUITTO")
    if override is not None:
        if not os.access(override, os.X_OK):
            raise MosquittoNotFound(
                f"VEGA_EMU_MOSQUITTO={override} is not an executable: install the Debian package "
                "mosquitto (apt-get install mosquitto) or unset it"
            )
        return override
    path = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
        None,
    )
    if path is None:
        raise MosquittoNotFound(
            "the mosquitto binary was not found: install the Debian package mosquitto "
            "(apt-get install mosquitto) or use --engine embedded"
        )
    return path


def render_config(config: MosquittoConfig, port: int, *, euid: int | None = None) -> str:
    """The ``mosquitto.conf`` text for ``config`` listening on ``port``; ``euid`` is the user
    that starts the broker (default: this process's)."""
    data = config.data_dir.resolve()
    lines = ["# generated by vega-emu", f"listener {port} {config.host}"]
    if config.tls is not None:
        tls = config.tls
        lines += [
            f"certfile {Path(tls.cert_file).resolve()}",
            f"keyfile {Path(tls.key_file).resolve()}",
            "tls_version tlsv1.2",  # the lowest version accepted
            f"require_certificate {'true' if tls.require_certificate else 'false'}",
        ]
        if tls.ca_file is not None:
            lines.append(f"cafile {Path(tls.ca_file).resolve()}")
    lines += [
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        *config.limits.config_lines(),
    ]
    if (os.geteuid() if euid is None else euid) == 0:
        # root's own name, not $USER: the broker must stay the owner of its 0700 data dir
        lines.append(f"user {pwd.getpwuid(0).pw_name}")
    if config.persistence:
        lines += [
            "persistence true",
            f"persistence_location {data}/",
            "persistence_file mosquitto.db",
            f"autosave_interval {config.autosave_interval_s}",
        ]
    lines.append(f"allow_anonymous {'true' if config.anonymous else 'false'}")
    if config.password_file is not None:
        lines.append(f"password_file {data / 'passwords'}")
    if config.binds_client_id:
        # Mosquitto kicks a connected client when another one connects with the same client id,
        # before any ACL check, and a clean session then wipes the queued batches: bound to the
        # user name, a client id can only be taken over with that user's own password
        lines.append("use_username_as_clientid true")
    if config.acl_devices is not None:
        lines.append(f"acl_file {data / 'acl'}")
    return "\n".join(lines) + "\n"


class Mosquitto:
    """A Mosquitto broker process owned by this object (async context manager)."""

    def __init__(self, config: MosquittoConfig) -> None:
        self.config = config
        self._process: asyncio.subprocess.Process | None = None
        self._port: int | None = None
        self._log = config.data_dir / "mosquitto.log"

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("mosquitto is not running")
        return self._port

    @property
    def pid(self) -> int:
        """The broker's process id (for resource accounting)."""
        if self._process is None:
            raise RuntimeError("mosquitto is not running")
        return self._process.pid

    @property
    def url(self) -> BrokerURL:
        tls = self.config.tls
        if tls is None:
            return BrokerURL(host=self.config.host, port=self.port)
        return BrokerURL(host=self.config.host, port=self.port, tls=True, ca_file=tls.ca_file)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        binary = find_mosquitto()
        config = self.config
        config.data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
        # mkdir's mode is filtered by the umask, and an existing directory keeps its own
        config.data_dir.chmod(DATA_DIR_MODE)
        port = self._port or config.port or free_port(config.host)
        _check_port_free(config.host, port)
        users: list[str] = []
        if config.password_file is not None:
            passwords = normalize_password_file(config.password_file)
            users = password_file_users(passwords)
            _write_private(config.data_dir / "passwords", passwords)
        if config.acl_devices is not None:
            services = [u for u in users if SERVICE_USER.fullmatch(u)]  # stream-2, monitor-lab...
            acl = acl_text(config.acl_devices, config.topic_prefix, services)
            _write_private(config.data_dir / "acl", acl)
        conf = config.data_dir / "mosquitto.conf"
        _write_private(conf, render_config(config, port))
        with _open_private_log(self._log) as log:
            self._process = await asyncio.create_subprocess_exec(
                binary, "-c", str(conf), stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL
            )
        self._port = port
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    async def kill(self) -> None:
        """Kill the broker (SIGKILL), as a crash would: what it had not saved is gone."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.kill()
        await process.wait()

    async def restart(self) -> None:
        """Stop and start again on the same port (persistence survives)."""
        await self.stop()
        await self.start()

    async def _wait_ready(self) -> None:
        assert self._process is not None and self._port is not None
        loop = asyncio.get_running_loop()
        deadline_s = loop.time() + START_TIMEOUT_S
        while loop.time() < deadline_s:
            if self._process.returncode is not None:
                raise BrokerStartError(
                    f"mosquitto exited with status {self._process.returncode}: {self._log_tail()}"
                )
            try:
                async with asyncio.timeout(1.0):
                    _, writer = await asyncio.open_connection(
                        self.config.host, self._port, ssl=_probe_context(self.config)
                    )
            except ssl.SSLError:
                return  # it answered in TLS: up (whether this probe's certificate would pass)
            except (OSError, TimeoutError):
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        raise BrokerStartError(
            f"mosquitto did not accept connections on {self.config.host}:{self._port} "
            f"within {START_TIMEOUT_S:.0f} s: {self._log_tail()}"
        )

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self._log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise BrokerStartError(
                f"mosquitto cannot listen on {host}:{port}: {exc.strerror}"
            ) from exc


def _probe_context(config: MosquittoConfig) -> ssl.SSLContext | None:
    """TLS for the readiness probe: a handshake, no verification (a bare TCP close would make
    Mosquitto log an OpenSSL error); the probe sends no data."""
    if config.tls is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, a file that is 0600 from the moment it exists (an existing one
    is tightened before it is written to)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(fd, FILE_MODE)
        out.write(text)


def _open_private_log(path: Path) -> BinaryIO:
    """The log opened for appending, 0600 (created so, or tightened: it holds client ids,
    user names and addresses)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return os.fdopen(fd, "ab")
