"""Mosquitto ACL and password files for a fleet.

Rules (wire contract v1, topic prefix ``vega`` by default):

- device ``{id}``: read ``{prefix}/{id}/batch``, ``eval``, ``infer`` and ``desired`` (an
  operator's desired state, docs/protocol.md, "The downlink"), the pushed heads
  ``{prefix}/heads/+/weights`` and the shared eval sets ``{prefix}/evalsets/+/set``
  (docs/protocol.md, "Eval sets shared by reference"); write ``{prefix}/{id}/telemetry``,
  ``status``, ``error``, ``prediction``, ``fault`` (an injected fault it reports,
  docs/faults.md) and ``reported`` -- its own topics only;
- gateway ``gw-{first}-{count}`` (the shared connection of one ``vega-emu fleet --connection
  shared`` worker, :func:`device.fleet.shard.gateway_id`): the device rules of its devices --
  the ``count`` devices of the ACL's device list from ``first`` on (:func:`gateway_devices`) --
  and write its own status ``{prefix}/gateway/gw-{first}-{count}/status`` (its last will too);
  never another gateway's status, nor another gateway's devices;
- user ``stream``: write every device's ``batch``, ``eval`` and ``infer`` and the shared eval
  sets ``{prefix}/evalsets/+/set``; read ``telemetry``,
  ``error``, ``status`` (the closed-loop stream waits for them) and ``prediction``;
- user ``monitor``: read every device's ``telemetry``, ``status``, ``error``, ``prediction``,
  ``fault``, ``desired`` and ``reported``, every gateway's status ``{prefix}/gateway/+/status``
  (a gateway that goes offline takes its devices with it: they have no last will of their
  own) and every rollout's state ``{prefix}/rollout/+/state``;
- user ``operator`` (``vega-emu ctl`` and ``vega-emu rollout``): write every device's
  ``desired``, the pushed heads ``{prefix}/heads/+/weights`` and the rollouts' state
  ``{prefix}/rollout/+/state``; read every device's ``reported``, ``telemetry``, ``status``,
  ``error`` and ``desired``, and the rollouts' state. The only user that writes a desired state.

Service users are named by role: ``stream`` or ``stream-<suffix>``, ``monitor`` or
``monitor-<suffix>``, ``operator`` or ``operator-<suffix>`` (suffix ``[A-Za-z0-9_-]{1,48}``),
and ``gw-{first}-{count}`` for a gateway.
Each gets its role's rules; those names are reserved, never device ids. Several of them exist
because a broker that binds the client id to the user name (``use_username_as_clientid``, see
:mod:`broker.mosquitto`) lets one user hold one connection at a time: each stream or monitor
process that runs at the same time as another needs a user of its own, and so does each
gateway. That binding is also what keeps a gateway's client id, and so its persistent session
and the status it may write, its own.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from broker.errors import BrokerError

DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
STREAM_USER = "stream"
MONITOR_USER = "monitor"
OPERATOR_USER = "operator"
GATEWAY_ROLE = "gateway"
#: ``gw-{first device}-{count}``: a gateway's user, as :func:`device.fleet.shard.gateway_id`
#: names the shared connection of a fleet worker.
GATEWAY_USER = re.compile(r"^gw-(?P<first>[A-Za-z0-9_-]+)-(?P<count>[1-9][0-9]{0,8})$")
#: Every user name that has a role (the gateway ones: at most 64 characters, as any client id).
SERVICE_USER = re.compile(
    rf"^({STREAM_USER}|{MONITOR_USER}|{OPERATOR_USER})(-[A-Za-z0-9_-]{{1,48}})?$"
    r"|^(?=.{1,64}$)gw-[A-Za-z0-9_-]+-[1-9][0-9]{0,8}$"
)
_PBKDF2_ITERATIONS = 101  # what mosquitto_passwd 2.x writes for "$7$" hashes


def acl_text(
    device_ids: Iterable[str], prefix: str = "vega", service_users: Iterable[str] = ()
) -> str:
    """The content of a Mosquitto ``acl_file`` for these devices.

    ``stream``, ``monitor`` and ``operator`` always get their rules; ``service_users`` adds
    more users named by the role rule (``stream-2``, ``monitor-lab``, ``operator-ci``,
    ``gw-node-0000-50``, ...); any other name there is an error, and so is a gateway whose
    devices are not in ``device_ids``.
    """
    devices = list(device_ids)
    rules = {
        STREAM_USER: [
            f"topic write {prefix}/+/batch",
            f"topic write {prefix}/+/eval",
            f"topic write {prefix}/+/infer",
            f"topic write {prefix}/evalsets/+/set",  # one retained set per distinct content
            f"topic read {prefix}/+/telemetry",  # the closed loop (--speed max) paces on these
            f"topic read {prefix}/+/error",
            f"topic read {prefix}/+/status",
            f"topic read {prefix}/+/prediction",
        ],
        MONITOR_USER: [
            f"topic read {prefix}/+/telemetry",
            f"topic read {prefix}/+/status",
            f"topic read {prefix}/+/error",
            f"topic read {prefix}/+/prediction",
            f"topic read {prefix}/+/fault",  # injected faults (docs/faults.md)
            f"topic read {prefix}/+/desired",  # the downlink: desired vs reported
            f"topic read {prefix}/+/reported",
            f"topic read {prefix}/gateway/+/status",
            f"topic read {prefix}/rollout/+/state",
        ],
        OPERATOR_USER: [
            f"topic write {prefix}/+/desired",
            f"topic write {prefix}/heads/+/weights",
            f"topic write {prefix}/rollout/+/state",
            f"topic read {prefix}/+/desired",  # the retained one: the next version is + 1
            f"topic read {prefix}/+/reported",
            f"topic read {prefix}/+/telemetry",
            f"topic read {prefix}/+/status",
            f"topic read {prefix}/+/error",
            f"topic read {prefix}/rollout/+/state",
        ],
    }
    lines = [
        "# generated by vega-emu: each device reads its own batch/eval, writes its own reports"
    ]
    for user in dict.fromkeys([STREAM_USER, MONITOR_USER, OPERATOR_USER, *service_users]):
        role = service_role(user)
        if role == GATEWAY_ROLE:
            lines += [
                f"user {user}",
                f"topic write {prefix}/gateway/{user}/status",
                # its devices' rules, each once (they share the pushed heads' rule)
                *dict.fromkeys(
                    r for d in gateway_devices(user, devices) for r in _device_rules(prefix, d)
                ),
                "",
            ]
        else:
            lines += [f"user {user}", *rules[role], ""]
    seen: set[str] = set()
    for device in devices:
        check_device_id(device)
        if SERVICE_USER.fullmatch(device):
            raise BrokerError(
                f"device id {device!r} is reserved: stream[-...], monitor[-...], "
                "operator[-...] and gw-...-N are service user names"
            )
        if device in seen:
            raise BrokerError(f"device id {device!r} appears twice")
        seen.add(device)
        lines += [f"user {device}", *_device_rules(prefix, device), ""]
    return "\n".join(lines)


def _device_rules(prefix: str, device: str) -> list[str]:
    """What one device may do: read its inputs, the pushed heads and the shared eval sets,
    write its reports."""
    reads = [
        f"topic read {prefix}/{device}/{kind}" for kind in ("batch", "eval", "infer", "desired")
    ]
    writes = [
        f"topic write {prefix}/{device}/{kind}"
        for kind in ("telemetry", "status", "error", "prediction", "fault", "reported")
    ]
    shared = [f"topic read {prefix}/heads/+/weights", f"topic read {prefix}/evalsets/+/set"]
    return [*reads, *shared, *writes]


def gateway_devices(user: str, device_ids: Sequence[str]) -> list[str]:
    """The devices of the gateway user ``gw-{first}-{count}``: ``count`` devices of
    ``device_ids`` (the ACL's list, in fleet order) from ``first`` on -- the ones the fleet
    worker of that gateway runs when the list is the fleet's ids (``--acl-devices N``)."""
    match = GATEWAY_USER.fullmatch(user)
    if match is None:
        raise BrokerError(f"user {user!r} is not a gateway user name (gw-{{first}}-{{count}})")
    first, count = match["first"], int(match["count"])
    try:
        start = list(device_ids).index(first)
    except ValueError:
        raise BrokerError(
            f"gateway {user}: its first device {first!r} is not one of the ACL's devices"
        ) from None
    mine = list(device_ids[start : start + count])
    if len(mine) < count:
        raise BrokerError(
            f"gateway {user}: the ACL has {len(mine)} devices from {first} on, not {count}"
        )
    return mine


def gateway_owns(user: str, device: str) -> bool:
    """Whether the gateway ``gw-{first}-{count}`` speaks for ``device``, from the two names
    alone (a consumer such as the monitor does not know the ACL's device list).

    A fleet names its devices ``{prefix}{index:04d}`` and a gateway after the first of its
    ``count`` devices, so ``first`` = ``{head}{digits}`` owns ``{head}{n}`` for ``n`` from
    ``int(digits)`` to ``int(digits) + count - 1``, written with at least as many digits as
    ``digits`` (``gw-node-9990-20`` owns ``node-9990`` .. ``node-9999`` and ``node-10000`` ..
    ``node-10009``). That is :func:`gateway_devices` for an ACL made of the fleet's ids. A
    ``first`` without an index owns itself only, and a name that is not a gateway's owns
    nothing. When in doubt the answer is no: a consumer then ignores what the gateway says
    about that device, and the device's own status still counts.
    """
    match = GATEWAY_USER.fullmatch(user)
    if match is None:
        return False
    first, count = match["first"], int(match["count"])
    if device == first:
        return True
    index = _INDEXED.fullmatch(first)
    theirs = _INDEXED.fullmatch(device)
    if index is None or theirs is None or theirs["head"] != index["head"]:
        return False
    start, n = int(index["digits"]), int(theirs["digits"])
    width = len(index["digits"])
    return start <= n < start + count and theirs["digits"] == f"{n:0{width}d}"


#: A device id as ``{head}{digits}``: the fleet's ``{prefix}{index:04d}``.
_INDEXED = re.compile(r"(?P<head>.*?)(?P<digits>[0-9]+)")


def service_role(user: str) -> str:
    """``stream``, ``monitor``, ``operator`` or ``gateway``: the role a service user's name
    gives it."""
    match = SERVICE_USER.fullmatch(user)
    if match is None:
        raise BrokerError(
            f"user {user!r} is not a service user name: stream, monitor, operator, "
            "stream-<suffix>, monitor-<suffix>, operator-<suffix> (suffix [A-Za-z0-9_-]{1,48}) "
            "or a gateway, gw-{first}-{count}"
        )
    return match.group(1) or GATEWAY_ROLE


def password_file_users(text: str) -> list[str]:
    """The user names of a password file's text (as :func:`normalize_password_file` writes)."""
    return [line.partition(":")[0] for line in text.splitlines() if line.strip()]


def check_device_id(device: str) -> str:
    if not DEVICE_ID.fullmatch(device):
        raise BrokerError(f"device id {device!r} must match [A-Za-z0-9_-]{{1,64}}")
    return device


def read_device_ids(path: Path) -> list[str]:
    """One device id per line; blank lines and ``#`` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BrokerError(f"cannot read device list {path}: {exc.strerror}") from exc
    ids = [line.strip() for line in text.splitlines()]
    return [check_device_id(i) for i in ids if i and not i.startswith("#")]


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A Mosquitto 2.x ``$7$`` (PBKDF2-SHA512) password hash."""
    salt = os.urandom(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS)
    b64 = base64.b64encode
    return f"$7${_PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def password_file_text(users: Mapping[str, str]) -> str:
    """A Mosquitto ``password_file`` from plain ``{user: password}``."""
    lines = []
    for user, password in users.items():
        if not user or ":" in user or "\n" in user:
            raise BrokerError(f"user name {user!r} cannot go in a password file")
        lines.append(f"{user}:{hash_password(password)}")
    return "\n".join(lines) + "\n"


def read_credentials(source: Path) -> dict[str, str]:
    """``{user: password}`` of a plain ``user:password`` file (the one given to
    ``vega-emu broker --passwords``); a hashed line cannot log anyone in and is an error."""
    out: dict[str, str] = {}
    for number, user, secret in _user_lines(source, "credentials file"):
        if _HASHED.fullmatch(secret):
            raise BrokerError(f"{source}:{number}: a hashed password cannot log in; give it plain")
        out[user] = secret
    return out


def normalize_password_file(source: Path) -> str:
    """Read a password file whose lines are ``user:password`` or ``user:$7$...`` hashes.

    Plain passwords are hashed; lines already hashed by ``mosquitto_passwd`` are kept.
    """
    out = [
        f"{user}:{secret if _HASHED.fullmatch(secret) else hash_password(secret)}"
        for _, user, secret in _user_lines(source, "password file")
    ]
    if not out:
        raise BrokerError(f"password file {source} has no users")
    return "\n".join(out) + "\n"


_HASHED = re.compile(r"\$[67]\$.+")


def _user_lines(source: Path, what: str) -> list[tuple[int, str, str]]:
    """``(line number, user, secret)`` of each ``user:secret`` line; blanks and ``#`` skipped."""
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise BrokerError(f"cannot read {what} {source}: {exc.strerror}") from exc
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, secret = line.partition(":")
        if not sep or not user or not secret:
            raise BrokerError(f"{source}:{number}: expected 'user:password'")
        out.append((number, user, secret))
    return out
