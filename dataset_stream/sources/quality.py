"""Checks a user's labelled data must pass before it becomes a benchmark (``csv:``, ``npz:``).

A continual-learning scenario needs at least two classes, at least two sessions (one to train
on, one held out for testing), at least :data:`MIN_TRAIN_PER_CLASS` samples of every class in
the training sessions (the factory model and the events learn from them) and at least one of
every class in the test sessions (else accuracy cannot say whether that class was learned).
Each failure is one :class:`~dataset_stream.errors.DataError` naming the field, the class or
session, and where its first row is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from dataset_stream.errors import DataError

__all__ = ["MIN_TRAIN_PER_CLASS", "Labelled", "default_test_sessions"]

#: Samples of each class the training sessions must hold at least.
MIN_TRAIN_PER_CLASS: Final = 2


def default_test_sessions(sessions: Sequence[int]) -> tuple[int, ...]:
    """The held-out sessions when none are named: the last ``max(1, round(3 * S / 11))`` of the
    ``S`` sorted sessions (CORe50's 3 of 11)."""
    ordered = sorted(sessions)
    return tuple(ordered[-max(1, round(3 * len(ordered) / 11)) :])


@dataclass(frozen=True, slots=True, eq=False)
class Labelled:
    """Labels and sessions of a user's samples, with what names them in messages.

    ``y`` and ``session`` are int64 ``[N]``; ``classes[k]`` names label ``k``. ``where(i)`` says
    where sample ``i`` comes from (``line 17``, ``index 17``); ``session_name(s)`` shows session
    ``s`` as the file spells it. ``unit`` is what a sample is called (``window``, ``sample``).
    """

    source: str
    y: np.ndarray
    session: np.ndarray
    classes: tuple[str, ...]
    label_field: str
    session_field: str
    where: Callable[[int], str]
    session_name: Callable[[int], str] = str
    unit: str = "sample"

    def check(self, test_sessions: Sequence[int]) -> None:
        """Raise :class:`DataError` for the first problem (see the module docstring)."""
        sessions = np.unique(self.session)
        if len(sessions) < 2:
            raise DataError(
                f"{self.source}: field {self.session_field!r} holds one session only "
                f"({self.session_name(int(sessions[0]))!r}); at least 2 are needed, one to "
                "train on and one held out for testing",
                field=self.session_field,
            )
        if set(sessions.tolist()) <= set(test_sessions):
            raise DataError(
                f"{self.source}: every session of field {self.session_field!r} is a test "
                "session; leave at least one to train on",
                field=self.session_field,
            )
        present = np.unique(self.y)
        if len(self.classes) < 2 or len(present) < 2:
            only = self.classes[int(present[0])] if len(present) else "nothing"
            raise DataError(
                f"{self.source}: field {self.label_field!r} holds one class only ({only!r}); "
                "a continual-learning scenario needs at least 2",
                field=self.label_field,
            )
        is_test = np.isin(self.session, np.asarray(test_sessions, dtype=np.int64))
        test_names = ", ".join(self.session_name(s) for s in test_sessions)
        for label, name in enumerate(self.classes):
            rows = self.y == label
            first = np.flatnonzero(rows)
            at = f" (first at {self.where(int(first[0]))})" if len(first) else ""
            train = int(np.sum(rows & ~is_test))
            if train < MIN_TRAIN_PER_CLASS:
                raise DataError(
                    f"{self.source}: class {name!r} of field {self.label_field!r} has {train} "
                    f"{self.unit}(s) in the training sessions{at}; at least "
                    f"{MIN_TRAIN_PER_CLASS} are needed",
                    field=self.label_field,
                    row=None,
                )
            if not np.any(rows & is_test):
                raise DataError(
                    f"{self.source}: class {name!r} of field {self.label_field!r} has no "
                    f"{self.unit} in the test sessions ({test_names}){at}; record it in a test "
                    "session too, or choose other test sessions",
                    field=self.label_field,
                )
