"""The one log line of every vega-emu process off a terminal: ISO-8601 time, level, logger,
message, one record per line (a file, a pipe, a container's log; a fleet's worker processes)::

    2026-07-12T01:36:17.123+02:00 WARNING dataset_stream.bridge: message

A message or traceback of several lines stays on its line, each line break written ``\\n``, so
that grep and log collectors see one record per line.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Final

__all__ = ["LINE_FORMAT", "OneLineFormatter", "one_line_logging"]

#: The fields of a plain log line.
LINE_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class OneLineFormatter(logging.Formatter):
    """:data:`LINE_FORMAT` with an ISO-8601 time (milliseconds and the UTC offset), on one
    line: line breaks in the message or its traceback are written ``\\n``."""

    def __init__(self) -> None:
        super().__init__(LINE_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        local = datetime.fromtimestamp(record.created).astimezone()
        return local.isoformat(timespec="milliseconds")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")


def one_line_logging(level: int) -> None:
    """Standard error as :class:`OneLineFormatter` lines from ``level`` up (a process of its
    own, such as a fleet worker, whose parent says the rest)."""
    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
