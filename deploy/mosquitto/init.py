"""Write a Mosquitto config for a containerised fleet (mosquitto.conf, passwords, acl), and the
fleet shards' logins.

    python init.py OUT_DIR                        # the broker's config (compose, Kubernetes)
    python init.py --shard-credentials FILE       # one Kubernetes fleet pod's logins
    python init.py --emqx-users FILE              # EMQX's bootstrap users (Kubernetes, large)

run before the broker or the shard starts (compose: the ``mosquitto-init`` service; Kubernetes:
init containers), in the vega-emu image (the rules are :mod:`broker.acl`'s, the same as
``vega-emu broker --passwords ... --acl-devices N``).

**One identity per role.** Every login is a user of its own, and Mosquitto makes each user name
the client id (``use_username_as_clientid``), so a login can only ever be its own client:

- every device ``{PREFIX}{index:04d}`` is a user: it reads its own ``batch``, ``eval`` and
  ``infer`` and the shared eval sets, and writes its own ``telemetry``, ``status``, ``error``
  and ``prediction``;
- every fleet worker's gateway ``gw-{first}-{count}`` is a user (``vega-emu fleet --connection
  shared`` logs each worker in as one): the rules of its devices and its own
  ``gateway/{id}/status``;
- ``stream`` writes every device's inputs and reads their reports; ``monitor`` reads the reports
  and the gateways' statuses. Neither may write a report or read an input, so neither can act
  as a device.

There are no ``pattern`` rules: each rule names its user's own topics. The shards run
``vega-emu fleet --credentials FILE`` with no user in ``--broker``: each node logs in as its
device id (``--connection node``, the deployed default: every device keeps its own last will,
and the shards are sized for it), or each worker as its gateway (``--connection shared``); the
file holds both, so a shard can switch modes without new secrets. Keep ``WORKERS`` equal to the
shards' ``--workers``: the gateway users are named after the workers' id ranges.

**The device ranges** come from the environment: ``DEVICES`` (how many, the stream's
``--devices``), ``SHARD_SIZE`` (each shard's ``-n``; default ``DEVICES``; shard ``k`` runs ids
``k*SHARD_SIZE`` ..), ``WORKERS`` (each shard's ``--workers``, default 1) and ``PREFIX``
(default ``node-``).

**Where the fleet's passwords come from: one of two sources.**

- ``FLEET_CREDENTIALS_FILE`` (compose) names the plain ``user:password`` file(s) the shards
  read. With ``{shard}`` in it (``/roles/fleet-{shard}/fleet-{shard}``) each shard gets a file
  of its own, in a volume of its own, with the logins of its devices and gateways only: a shard
  can act as its own devices and nothing else. A file that does not exist yet is created with
  random passwords (mode 0600), and a login missing from an existing file is added, so
  ``docker compose up`` works without a setup step and passwords already handed out are kept;
  a file that cannot be written must hold every login already (a missing one stops here,
  naming it).
- ``FLEET_KEY_FILE`` (Kubernetes) names a random key (first line; ``make-secrets.py`` makes
  it): each fleet login's password is derived from it, ``HMAC-SHA256(key, user)`` (see
  :func:`derived_password`), so the ``vega-mqtt-fleet`` Secret stays one short line at any
  fleet size (a Secret is at most 1 MiB; 100,000 logins are 4.4 MB) and a changed ``DEVICES``
  needs no new secret. The broker derives every login; each fleet pod derives only its own
  shard's (``--shard-credentials``, its shard from ``SHARD`` or the StatefulSet pod name's
  ordinal in ``POD_NAME``) into a memory volume its fleet container mounts -- the key itself is
  mounted in that init container only. Trust boundary: whoever holds the key (the broker's
  pod, and each fleet pod's init container) can act as every device and gateway of the fleet,
  never as ``stream`` or ``monitor``; a fleet container holds its own shard's logins only.

``STREAM_PASSWORD_FILE`` and ``MONITOR_PASSWORD_FILE`` hold those users' passwords (first line;
created with a random one when missing and writable). ``OPERATOR_PASSWORD_FILE``, optional, does
the same for ``operator`` (``vega-emu ctl`` and ``rollout``: the one user that writes desired
states and heads); without it the ACL still has the operator's rules, and nobody can log in as it.

``PORT`` (default 1883) is the listener, ``DATA_DIR`` (default ``/mosquitto/data``) the
persistence directory, ``MOSQUITTO_USER`` the user a broker started as root switches to (no
``user`` line when unset). Run as root, it gives the credentials and password files to
``CLIENT_UID`` (default 10001, the image's user) and the broker's files to ``BROKER_UID``
(default 1883, the eclipse-mosquitto image's ``mosquitto`` user); every file it writes is
created mode 0600. The config bounds the packets and queues the broker takes as ``vega-emu
broker`` does (:mod:`broker.limits`). At 100,000 devices (200 gateways) it takes about 10 s
and writes a 50 MB ACL and a 12 MB password file (docs/scaling.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from broker.acl import acl_text, password_file_text, read_credentials
from broker.errors import BrokerError
from broker.limits import BrokerLimits

PREFIX = "vega"  # the topic prefix
USERS = {"stream": "STREAM_PASSWORD_FILE", "monitor": "MONITOR_PASSWORD_FILE"}
OPTIONAL_USERS = {"operator": "OPERATOR_PASSWORD_FILE"}
SHARD_FIELD = "{shard}"
GATEWAY_ID_MAX = 64  # a client id's length, as device.fleet.shard.gateway_id cuts it
DERIVATION = b"vega-emu mqtt login v1\x00"  # what a derived password is for (domain separation)


@dataclass(frozen=True, slots=True)
class Shard:
    """One fleet shard: its number, its device ids and its workers' gateway ids."""

    number: int
    devices: tuple[str, ...]
    gateways: tuple[str, ...]

    @property
    def users(self) -> list[str]:
        return [*self.devices, *self.gateways]


