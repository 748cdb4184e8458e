"""Log records of every command: one format, one line per record.

On a terminal, records go through rich on the command's console, so that they print above a
live table or progress bars, with the time of day. Anywhere else (a file, a pipe, a container's
log) each record is one plain line, never wrapped::

    2026-07-12T01:36:17.123+02:00 WARNING dataset_stream.bridge: message

with an ISO-8601 time and its offset from UTC; a message or traceback of several lines stays
on its line, each line break written ``\\n``, so that grep and log collectors see one record
per line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final

from rich.console import Console
from rich.logging import RichHandler

from device.logs import LINE_FORMAT, OneLineFormatter

__all__ = ["LINE_FORMAT", "OneLineFormatter", "configure_logging"]

#: Time of day on a terminal (ISO 8601's extended time).
TERMINAL_TIME: Final = "%H:%M:%S"


class _Lines(logging.StreamHandler):
    """Plain lines on standard error (the handler this module installs off a terminal)."""


class _TerminalLines(RichHandler):
    """Rich lines on the command's console (the handler this module installs on a terminal)."""


def configure_logging(
    level: int, console: Console, *, verbose: Iterable[str] = ()
) -> logging.Handler:
    """Send the records of ``level`` and above to standard error, as this module says; the
    loggers named in ``verbose`` from INFO up. Returns the handler installed.

    Calling it again replaces the handler it installed before (a command run twice in one
    process logs each record once); handlers installed by others are left alone.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Lines | _TerminalLines)]:
        root.removeHandler(old)
    handler: logging.Handler
    if console.is_terminal:
        handler = _TerminalLines(
            console=console,
            show_time=True,
            omit_repeated_times=False,
            show_path=False,
            markup=False,
            log_time_format=TERMINAL_TIME,
        )
    else:
        handler = _Lines()  # standard error as it is now
        handler.setFormatter(OneLineFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    for name in verbose:
        logging.getLogger(name).setLevel(logging.INFO)
    return handler
