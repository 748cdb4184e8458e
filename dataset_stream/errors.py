"""Exceptions of the :mod:`dataset_stream` package, the wire protocol's included::

    DatasetStreamError                  catch this to catch any of the below
    ├── ProtocolError (ValueError)      a payload or message that breaks wire contract v1 (has
    │   │                               ``.code``, one of :data:`ERROR_CODES`)
    │   └── DesiredRefused              a desired state a device cannot apply (``.version``,
    │                                   ``.field``: the setting at fault)
    ├── ForeignMessage                  a message that is not a node's report (another topic,
    │                                   another device)
    ├── UnsupportedSchema (ValueError)  a JSON Schema that the protocol's fast checker cannot
    │                                   compile (a keyword it does not implement)
    ├── SourceError (ValueError)        a data source that cannot be loaded (bad spec, missing
    │   │                               or bad files)
    │   ├── DataError                   a user's data file with bad data: a bad cell or value
    │   │                               (naming its row and field), one class only, too few
    │   │                               samples of a class, too few sessions
    │   └── UnsafePickleError           a pickled data file that names a global the restricted
    │                                   unpickler does not allow
    ├── ScenarioError (ValueError)      a scenario that cannot be built from a source
    ├── PacingError (ValueError)        a pacing value out of range (cadence, speed, stagger,
    │                                   inference rate)
    ├── PublishError                    the broker cannot be reached, or a device stopped
    │                                   acknowledging
    └── SeqsRefused                     a producer refused to start: what it would send was
                                        learned before, or a device has no events left

The errors of :mod:`dataset_stream.protocol` (the first three) are defined here too and
re-exported there, so that a node imports the protocol and nothing else of this package. The
``ValueError`` ones describe a bad value: callers that only know that much can catch
``ValueError``. This module imports nothing from the project.
"""

from __future__ import annotations

from typing import Final

#: Every ``ProtocolError.code``; the codes are part of the wire contract (``error`` messages).
ERROR_CODES: Final = frozenset(
    {
        "bad_format",
        "bad_shape",
        "bad_dtype",
        "bad_label",
        "non_finite",
        "too_large",
        "bad_metadata",
        "stale_seq",
    }
)


class DatasetStreamError(Exception):
    """Base class of every error raised by :mod:`dataset_stream`."""


class ProtocolError(DatasetStreamError, ValueError):
    """A payload or message that breaks the wire contract.

    ``code`` is one of :data:`ERROR_CODES`; ``seq`` is the batch sequence number when it could be
    read from the payload (a node reports it in its ``error`` message and, for ``stale_seq``,
    acknowledges that ``seq`` without applying it again).
    """

    def __init__(self, code: str, message: str, *, seq: int | None = None) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown protocol error code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.seq = seq

    def to_message(self, device: str) -> dict[str, object]:
        """The ``error`` message a node publishes for this failure (see ``schemas/error.json``)."""
        out: dict[str, object] = {"device": device, "code": self.code, "message": self.message}
        if self.seq is not None:
            out["seq"] = self.seq
        return out


class DesiredRefused(ProtocolError):
    """A desired state a device cannot apply (docs/protocol.md, "The downlink"): ``version``
    (None when it could not be read) and the ``field`` at fault (``"settings.lr_bits"``,
    ``"version"``, ...); ``reason`` says what is wrong with it."""

    def __init__(self, version: int | None, field: str, reason: str) -> None:
        super().__init__("bad_format", f"desired version {version}: {field}: {reason}")
        self.version = version
        self.field = field
        self.reason = reason


class ForeignMessage(DatasetStreamError):
    """A message that is not one node's report: not a node's telemetry, status or error topic,
    or a report naming another device than its topic."""


class UnsupportedSchema(DatasetStreamError, ValueError):
    """A schema uses a keyword (or a keyword value) the fast checker does not implement."""


class SourceError(DatasetStreamError, ValueError):
    """A data source that cannot be loaded."""


class DataError(SourceError):
    """A user's data file (``csv:``, ``npz:``) holds data that cannot be used. The message names
    the file, the row (a CSV line, an array index) and the field (a column, an array) of the
    first bad value; ``row`` and ``field`` hold them too, None for a problem of the whole file
    (one class only, too few sessions)."""

    def __init__(self, message: str, *, field: str | None = None, row: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.row = row


class UnsafePickleError(SourceError):
    """A pickled data file names a global outside the restricted unpickler's allowed ones
    (:mod:`dataset_stream.sources.npy_object`); nothing of it was run."""


class ScenarioError(DatasetStreamError, ValueError):
    """A continual-learning scenario that cannot be built."""


class PacingError(DatasetStreamError, ValueError):
    """A :class:`~dataset_stream.pacing.Pacing` value out of range.

    ``field`` names the field (``cadence_s``, ``speed``, ``stagger``, ``infer_per_s``), ``value``
    is what it was given, ``reason`` says what is wrong with it, naming the value (a command line
    shows ``reason`` next to its own flag).
    """

    def __init__(self, field: str, value: object, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason


class PublishError(DatasetStreamError):
    """The stream could not be delivered: broker unreachable or a device not acknowledging."""


class SeqsRefused(DatasetStreamError):
    """A producer refused to start: what it would send was learned before (an explicit first
    seq at or below a device's last seq), or a device has no events left. Nothing was sent."""


__all__ = [
    "ERROR_CODES",
    "DataError",
    "DatasetStreamError",
    "DesiredRefused",
    "ForeignMessage",
    "PacingError",
    "ProtocolError",
    "PublishError",
    "ScenarioError",
    "SeqsRefused",
    "SourceError",
    "UnsafePickleError",
    "UnsupportedSchema",
]
