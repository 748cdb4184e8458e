"""Exceptions of the operator's commands (``vega-emu ctl``, ``vega-emu rollout``); the tree of
:mod:`device.errors` goes on::

    OperatorError                    every error of an operator's command on a running fleet
    ├── HaltRuleError (ValueError)   a rollout's halt rule that does not parse
    ├── SettingError (ValueError)    a ``key=value`` that is no desired setting, or a bad value
    ├── LinkError                    the broker could not be reached, or the connection was lost
    └── RolloutError                 a rollout that cannot start (a head, a bundle, the fleet)
"""

from __future__ import annotations

from device.errors import DeviceError


class OperatorError(DeviceError):
    """Base class of every error of ``vega-emu ctl`` and ``vega-emu rollout``."""


class HaltRuleError(OperatorError, ValueError):
    """A halt rule that does not parse; the message says where and what was expected."""


class SettingError(OperatorError, ValueError):
    """A ``key=value`` the operator typed that is no desired setting, or whose value is not one
    that setting takes; the message names the key."""


class LinkError(OperatorError):
    """The broker could not be reached, refused a subscription, or the connection was lost."""


class RolloutError(OperatorError):
    """A rollout that cannot start: an unreadable head, a bundle of another frozen stage, no
    devices to roll out to."""


__all__ = ["HaltRuleError", "LinkError", "OperatorError", "RolloutError", "SettingError"]
