"""deploy/mosquitto/init.py: one identity per role, the fleet's credentials per shard, the
broker config bounding input as ``vega-emu broker``'s does, and every file private from the
moment it exists.

What the generated config lets each login do, with real Mosquitto and real clients, is
tests/deploy/test_deploy_broker_probe.py.
"""

from __future__ import annotations

import importlib.util
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from broker.acl import read_credentials
from broker.limits import BrokerLimits
from broker.mosquitto import MosquittoConfig, render_config
from dataset_stream.protocol import fleet_ids
from device.fleet.shard import gateway_id
from device.fleet.spec import shard
from tests.support.strace import created_modes

INIT = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "init.py"


def load_init() -> ModuleType:
    """deploy/mosquitto/init.py as a module (deploy/ is no package: the image copies it)."""
    spec = importlib.util.spec_from_file_location("deploy_mosquitto_init_config", INIT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that takes nothing away: the modes must not depend on the user's umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def env_for(where: Path, **more: str) -> dict[str, str]:
    """Four devices in two shards of one worker each, a credentials file per shard."""
    secrets = where / "secrets"
    return {
        "STREAM_PASSWORD_FILE": str(secrets / "stream"),
        "MONITOR_PASSWORD_FILE": str(secrets / "monitor"),
        "FLEET_CREDENTIALS_FILE": str(secrets / "fleet-{shard}"),
        "DEVICES": "4",
        "SHARD_SIZE": "2",
        "WORKERS": "1",
        **more,
    }


def test_the_deployed_config_has_the_same_bounds_as_the_launchers(tmp_path: Path) -> None:
    load_init().write(tmp_path / "conf", env_for(tmp_path))
    deployed = (tmp_path / "conf" / "mosquitto.conf").read_text(encoding="utf-8").splitlines()
    launched = render_config(MosquittoConfig(data_dir=tmp_path), 1884).splitlines()
    bounds = BrokerLimits().config_lines()
    assert [line for line in deployed if line in bounds] == bounds
    assert [line for line in launched if line in bounds] == bounds
    assert not [line for line in deployed if line.startswith("user ")]  # MOSQUITTO_USER unset


@pytest.mark.usefixtures("open_umask")
def test_every_file_is_private_even_over_open_old_ones(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    for name in ("passwords", "acl", "mosquitto.conf"):  # a previous start's, loosened
        (conf / name).write_text("old\n")
        (conf / name).chmod(0o644)
    load_init().write(conf, env_for(tmp_path))
    written = [*conf.iterdir(), *(tmp_path / "secrets").iterdir()]
    assert len(written) == 7
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in written} == {
        p.name: 0o600 for p in written
    }


def test_every_file_is_created_0600_not_tightened_after(tmp_path: Path) -> None:
    """The passwords are never, even for a moment, in a file others may open."""
    modes = created_modes(
        [sys.executable, str(INIT), str(tmp_path / "conf")],
        under=tmp_path,
        cwd=tmp_path,
        env=os.environ | env_for(tmp_path),
    )
    files = {path.name: mode for path, mode in modes.items() if path.is_file()}
    names = ["acl", "fleet-0", "fleet-1", "monitor", "mosquitto.conf", "passwords", "stream"]
    assert files == dict.fromkeys(names, 0o600)


# -- identities ------------------------------------------------------------------------------


def stanzas(acl: str) -> dict[str, list[str]]:
    """``{user: its rules}`` of a generated ACL."""
    out: dict[str, list[str]] = {}
    for block in acl.split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith("#")]
        if lines:
            assert lines[0].startswith("user "), lines
            out[lines[0].removeprefix("user ")] = lines[1:]
    return out


