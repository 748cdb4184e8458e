"""Where live samples come from: a file (``--follow``: ``tail -f``), standard input, or an MQTT
topic filter of the user's own broker. Each source is an async iterator of raw :class:`Record`
objects; nothing here looks inside a record beyond splitting lines and CSV cells.

- A file or standard input holds JSON lines, or CSV with a header line (cells split by
  :mod:`csv`; a quoted cell may not hold a newline). Blank lines are skipped; a line longer than
  ``max_record_bytes`` is cut off and handed on as ``oversized``. With ``follow`` a file is read
  as it grows: when it shrinks (truncated) it is read again from its start, when the path names
  another file (rotated) the old one is read to its end and the new one from its start; a CSV
  file then starts with its header again.
- An MQTT source (:class:`MqttSource`, read by :mod:`dataset_stream.bridge.mqtt_source`) is a
  topic filter; the topic level under its first ``+`` names the device.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import os
import stat
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Final

from dataset_stream.bridge.samples import Record, RecordKind
from dataset_stream.errors import SourceError

if TYPE_CHECKING:
    from broker.url import BrokerURL

log = logging.getLogger(__name__)

MAX_RECORD_BYTES: Final = 4 * 1024 * 1024
CHUNK_BYTES: Final = 64 * 1024
POLL_S: Final = 0.25


class Format(StrEnum):
    """How records are written: ``auto`` (CSV for a ``.csv`` file, else JSON lines; MQTT: JSON
    or raw by the payload's first byte), ``json``, ``csv`` (files) or ``raw`` (MQTT)."""

    auto = "auto"
    json = "json"
    csv = "csv"
    raw = "raw"


@dataclass(frozen=True, slots=True)
class FileSource:
    path: Path
    follow: bool = False


@dataclass(frozen=True, slots=True)
class StdinSource:
    pass


@dataclass(frozen=True, slots=True)
class MqttSource:
    """A topic filter on a broker; ``device_level``: the topic level that names the device."""

    broker: BrokerURL
    topic_filter: str

    def __post_init__(self) -> None:
        levels = self.topic_filter.split("/")
        bad = any(
            ("+" in level and level != "+") or ("#" in level and level != "#") for level in levels
        )
        if not self.topic_filter or bad or "#" in levels[:-1] or "\0" in self.topic_filter:
            raise ValueError(f"{self.topic_filter!r} is not an MQTT topic filter")

    @property
    def device_level(self) -> int | None:
        levels = self.topic_filter.split("/")
        return levels.index("+") if "+" in levels else None


Source = FileSource | StdinSource | MqttSource


def split_source_url(text: str) -> tuple[str, str]:
    """``mqtt://host:port/sensors/+/reading`` -> (``mqtt://host:port``, ``sensors/+/reading``)."""
    scheme, sep, rest = text.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    host, slash, topic_filter = hostpart.partition("/")
    if not sep or not slash or not topic_filter:
        raise ValueError(f"{scheme}{sep}...{host}: give a topic filter after the host, e.g. /a/+/b")
    return f"{scheme}{sep}{userinfo}{at}{host}", topic_filter


def is_finite(source: Source) -> bool:
    """The source ends by itself: a file read without ``follow``, or standard input."""
    return isinstance(source, StdinSource) or (isinstance(source, FileSource) and not source.follow)


# -- files and standard input ------------------------------------------------------------------


async def file_records(
    source: FileSource | StdinSource,
    fmt: Format,
    *,
    on_header: Callable[[Sequence[str]], None] | None = None,
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> AsyncGenerator[Record, None]:
    """The records of a file or standard input, line by line (see the module docstring)."""
    name = str(source.path) if isinstance(source, FileSource) else "stdin"
    is_csv = fmt is Format.csv or (
        fmt is Format.auto and isinstance(source, FileSource) and source.path.suffix == ".csv"
    )
    if fmt is Format.raw:
        raise SourceError("raw float32 payloads come over MQTT only; files are JSON lines or CSV")
    lines = _Lines(max_record_bytes)
    header: list[str] | None = None
    number = 0
    async for chunk in _chunks(source):
        if chunk is None:  # truncated or rotated: what came before is another file
            lines.reset()
            header = None
            continue
        for line, oversized in lines.feed(chunk):
            number += 1
            where = f"{name} line {number}"
            if not oversized and not line.strip():
                continue
            if not is_csv:
                defect = "too_large" if oversized else None
                yield Record(RecordKind.JSON, line, where, time.time(), defect=defect)
            elif header is None:
                header = _header(line, where)
                if on_header is not None:
                    on_header(header)
            else:
                yield _csv_record(header, line, where, oversized)


def _header(line: bytes, where: str) -> list[str]:
    try:
        cells = next(csv.reader([line.decode("utf-8")]))
    except (UnicodeDecodeError, csv.Error, StopIteration) as exc:
        raise SourceError(f"{where}: not a CSV header: {exc}") from None
    names = [c.strip() for c in cells]
    if len(set(names)) != len(names):
        raise SourceError(f"{where}: the CSV header names a column twice")
    return names


def _csv_record(header: list[str], line: bytes, where: str, oversized: bool) -> Record:
    arrival = time.time()
    if oversized:
        return Record(RecordKind.CSV, {}, where, arrival, defect="too_large")
    try:
        cells = next(csv.reader([line.decode("utf-8")]))
    except (UnicodeDecodeError, csv.Error, StopIteration):
        cells = []
    if len(cells) != len(header):
        return Record(RecordKind.CSV, {}, where, arrival, defect="bad_format")
    return Record(RecordKind.CSV, dict(zip(header, cells, strict=True)), where, arrival)


class _Lines:
    """Bytes -> lines; a line longer than ``limit`` becomes one ``(b"", oversized=True)``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._skipping = False

    def feed(self, chunk: bytes) -> list[tuple[bytes, bool]]:
        out: list[tuple[bytes, bool]] = []
        if not chunk:  # the end: what is left is the last line
            if self._buf and not self._skipping:
                out.append((bytes(self._buf), False))
            self.reset()
            return out
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                break
            if self._skipping:
                self._skipping = False
            else:
                self._buf += chunk[start:nl]
                out.append((bytes(self._buf), False))
            self._buf.clear()
            start = nl + 1
        if not self._skipping:
            self._buf += chunk[start:]
            if len(self._buf) > self.limit:
                out.append((b"", True))
                self._buf.clear()
                self._skipping = True
        return out

    def reset(self) -> None:
        self._buf.clear()
        self._skipping = False


async def _chunks(source: FileSource | StdinSource) -> AsyncGenerator[bytes | None, None]:
    """Chunks of the input, ``b""`` once at its end; ``None`` when the file was replaced."""
    if isinstance(source, FileSource):
        async for chunk in _file_chunks(source.path, follow=source.follow):
            yield chunk
        return
    if stat.S_ISREG(os.fstat(0).st_mode):  # stdin redirected from a file
        async for chunk in _file_chunks(Path("/dev/stdin"), follow=False, fd=0):
            yield chunk
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=CHUNK_BYTES)
    pipe = os.fdopen(os.dup(0), "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        while chunk := await reader.read(CHUNK_BYTES):
            yield chunk
        yield b""
    finally:
        transport.close()


async def _file_chunks(
    path: Path, *, follow: bool, fd: int | None = None
) -> AsyncGenerator[bytes | None, None]:
    try:
        f = os.fdopen(os.dup(fd), "rb") if fd is not None else path.open("rb")
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        while True:
            chunk = f.read(CHUNK_BYTES)
            if chunk:
                yield chunk
                await asyncio.sleep(0)
                continue
            if not follow:
                yield b""
                return
            await asyncio.sleep(POLL_S)
            try:
                now = os.stat(path)
            except FileNotFoundError:  # rotated away; the new one is not there yet
                continue
            mine = os.fstat(f.fileno())
            if (now.st_ino, now.st_dev) != (mine.st_ino, mine.st_dev):
                while rest := f.read(CHUNK_BYTES):
                    yield rest
                yield b"\n"  # the old file's last line ends with the file
                f.close()
                f = path.open("rb")
                log.info("%s was rotated; reading the new file from its start", path)
                yield None
            elif now.st_size < f.tell():
                f.seek(0)
                log.warning("%s was truncated; reading it again from its start", path)
                yield None
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        f.close()


__all__ = [
    "CHUNK_BYTES",
    "MAX_RECORD_BYTES",
    "FileSource",
    "Format",
    "MqttSource",
    "Source",
    "StdinSource",
    "file_records",
    "is_finite",
    "split_source_url",
]