def split(ids: Sequence[str], parts: int) -> list[list[str]]:
    """``ids`` in ``parts`` contiguous ranges of sizes differing by at most one, the larger
    first (empty ones dropped): how ``vega-emu fleet --workers`` splits a shard."""
    size, extra = divmod(len(ids), parts)
    out, start = [], 0
    for w in range(parts):
        end = start + size + (1 if w < extra else 0)
        out.append(list(ids[start:end]))
        start = end
    return [part for part in out if part]


def gateway_id(first_device: str, count: int) -> str:
    """The gateway id of a fleet worker, as ``vega-emu fleet`` names it."""
    return f"gw-{first_device}-{count}"[:GATEWAY_ID_MAX]


def plan_shards(devices: int, shard_size: int, workers: int, prefix: str) -> list[Shard]:
    """The shards of a fleet of ``devices`` ids, ``shard_size`` each (the last may be smaller)."""
    if devices < 1 or shard_size < 1 or workers < 1:
        raise SystemExit("DEVICES, SHARD_SIZE and WORKERS must be at least 1")
    shards = []
    for number, start in enumerate(range(0, devices, shard_size)):
        ids = [f"{prefix}{i:04d}" for i in range(start, min(start + shard_size, devices))]
        gateways = tuple(gateway_id(part[0], len(part)) for part in split(ids, workers))
        shards.append(Shard(number, tuple(ids), gateways))
    return shards