def test_every_login_is_a_user_of_its_own_with_its_own_topics(tmp_path: Path) -> None:
    load_init().write(tmp_path / "conf", env_for(tmp_path))
    conf = tmp_path / "conf"
    acl = (conf / "acl").read_text(encoding="utf-8")
    assert "pattern" not in acl  # no rule open to every user
    rules = stanzas(acl)
    ids = fleet_ids(4)
    gateways = ["gw-node-0000-2", "gw-node-0002-2"]
    assert sorted(rules) == sorted(["stream", "monitor", "operator", *ids, *gateways])
    users = [line.split(":")[0] for line in (conf / "passwords").read_text().splitlines()]
    assert sorted(users) == sorted(set(rules) - {"operator"})  # no OPERATOR_PASSWORD_FILE
    assert "use_username_as_clientid true" in (conf / "mosquitto.conf").read_text().splitlines()
    for device in ids:  # its own topics, inference included
        assert sorted(rules[device]) == sorted(
            [f"topic read vega/{device}/{k}" for k in ("batch", "eval", "infer", "desired")]
            + ["topic read vega/heads/+/weights", "topic read vega/evalsets/+/set"]
            + [
                f"topic write vega/{device}/{k}"
                for k in ("telemetry", "status", "error", "prediction", "fault", "reported")
            ]
        )
    assert rules["gw-node-0000-2"][0] == "topic write vega/gateway/gw-node-0000-2/status"
    assert sorted(rules["gw-node-0000-2"][1:]) == sorted(
        set(rules["node-0000"] + rules["node-0001"])
    )
    for service in ("stream", "monitor"):  # can never act as a device
        writes = [r for r in rules[service] if r.startswith("topic write")]
        assert not [
            w
            for w in writes
            if w.rsplit("/", 1)[1] in {"telemetry", "status", "error", "prediction", "fault"}
        ]
        reads = [r for r in rules[service] if r.startswith("topic read")]
        assert not [r for r in reads if r.rsplit("/", 1)[1] in {"batch", "eval", "infer"}]
    assert not [r for r in rules["monitor"] if "write" in r]


def logins(path: Path) -> dict[str, str]:
    return read_credentials(path)


def test_each_shard_gets_the_logins_of_its_devices_and_workers_only(tmp_path: Path) -> None:
    env = env_for(tmp_path, DEVICES="10", SHARD_SIZE="4", WORKERS="2")
    load_init().write(tmp_path / "conf", env)
    secrets = tmp_path / "secrets"
    ids = fleet_ids(10)
    # the gateways are what `vega-emu fleet -n 4 --workers 2 --start-index 4k` names its workers
    for number, start in enumerate((0, 4, 8)):
        mine = ids[start : start + 4]
        workers = shard(mine, 2)
        gateways = [gateway_id(part[0], len(part)) for part in workers]
        assert sorted(logins(secrets / f"fleet-{number}")) == sorted([*mine, *gateways])
    assert sorted(logins(secrets / "fleet-2")) == ["gw-node-0008-1", "gw-node-0009-1", *ids[8:]]
    assert len({p for f in secrets.glob("fleet-*") for p in logins(f).values()}) == 10 + 6


def test_one_file_for_every_shard_without_a_shard_field(tmp_path: Path) -> None:
    """What a Kubernetes StatefulSet reads: its pods share one pod spec."""
    env = env_for(tmp_path, FLEET_CREDENTIALS_FILE=str(tmp_path / "secrets" / "fleet"))
    load_init().write(tmp_path / "conf", env)
    held = logins(tmp_path / "secrets" / "fleet")
    assert sorted(held) == sorted([*fleet_ids(4), "gw-node-0000-2", "gw-node-0002-2"])
    assert [p.name for p in (tmp_path / "secrets").iterdir() if p.name.startswith("fleet")] == [
        "fleet"
    ]


def test_given_passwords_are_kept_and_missing_logins_added(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "stream").write_text("given-stream-password\n")
    (secrets / "fleet-0").write_text("node-0000:given-node-password\nold-user:x\n")
    load_init().write(tmp_path / "conf", env_for(tmp_path))
    assert (secrets / "stream").read_text() == "given-stream-password\n"
    shard0 = logins(secrets / "fleet-0")
    assert shard0["node-0000"] == "given-node-password" and shard0["old-user"] == "x"
    assert len(shard0["node-0001"]) >= 24 and len(shard0["gw-node-0000-2"]) >= 24  # made up
    passwords = (tmp_path / "conf" / "passwords").read_text()
    assert "given-" not in passwords  # hashed
    assert "old-user" not in passwords  # not one of the fleet's logins
    written = [secrets / "fleet-0", secrets / "fleet-1", secrets / "monitor"]  # fleet-0 was 0644
    for path in [*(tmp_path / "conf").iterdir(), *written]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_read_only_file_without_every_login_stops_it_naming_one(tmp_path: Path) -> None:
    """A Kubernetes Secret cannot be written: it must hold every login already."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "fleet").write_text("node-0000:p0\n")
    (secrets / "fleet").chmod(0o400)
    env = env_for(tmp_path, FLEET_CREDENTIALS_FILE=str(secrets / "fleet"))
    if os.geteuid() == 0:
        pytest.skip("root writes a 0400 file")
    with pytest.raises(
        SystemExit, match=r"no password for 5 of the fleet's logins \(e.g\. node-0001"
    ):
        load_init().write(tmp_path / "conf", env)


def test_a_file_that_is_missing_and_cannot_be_made_stops_it(tmp_path: Path) -> None:
    """A Secret without the fleet's key (its mount cannot be written, even by root)."""
    (tmp_path / "mount").write_text("")  # a file where a directory would have to be
    env = env_for(tmp_path, FLEET_CREDENTIALS_FILE=str(tmp_path / "mount" / "fleet"))
    with pytest.raises(SystemExit, match=r"no password for 6 .* \(e\.g\. node-0000\) and cannot"):
        load_init().write(tmp_path / "conf", env)
    assert not (tmp_path / "conf" / "passwords").exists()


