"""Log records of every command: one format, one line per record.

On a terminal, records go through rich on the command's console, so that they print above a
live table or progress bars, with the time of day. They are printed by a thread of their own
(:class:`_TerminalLines`): a record may be logged while the console is drawing -- a finalizer
that the garbage collector runs in the middle of a live table's refresh ("exception was never
retrieved") logs from inside the drawing thread's locks -- and printing it there waits for
locks that the live table's refresh thread holds in the other order, which froze `vega-emu up`
for good. Queued, a record never waits for the console. Anywhere else (a file, a pipe, a container's
log) each record is one plain line, never wrapped::

    2026-07-12T01:36:17.123+02:00 WARNING dataset_stream.bridge: message

with an ISO-8601 time and its offset from UTC; a message or traceback of several lines stays
on its line, each line break written ``\\n``, so that grep and log collectors see one record
per line.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable
from logging.handlers import QueueHandler, QueueListener
from typing import Final

from rich.console import Console
from rich.logging import RichHandler

from device.logs import LINE_FORMAT, OneLineFormatter

__all__ = ["LINE_FORMAT", "OneLineFormatter", "configure_logging"]

#: Time of day on a terminal (ISO 8601's extended time).
TERMINAL_TIME: Final = "%H:%M:%S"


class _Lines(logging.StreamHandler):
    """Plain lines on standard error (the handler this module installs off a terminal)."""


class _TerminalLines(QueueHandler):
    """Rich lines on the command's console (the handler this module installs on a terminal):
    records are queued (``SimpleQueue.put`` is safe even from a finalizer) and one thread of the
    handler's own prints them with a :class:`RichHandler`. :meth:`flush` returns once every
    record queued before it is printed; :meth:`close` (``logging.shutdown`` at exit) too."""

    def __init__(self, console: Console) -> None:
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        super().__init__(records)
        self.rich = RichHandler(
            console=console,
            show_time=True,
            omit_repeated_times=False,
            show_path=False,
            markup=False,
            log_time_format=TERMINAL_TIME,
        )
        self._printer = QueueListener(records, self.rich)
        self._printer.start()
        self._printing = True
        # not the handler's lock: a record logged while the printer is joined must still queue
        self._printer_lock = threading.Lock()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # QueueHandler's prepare folds the traceback into the message as text; the printing
        # thread's RichHandler draws it from exc_info instead, so the record is queued as is
        # (its arguments formatted now, while they are what they were when it was logged)
        prepared = logging.makeLogRecord(record.__dict__)
        prepared.msg = record.getMessage()
        prepared.args = None
        return prepared

    def flush(self) -> None:
        with self._printer_lock:
            if self._printing:
                self._printer.stop()  # prints what is queued, then ends its thread
                self._printer.start()

    def close(self) -> None:
        with self._printer_lock:
            if self._printing:
                self._printing = False
                self._printer.stop()
        self.rich.close()
        super().close()


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
        old.close()
    handler: logging.Handler
    if console.is_terminal:
        handler = _TerminalLines(console)
    else:
        handler = _Lines()  # standard error as it is now
        handler.setFormatter(OneLineFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    for name in verbose:
        logging.getLogger(name).setLevel(logging.INFO)
    return handler