def give(path: Path, uid: int) -> None:
    if os.geteuid() == 0:
        os.chown(path, uid, uid)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` into ``path``, created 0600 (an existing file is tightened first)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(fd, 0o600)
        f.write(text)


def read_or_create(path: Path, owner: int) -> str:
    """The password on the first line of ``path``; a random one in a new file if it is missing."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
        give(path, owner)
    lines = path.read_text(encoding="utf-8").splitlines()
    password = lines[0].strip() if lines else ""
    if not password:
        raise SystemExit(f"{path}: the first line is empty")
    return password


def credentials(path: Path, users: Sequence[str], owner: int) -> dict[str, str]:
    """``{user: password}`` for ``users`` from the credentials file ``path``; the logins it
    lacks (all of them if it does not exist) are made up and written into it, if it can be
    written. Logins of other users in it are left alone and not given to the broker."""
    try:
        given = read_credentials(path) if path.exists() else {}
    except BrokerError as exc:
        raise SystemExit(str(exc)) from None
    missing = [u for u in users if u not in given]
    if missing:
        made = {**given, **{u: secrets.token_urlsafe(24) for u in missing}}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_private(path, "".join(f"{u}:{p}\n" for u, p in made.items()))
        except OSError as exc:
            raise SystemExit(
                f"{path} has no password for {len(missing)} of the fleet's logins (e.g. "
                f"{missing[0]}) and cannot be written ({exc.strerror}): generate the file "
                "with this script and the same DEVICES, SHARD_SIZE and WORKERS "
                "(docs/operations.md)"
            ) from None
        give(path, owner)
        given = made
    return {u: given[u] for u in users}


def config(out: Path, port: int, data_dir: str, user: str | None) -> str:
    return "\n".join(
        [
            "# generated by deploy/mosquitto/init.py",
            f"listener {port} 0.0.0.0",
            *([f"user {user}"] if user else []),
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            *BrokerLimits().config_lines(),
            "persistence true",
            f"persistence_location {data_dir.rstrip('/')}/",
            "persistence_file mosquitto.db",
            "autosave_interval 60",
            "allow_anonymous false",
            f"password_file {out / 'passwords'}",
            # each client id is its user name: no login can take another's connection, session
            # or last will (broker/mosquitto.py does the same for vega-emu broker)
            "use_username_as_clientid true",
            f"acl_file {out / 'acl'}",
            "",
        ]
    )


def number(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    text = env.get(name)
    if text is None:
        if default is None:
            raise SystemExit(f"{name} is not set: the fleet's device ranges come from it")
        return default
    try:
        return int(text)
    except ValueError:
        raise SystemExit(f"{name}={text!r} is not a whole number") from None


def derived_password(key: bytes, user: str) -> str:
    """The password of fleet login ``user`` under ``key``: ``HMAC-SHA256(key, DERIVATION +
    user)``, base64url without padding (43 characters, 256 bits). Without the key no login
    tells anything about another."""
    digest = hmac.new(key, DERIVATION + user.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def read_key(path: Path) -> bytes:
    """The fleet key: the first line of ``path`` (at least 32 characters)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SystemExit(f"FLEET_KEY_FILE {path}: {exc.strerror} (make-secrets.py)") from None
    key = lines[0].strip() if lines else ""
    if len(key) < 32:
        raise SystemExit(f"{path}: the fleet key must be at least 32 characters on line one")
    return key.encode()


def fleet_shards(env: Mapping[str, str]) -> list[Shard]:
    """The shards ``DEVICES``, ``SHARD_SIZE``, ``WORKERS`` and ``PREFIX`` describe."""
    if "FLEET_PASSWORD_FILE" in env:
        raise SystemExit(
            "FLEET_PASSWORD_FILE (one 'fleet' login for every node) is no longer read: each "
            "device and gateway is a user of its own; set FLEET_CREDENTIALS_FILE or "
            "FLEET_KEY_FILE, and DEVICES (see the docstring of init.py)"
        )
    devices = number(env, "DEVICES")
    return plan_shards(
        devices,
        number(env, "SHARD_SIZE", devices),
        number(env, "WORKERS", 1),
        env.get("PREFIX", "node-"),
    )


def fleet_logins(env: Mapping[str, str], shards: Sequence[Shard], owner: int) -> dict[str, str]:
    """``{user: password}`` of every device and gateway of ``shards``, from the one source the
    environment names (``FLEET_KEY_FILE`` or ``FLEET_CREDENTIALS_FILE``)."""
    given = [var for var in ("FLEET_KEY_FILE", "FLEET_CREDENTIALS_FILE") if var in env]
    if len(given) != 1:
        raise SystemExit(
            "set one of FLEET_CREDENTIALS_FILE (files of logins) and FLEET_KEY_FILE (a key the "
            f"logins are derived from): the fleet's passwords; found {given or 'neither'}"
        )
    if given == ["FLEET_KEY_FILE"]:
        key = read_key(Path(env["FLEET_KEY_FILE"]))
        return {u: derived_password(key, u) for shard in shards for u in shard.users}
    template = env["FLEET_CREDENTIALS_FILE"]
    files: dict[Path, list[str]] = {}  # credentials file -> the logins it holds
    for shard in shards:
        path = Path(template.replace(SHARD_FIELD, str(shard.number)))
        files.setdefault(path, []).extend(shard.users)
    logins: dict[str, str] = {}
    for path, users in files.items():
        logins |= credentials(path, users, owner)
    return logins


def service_passwords(env: Mapping[str, str], owner: int) -> dict[str, str]:
    users = {}
    for user, var in USERS.items():
        if var not in env:
            raise SystemExit(f"{var} is not set: the file with the {user!r} password")
        users[user] = read_or_create(Path(env[var]), owner)
    for user, var in OPTIONAL_USERS.items():
        if var in env:
            users[user] = read_or_create(Path(env[var]), owner)
    return users


def write(out: Path, env: Mapping[str, str]) -> None:
    """The broker's config, passwords and ACL in ``out``."""
    owner = int(env.get("CLIENT_UID", "10001"))
    users = service_passwords(env, owner)
    shards = fleet_shards(env)
    users |= fleet_logins(env, shards, owner)
    device_ids = [d for shard in shards for d in shard.devices]
    gateways = [g for shard in shards for g in shard.gateways]
    out.mkdir(parents=True, exist_ok=True)
    try:
        acl = acl_text(device_ids, PREFIX, service_users=gateways)
    except BrokerError as exc:
        raise SystemExit(str(exc)) from None
    texts = {
        "passwords": password_file_text(users),
        "acl": acl,
        "mosquitto.conf": config(
            out,
            int(env.get("PORT", "1883")),
            env.get("DATA_DIR", "/mosquitto/data"),
            env.get("MOSQUITTO_USER"),
        ),
    }
    for name, text in texts.items():
        path = out / name
        write_private(path, text)
        give(path, int(env.get("BROKER_UID", "1883")))
    source = env.get("FLEET_CREDENTIALS_FILE", "derived from FLEET_KEY_FILE")
    print(
        f"mosquitto config in {out}: users stream, monitor, {len(device_ids)} devices, "
        f"{len(gateways)} gateways; fleet logins: {source}"
    )


def shard_number(env: Mapping[str, str]) -> int:
    """``SHARD``, or the ordinal of the StatefulSet pod ``POD_NAME`` (``vega-fleet-3``: 3)."""
    if "SHARD" in env:
        return number(env, "SHARD")
    if "POD_NAME" not in env:
        raise SystemExit("SHARD or POD_NAME is not set: which shard's logins to write")
    ordinal = env["POD_NAME"].rpartition("-")[2]
    if not ordinal.isdigit():
        raise SystemExit(f"POD_NAME={env['POD_NAME']!r} does not end in a pod ordinal")
    return int(ordinal)


def write_shard_credentials(path: Path, env: Mapping[str, str]) -> None:
    """One shard's logins (its devices' and its workers'), derived from ``FLEET_KEY_FILE``,
    into the credentials file ``path`` (created 0600) that ``vega-emu fleet --credentials``
    reads."""
    shards = fleet_shards(env)
    wanted = shard_number(env)
    if not 0 <= wanted < len(shards):
        raise SystemExit(
            f"shard {wanted} is not one of the fleet's {len(shards)} (DEVICES / SHARD_SIZE): "
            "raise DEVICES with the StatefulSet's replicas"
        )
    if "FLEET_KEY_FILE" not in env:
        raise SystemExit("FLEET_KEY_FILE is not set: the key the shard's logins come from")
    key = read_key(Path(env["FLEET_KEY_FILE"]))
    shard = shards[wanted]
    write_private(path, "".join(f"{u}:{derived_password(key, u)}\n" for u in shard.users))
    print(
        f"{path}: the logins of shard {wanted}, {len(shard.devices)} devices "
        f"({shard.devices[0]} ..) and {len(shard.gateways)} gateways"
    )


def write_emqx_users(path: Path, env: Mapping[str, str]) -> None:
    """EMQX's bootstrap file (``user_id,password,is_superuser``, plain: EMQX hashes them) with
    ``stream``, ``monitor`` and every device of the fleet, created 0600. No gateway: the EMQX
    ACL (deploy/k8s/emqx) gives a user only its own device topics, so the shards on EMQX
    connect a session per node (``--connection node``)."""
    users = service_passwords(env, int(env.get("CLIENT_UID", "10001")))
    services = ", ".join(users)
    shards = fleet_shards(env)
    logins = fleet_logins(env, shards, int(env.get("CLIENT_UID", "10001")))
    devices = {d: logins[d] for shard in shards for d in shard.devices}
    users |= devices
    lines = ["user_id,password,is_superuser", *(f"{u},{p},false" for u, p in users.items())]
    write_private(path, "\n".join(lines) + "\n")
    print(f"{path}: EMQX users {services} and {len(devices)} devices")


def main(argv: Sequence[str], env: Mapping[str, str]) -> None:
    modes = {"--shard-credentials": write_shard_credentials, "--emqx-users": write_emqx_users}
    if len(argv) == 1 and not argv[0].startswith("-"):
        write(Path(argv[0]), env)
    elif len(argv) == 2 and argv[0] in modes:
        modes[argv[0]](Path(argv[1]), env)
    else:
        raise SystemExit(
            "usage: init.py OUT_DIR | init.py --shard-credentials FILE | init.py --emqx-users FILE"
        )


if __name__ == "__main__":
    main(sys.argv[1:], dict(os.environ))