@pytest.mark.parametrize(
    ("more", "words"),
    [
        ({"FLEET_PASSWORD_FILE": "/secrets/fleet"}, "FLEET_PASSWORD_FILE .* is no longer read"),
        ({"DEVICES": "many"}, "DEVICES='many' is not a whole number"),
        ({"SHARD_SIZE": "0"}, "must be at least 1"),
        ({"PREFIX": "stream-"}, "reserved"),
    ],
)
def test_a_wrong_setting_is_named(tmp_path: Path, more: dict[str, str], words: str) -> None:
    with pytest.raises(SystemExit, match=words):
        load_init().write(tmp_path / "conf", env_for(tmp_path, **more))


def test_missing_ranges_are_named(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    del env["DEVICES"]
    with pytest.raises(SystemExit, match="DEVICES is not set"):
        load_init().write(tmp_path / "conf", env)


@pytest.mark.parametrize(("devices", "workers"), [(1, 1), (5, 2), (7, 3), (2, 4), (1000, 7)])
def test_the_split_is_the_fleets(devices: int, workers: int) -> None:
    ids = fleet_ids(devices, start=3)
    init = load_init()
    assert init.split(ids, workers) == shard(ids, workers)
    assert init.gateway_id("x" * 70, 3) == gateway_id("x" * 70, 3)


def test_compose_shards_read_the_file_init_writes_for_their_range() -> None:
    """compose.yaml's mosquitto-init ranges and each fleet service's command agree."""
    compose = yaml.safe_load((INIT.parents[1] / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    env = services["mosquitto-init"]["environment"]
    assert "FLEET_PASSWORD_FILE" not in env
    size, workers = int(env["SHARD_SIZE"]), int(env["WORKERS"])
    shards = {}
    for name, service in services.items():
        command = service.get("command") or []
        if command[:1] != ["fleet"]:
            continue
        option = dict(zip(command[1::2], command[2::2], strict=False))
        assert "@" not in option["--broker"], name  # no shared user: each node logs in as itself
        start = int(option["--start-index"])
        assert int(option["-n"]) == size and int(option["--workers"]) == workers, name
        number = start // size
        # init writes /roles/fleet-k/fleet-k into the volume it mounts there; the shard mounts
        # that volume at /secrets and reads the same file
        written = Path(env["FLEET_CREDENTIALS_FILE"].format(shard=number))
        init_mounts = dict(v.split(":")[1::-1] for v in services["mosquitto-init"]["volumes"])
        volume = init_mounts[str(written.parent)]
        mine = [v.split(":") for v in service["volumes"] if v.split(":")[0] == volume]
        assert mine, f"{name} does not mount {volume}"
        assert option["--credentials"] == f"{mine[0][1]}/{written.name}", name
        shards[number] = name
    assert sorted(shards) == list(range(int(env["DEVICES"]) // size))
    stream = services["stream"]["command"]
    assert stream[stream.index("--devices") + 1] == env["DEVICES"]


# -- Kubernetes: the logins derived from the fleet's key -------------------------------------


def key_env(where: Path, **more: str) -> dict[str, str]:
    """:func:`env_for` with the fleet's key instead of credentials files."""
    env = env_for(where, **more)
    del env["FLEET_CREDENTIALS_FILE"]
    key = where / "secrets" / "fleet"
    key.parent.mkdir(parents=True, exist_ok=True)
    if not key.exists():
        key.write_text("k" * 32 + "\n")
    return env | {"FLEET_KEY_FILE": str(key)}


@pytest.mark.usefixtures("open_umask")
def test_each_shard_derives_the_passwords_the_broker_has(tmp_path: Path) -> None:
    env = key_env(tmp_path, DEVICES="10", SHARD_SIZE="4", WORKERS="2")
    init = load_init()
    init.write(tmp_path / "conf", env)
    assert not list((tmp_path / "secrets").glob("fleet-*"))  # no file of logins: derived
    broker = init.fleet_logins(env, init.fleet_shards(env), 0)
    seen: dict[str, str] = {}
    for number, start in enumerate((0, 4, 8)):
        path = tmp_path / f"shard-{number}"
        init.write_shard_credentials(path, env | {"POD_NAME": f"vega-fleet-{number}"})
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        held = logins(path)
        mine = fleet_ids(10)[start : start + 4]
        gateways = [gateway_id(part[0], len(part)) for part in shard(mine, 2)]
        assert sorted(held) == sorted([*mine, *gateways])
        assert held == {u: broker[u] for u in held}
        seen |= held
    assert seen == broker and len(set(seen.values())) == len(seen)  # one password per login
    assert all(len(p) >= 43 for p in seen.values())  # 256 bits
    hashed = (tmp_path / "conf" / "passwords").read_text()
    assert sorted(line.split(":")[0] for line in hashed.splitlines()) == sorted(
        ["stream", "monitor", *broker]
    )
    # another key, other passwords
    (tmp_path / "other").write_text("o" * 32 + "\n")
    other_env = env | {"FLEET_KEY_FILE": str(tmp_path / "other")}
    other = init.fleet_logins(other_env, init.fleet_shards(env), 0)
    assert not set(other.items()) & set(broker.items())


@pytest.mark.parametrize(
    ("more", "words"),
    [
        ({"POD_NAME": "vega-fleet-3"}, "shard 3 is not one of the fleet's 2"),
        ({"POD_NAME": "vega-fleet"}, "does not end in a pod ordinal"),
        ({}, "SHARD or POD_NAME is not set"),
        ({"SHARD": "0", "FLEET_KEY_FILE": "/nonexistent/fleet"}, "FLEET_KEY_FILE /nonexistent"),
    ],
)
def test_a_shard_that_cannot_derive_its_logins_says_why(
    tmp_path: Path, more: dict[str, str], words: str
) -> None:
    with pytest.raises(SystemExit, match=words):
        load_init().write_shard_credentials(tmp_path / "out", key_env(tmp_path) | more)
    assert not (tmp_path / "out").exists()


def test_one_source_of_fleet_passwords_and_a_long_key(tmp_path: Path) -> None:
    both = key_env(tmp_path) | {"FLEET_CREDENTIALS_FILE": str(tmp_path / "fleet-{shard}")}
    with pytest.raises(SystemExit, match="set one of FLEET_CREDENTIALS_FILE"):
        load_init().write(tmp_path / "conf", both)
    neither = env_for(tmp_path)
    del neither["FLEET_CREDENTIALS_FILE"]
    with pytest.raises(SystemExit, match="found neither"):
        load_init().write(tmp_path / "conf", neither)
    short = key_env(tmp_path)
    Path(short["FLEET_KEY_FILE"]).write_text("short\n")
    with pytest.raises(SystemExit, match="at least 32 characters"):
        load_init().write(tmp_path / "conf", short)


def test_emqx_users_are_stream_monitor_and_every_device(tmp_path: Path) -> None:
    env = key_env(tmp_path, DEVICES="5", SHARD_SIZE="3", WORKERS="2")
    init = load_init()
    init.write_emqx_users(tmp_path / "users.csv", env)
    lines = (tmp_path / "users.csv").read_text().splitlines()
    assert lines[0] == "user_id,password,is_superuser"
    rows = [line.split(",") for line in lines[1:]]
    assert [r[0] for r in rows] == ["stream", "monitor", *fleet_ids(5)]  # no gateway
    assert {r[2] for r in rows} == {"false"}
    derived = init.fleet_logins(env, init.fleet_shards(env), 0)
    assert {r[0]: r[1] for r in rows[2:]} == {d: derived[d] for d in fleet_ids(5)}
    assert rows[0][1] == (tmp_path / "secrets" / "stream").read_text().strip()
    assert stat.S_IMODE((tmp_path / "users.csv").stat().st_mode) == 0o600
