"""The deployed stacks are secure by default: each point of docs/operations.md's "Deployed stacks"
table, checked on the rendered Kubernetes manifests and the compose file, and each check shown
to catch the manifest it exists for.

- secrets per role: no password in the repository; kustomize stops, naming the command, when the
  generated files are missing; each pod and container mounts only its own role's secret;
- TLS: the brokers listen with TLS only, the clients use ``mqtts://`` and the CA's file only; the
  generated CA and certificate work with a real Mosquitto configured by ``init.py`` + ``tls.py``;
- admin passwords: Grafana's from a generated file, EMQX's dashboard in no Service and its
  password from a generated Secret;
- NetworkPolicies, evaluated: only Prometheus reaches the exporter, only the shards, the stream
  and the monitor reach the broker, nothing else reaches anything;
- every pod and container: seccomp RuntimeDefault, non-root, read-only root, no privilege
  escalation, no capabilities;
- supply chain: exact image tags found by the pin command, a runtime lock with hashes and no
  test tools, installed with ``--require-hashes``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml

from broker import free_port, parse_broker_url
from broker.acl import acl_text, read_credentials
from dataset_stream.protocol import fleet_ids
from tests.broker.test_tls import failed_handshakes
from tests.deploy.kustomize import KustomizeError, Manifest, key, merge, render
from tests.deploy.stack import (
    DEPLOY,
    IMAGE,
    K8S,
    OVERLAYS,
    ROOT,
    by_key,
    compose,
    copy_k8s,
    k8s_with_secrets,
    load_script,
    make_secrets,
    rendered,
    workloads,
)
from tests.support.mosquitto import require_mosquitto
from tests.support.wait import wait_until

tls = load_script("deploy_tls", DEPLOY / "mosquitto" / "tls.py")
secret = load_script("deploy_secret", DEPLOY / "secret.py")
pin_images = load_script("deploy_pin_images", DEPLOY / "pin-images.py")
mosquitto_init = load_script("deploy_mosquitto_init_tls", DEPLOY / "mosquitto" / "init.py")

#: Every role with an MQTT password; the operator runs no pod (its ctl runs where it works).
ROLES = ("fleet", "stream", "monitor", "operator")
CLIENTS = {"vega-fleet": "fleet", "vega-stream": "stream", "vega-monitor": "monitor"}
BROKERS = {"overlays/small": "mosquitto", "overlays/large": "emqx"}
ALL = frozenset({"*"})  # a Secret mounted without items: every key


def pod_spec(doc: Manifest) -> Manifest:
    spec: Manifest = doc["spec"]["template"]["spec"]
    return spec


def pod_labels(doc: Manifest) -> dict[str, str]:
    labels: dict[str, str] = doc["spec"]["template"]["metadata"]["labels"]
    return labels


def all_containers(doc: Manifest) -> list[Manifest]:
    spec = pod_spec(doc)
    return [*spec.get("initContainers", []), *spec["containers"]]


# -- secrets per role --------------------------------------------------------------------------


def secrets_held(doc: Manifest) -> dict[str, frozenset[str]]:
    """Secret name -> the keys a pod's containers can read ({'*'}: all of them)."""
    held: dict[str, set[str]] = {}
    for volume in pod_spec(doc).get("volumes", []):
        sources = [volume] if "secret" in volume else []
        sources += volume.get("projected", {}).get("sources", [])
        for source in sources:
            if "secret" in source:
                s = source["secret"]
                keys = {i["key"] for i in s["items"]} if "items" in s else set(ALL)
                held.setdefault(s["secretName"], set()).update(keys)
    for c in all_containers(doc):
        for env in c.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                held.setdefault(ref["name"], set()).add(ref["key"])
        for source in c.get("envFrom", []):
            if "secretRef" in source:
                held.setdefault(source["secretRef"]["name"], set()).update(ALL)
    return {name: frozenset(keys) for name, keys in held.items()}


def expected_secrets(pod: str) -> dict[str, frozenset[str]]:
    """What each pod may hold: a client its role's password and the CA; a broker every role's
    password (it makes the users) and the whole TLS Secret; EMQX also its dashboard's."""
    if pod in CLIENTS:
        role = CLIENTS[pod]
        return {f"vega-mqtt-{role}": frozenset({role}), "vega-mqtt-tls": frozenset({"ca.crt"})}
    held = {f"vega-mqtt-{r}": ALL for r in ROLES}
    held["vega-mqtt-tls"] = frozenset({"tls.crt", "tls.key", "ca.crt"})
    if pod == "emqx":
        held["emqx-dashboard"] = frozenset({"password"})
    return held


def secret_violations(docs: list[Manifest]) -> list[str]:
    return [
        f"{key(doc)} holds {secrets_held(doc)}"
        for doc in workloads(docs)
        if secrets_held(doc) != expected_secrets(doc["metadata"]["name"])
    ]


@pytest.mark.parametrize("name", OVERLAYS)
def test_each_pod_holds_its_own_roles_secret_only(name: str) -> None:
    docs = rendered(name)
    assert not secret_violations(docs)
    # each container of a client mounts the role's volume, and nothing of another role exists
    # in its pod (items: the Secret's other keys are not even projected)
    for doc in workloads(docs):
        if doc["metadata"]["name"] in CLIENTS:
            for volume in pod_spec(doc)["volumes"]:
                if "secret" in volume:
                    assert "items" in volume["secret"], (key(doc), volume)
    # the fleet's key is mounted in the fleet pod's init container only: the fleet container
    # holds its shard's derived logins (a memory volume) and the CA, nothing else secret
    fleet = by_key(docs)["StatefulSet", "vega-fleet"]
    assert container_secrets(fleet, "fleet") == {"vega-mqtt-tls"}
    assert container_secrets(fleet, "logins") == {"vega-mqtt-fleet"}
    volumes = {v["name"]: v for v in pod_spec(fleet)["volumes"]}
    (fleet_container,) = pod_spec(fleet)["containers"]
    secrets_dir = {m["mountPath"]: m["name"] for m in fleet_container["volumeMounts"]}["/secrets"]
    assert volumes[secrets_dir]["emptyDir"]["medium"] == "Memory"


def container_secrets(doc: Manifest, container: str) -> set[str]:
    """The Secrets one container of ``doc`` mounts."""
    volumes = {v["name"]: v for v in pod_spec(doc)["volumes"]}
    (c,) = [c for c in all_containers(doc) if c["name"] == container]
    return {
        volumes[m["name"]]["secret"]["secretName"]
        for m in c.get("volumeMounts", [])
        if "secret" in volumes.get(m["name"], {})
    }


def patched_pod(doc: Manifest, pod: Manifest) -> Manifest:
    """``doc`` with ``pod`` strategic-merged into its pod template's spec."""
    return merge(doc, {"spec": {"template": {"spec": pod}}})


def test_the_secret_check_catches_a_wholesale_or_foreign_mount() -> None:
    docs = rendered("overlays/small")
    monitor = by_key(docs)["Deployment", "vega-monitor"]
    fleet_password = {"secretKeyRef": {"name": "vega-mqtt-fleet", "key": "fleet"}}
    for wrong in (
        patched_pod(monitor, {"volumes": [{"name": "mqtt", "secret": {"items": None}}]}),
        patched_pod(
            monitor, {"volumes": [{"name": "x", "secret": {"secretName": "vega-mqtt-stream"}}]}
        ),
        patched_pod(
            monitor,
            {
                "containers": [
                    {"name": "monitor", "env": [{"name": "PW", "valueFrom": fleet_password}]}
                ]
            },
        ),
    ):
        assert wrong != monitor
        swapped = [wrong if key(d) == key(monitor) else d for d in docs]
        assert secret_violations(swapped), wrong


def committed_k8s_files() -> Iterator[Path]:
    """Every file of deploy/k8s but the generated secret files (ignored by git)."""
    for path in sorted(K8S.rglob("*")):
        if path.is_file() and "secrets" not in path.relative_to(K8S).parts:
            yield path


def test_no_password_is_in_the_repository() -> None:
    for path in committed_k8s_files():
        text = path.read_text(encoding="utf-8")
        assert "replace-me" not in text, path
        if path.suffix == ".yaml":
            for doc in yaml.safe_load_all(text):
                if doc and doc.get("kind") == "Secret":
                    pytest.fail(f"{path}: a Secret with its values in the repository")
    assert "secrets/" in (K8S / ".gitignore").read_text(encoding="utf-8")
    # compose: passwords come from files only, never from a literal value
    for name, service in compose()["services"].items():
        for var, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET", var) and not var.endswith(("_FILE", "__FILE")):
                pytest.fail(f"{name}: {var}={value!r} is a literal secret")


def test_without_the_generated_files_kustomize_stops_and_names_the_command(
    tmp_path: Path,
) -> None:
    bare = copy_k8s(tmp_path)
    for name in ("base", *OVERLAYS):
        with pytest.raises(KustomizeError, match=r"secrets/.* is missing .*make-secrets\.py"):
            render(bare / name)
    if shutil.which("kubectl"):
        out = subprocess.run(
            ["kubectl", "kustomize", str(bare / "overlays/small")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode != 0 and "secrets/" in out.stderr


def test_make_secrets_makes_private_random_files_and_keeps_them(tmp_path: Path) -> None:
    first, second = copy_k8s(tmp_path / "a"), copy_k8s(tmp_path / "b")
    old = os.umask(0)
    try:
        made = make_secrets.make(first, namespace="vega")
        make_secrets.make(second)
    finally:
        os.umask(old)
    names = {p.relative_to(first).as_posix() for p in made}
    assert names == {
        "base/secrets/fleet",
        "base/secrets/stream",
        "base/secrets/monitor",
        "base/secrets/operator",
        "emqx/secrets/dashboard",
        "tls/secrets/tls.crt",
        "tls/secrets/tls.key",
        "tls/secrets/ca.crt",
    }
    for path in made:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o644 if path.suffix == ".crt" else 0o600), path
    for name in ("base/secrets/stream", "emqx/secrets/dashboard", "tls/secrets/tls.key"):
        assert (first / name).read_bytes() != (second / name).read_bytes()  # no default
    assert len((first / "base/secrets/fleet").read_text().strip()) >= 32
    before = {p: p.read_bytes() for p in made}
    assert make_secrets.make(first, namespace="vega") == []  # kept
    assert {p: p.read_bytes() for p in made} == before
    cert = first / "tls/secrets/tls.crt"
    hosts = ("mosquitto", "emqx", "mosquitto.vega.svc", "emqx.vega.svc.cluster.local", "localhost")
    for host in hosts:  # localhost: the operator's ctl through kubectl port-forward
        check = subprocess.run(
            ["openssl", "x509", "-in", str(cert), "-noout", "-checkhost", host],
            capture_output=True,
            text=True,
        )
        assert "does match" in check.stdout, host


def test_the_rendered_secrets_are_the_generated_files() -> None:
    docs = by_key(rendered("overlays/large"))
    root = k8s_with_secrets()
    files = {
        ("vega-mqtt-fleet", "fleet"): "base/secrets/fleet",
        ("vega-mqtt-stream", "stream"): "base/secrets/stream",
        ("vega-mqtt-monitor", "monitor"): "base/secrets/monitor",
        ("vega-mqtt-operator", "operator"): "base/secrets/operator",
        ("emqx-dashboard", "password"): "emqx/secrets/dashboard",
        ("vega-mqtt-tls", "tls.key"): "tls/secrets/tls.key",
    }
    for (name, field), path in files.items():
        value = base64.b64decode(docs["Secret", name]["data"][field])
        assert value == (root / path).read_bytes(), name
    assert docs["Secret", "vega-mqtt-tls"]["type"] == "kubernetes.io/tls"


def test_secret_files_are_private_and_kept(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "a" / "grafana-admin"
        assert secret.ensure_secret(path) is True
        text = path.read_text()
        path.chmod(0o644)
        assert secret.ensure_secret(path) is False
    finally:
        os.umask(old)
    assert path.read_text() == text and len(text.strip()) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("\n")
    with pytest.raises(SystemExit, match="empty"):
        secret.ensure_secret(path)


# -- compose: secrets, TLS, admin passwords, networks, hardening ----------------------------


def compose_volumes(service: Mapping[str, Any]) -> dict[str, tuple[str, bool]]:
    """Volume name -> (where, read-only) of a compose service's named volumes."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        if not source.startswith("."):
            out[source] = (target, mode == ["ro"])
    return out


def test_compose_each_service_mounts_its_own_roles_secret_only() -> None:
    data = compose()
    assert "secrets" not in data["volumes"]  # the one volume every container mounted
    role_volumes = {v for v in data["volumes"] if v.startswith("secret-")}
    shards = ("secret-fleet-0", "secret-fleet-1")  # a volume per shard: its own logins only
    roles = {"secret-stream", "secret-monitor", "secret-operator", "secret-grafana"}
    assert role_volumes == {*shards, *roles}
    expected = {
        "fleet-0": {"secret-fleet-0"},
        "fleet-1": {"secret-fleet-1"},
        "stream": {"secret-stream"},
        "monitor": {"secret-monitor"},
        "operator": {"secret-operator"},
        "grafana": {"secret-grafana"},
        "mosquitto-init": {*shards, "secret-stream", "secret-monitor", "secret-operator"},
        "mosquitto-tls": {"secret-grafana"},
    }
    for name, service in data["services"].items():
        volumes = compose_volumes(service)
        assert set(volumes) & role_volumes == expected.get(name, set()), name
        if name in expected and not name.startswith("mosquitto-"):
            (role_volume,) = expected[name]
            assert volumes[role_volume] == ("/secrets", True), name
        # the broker's key: the broker and the service that makes it only
        if "mosquitto-tls" in volumes:
            assert name in ("mosquitto", "mosquitto-tls"), name
        if service.get("image") == IMAGE and "entrypoint" not in service:
            assert volumes["mqtt-ca"] == ("/tls", True), name
    # what init.py writes is where the role's service reads it: /roles/ROLE/FILE in the init
    # service is /secrets/FILE in the service that mounts that role's volume
    init = data["services"]["mosquitto-init"]
    where = {target: source for source, (target, _) in compose_volumes(init).items()}
    for var, path in init["environment"].items():
        if var.endswith("_PASSWORD_FILE"):
            volume = where[str(Path(path).parent)]
            assert volume == f"secret-{Path(path).name}", var
    template = init["environment"]["FLEET_CREDENTIALS_FILE"]
    for number, volume in enumerate(shards):
        written = Path(template.replace("{shard}", str(number)))
        assert where[str(written.parent)] == volume, written
        command = data["services"][f"fleet-{number}"]["command"]
        assert command[command.index("--credentials") + 1] == f"/secrets/{written.name}"


def test_compose_mqtt_is_tls_only() -> None:
    services = compose()["services"]
    broker = services["mosquitto"]
    assert broker["ports"] == ["127.0.0.1:8883:8883"]
    assert services["mosquitto-init"]["environment"]["PORT"] == "8883"
    assert broker["depends_on"]["mosquitto-tls"]["condition"] == "service_completed_successfully"
    make = " ".join(services["mosquitto-tls"]["command"])
    assert "tls.py generate /mosquitto/tls --host mosquitto" in make
    assert "tls.py configure /mosquitto/config/mosquitto.conf --dir /mosquitto/tls" in make
    for name, service in services.items():
        command = service.get("command") or []
        if service.get("image") == IMAGE and "--broker" in command:
            url = command[command.index("--broker") + 1]
            # the shards log in as their devices (--credentials), the services as themselves
            user = "" if command[0] == "fleet" else f"{command[0]}@"
            assert url == f"mqtts://{user}mosquitto:8883", name
            assert service["environment"]["VEGA_EMU_MQTT_CA_FILE"] == "/tls/ca.crt", name


def test_compose_grafana_has_a_generated_admin_password() -> None:
    services = compose()["services"]
    env = services["grafana"]["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    path = Path(env["GF_SECURITY_ADMIN_PASSWORD__FILE"])
    mounted = compose_volumes(services["grafana"])["secret-grafana"]
    assert mounted == (str(path.parent), True)
    make = " ".join(services["mosquitto-tls"]["command"])
    made_in = compose_volumes(services["mosquitto-tls"])["secret-grafana"][0]
    assert f"secret.py {made_in}/{path.name} --owner 472" in make  # Grafana's uid


def test_compose_networks_and_hardening() -> None:
    services = compose()["services"]
    nets = {name: set(s.get("networks", [])) for name, s in services.items()}
    assert nets["mosquitto"] == {"mqtt"}
    assert nets["prometheus"] == nets["grafana"] == {"metrics"}  # cannot reach the broker
    assert nets["monitor"] == {"mqtt", "metrics"}
    for name in ("fleet-0", "fleet-1", "stream"):
        assert nets[name] == {"mqtt"}, name
    for name, service in services.items():
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        if service.get("image") == IMAGE or name == "mosquitto":
            assert service["read_only"] is True, name
        if service.get("user") == "0:0":
            assert service.get("network_mode") == "none", name  # root only offline
            assert set(service["cap_add"]) <= {"CHOWN", "DAC_OVERRIDE", "FOWNER"}, name


# -- Kubernetes: TLS and the admin password of EMQX --------------------------------------------


@pytest.mark.parametrize(("name", "broker"), BROKERS.items())
def test_k8s_brokers_listen_with_tls_only(name: str, broker: str) -> None:
    docs = by_key(rendered(name))
    env = docs["ConfigMap", "vega-fleet"]["data"]
    assert env["BROKER_HOST"] == f"{broker}:8883"
    assert env["VEGA_EMU_MQTT_CA_FILE"] == "/tls/ca.crt"
    ports = docs["Service", broker]["spec"]["ports"]
    assert [p["port"] for p in ports] == [8883]  # no plain MQTT, no dashboard
    for doc in workloads(list(docs.values())):
        if doc["metadata"]["name"] in CLIENTS:
            (client,) = pod_spec(doc)["containers"]
            mounts = {m["mountPath"]: m["name"] for m in client["volumeMounts"]}
            volume = {v["name"]: v for v in pod_spec(doc)["volumes"]}[mounts["/tls"]]
            assert volume["secret"]["secretName"] == "vega-mqtt-tls"
    pod = docs["StatefulSet", broker]
    (server,) = pod_spec(pod)["containers"]
    if broker == "mosquitto":
        tls_init = [c for c in all_containers(pod) if "/opt/vega-emu/tls.py" in c["command"]]
        assert tls_init and tls_init[0]["command"][2:] == [
            "configure",
            "/mosquitto/config/mosquitto.conf",
            "--dir",
            "/mosquitto/tls",
        ]
        init_env = {e["name"]: e.get("value") for e in pod_spec(pod)["initContainers"][0]["env"]}
        assert init_env["PORT"] == "8883"
        assert {"name": "tls", "mountPath": "/mosquitto/tls", "readOnly": True} in server[
            "volumeMounts"
        ]
    else:
        server_env = {e["name"]: e for e in server["env"]}
        assert server_env["EMQX_LISTENERS__TCP__DEFAULT__ENABLE"]["value"] == "false"
        assert server_env["EMQX_LISTENERS__SSL__DEFAULT__BIND"]["value"].endswith(":8883")
        dashboard = server_env["EMQX_DASHBOARD__DEFAULT_PASSWORD"]["valueFrom"]
        assert dashboard["secretKeyRef"] == {"name": "emqx-dashboard", "key": "password"}


EMQX_RULE = re.compile(r"^\{(allow|deny), (.+), (publish|subscribe|all), \[(.*)\]\}\.$")


def emqx_rules(acl: str) -> list[tuple[str, str, str, list[str]]]:
    """``(permission, who, action, topics)`` of each rule of an EMQX acl.conf of one-line
    rules; the last, ``{deny, all}.``, as ``("deny", "all", "all", [])``."""
    rules = []
    for line in acl.strip().splitlines():
        if line == "{deny, all}.":
            rules.append(("deny", "all", "all", []))
            continue
        match = EMQX_RULE.fullmatch(line)
        assert match, line
        topics = re.findall(r'"([^"]*)"', match.group(4))
        rules.append((match.group(1), match.group(2), match.group(3), topics))
    return rules


def emqx_violations(acl: str, env: Mapping[str, str]) -> list[str]:
    """What in EMQX's ACL and settings lets a login act for another: every allow rule names
    a user; a device rule's topics are that user's own (``vega/${username}/...``, no wildcard,
    no client id: the client id is bound to the user name); stream and monitor never write a
    report nor read an input; nothing matches the rest."""
    problems = []
    if env.get("EMQX_MQTT__USE_USERNAME_AS_CLIENTID") != "true":
        problems.append("client ids are not bound to user names")
    if env.get("EMQX_AUTHORIZATION__NO_MATCH") != "deny":
        problems.append("no_match is not deny")
    rules = emqx_rules(acl)
    if rules[-1] != ("deny", "all", "all", []):
        problems.append("the last rule is not {deny, all}")
    reports = {"telemetry", "status", "error", "prediction", "fault", "reported"}
    inputs = {"batch", "eval", "infer"}
    # every pushed head and shared eval set: a device reads them all
    shared = {"vega/heads/+/weights", "vega/evalsets/+/set"}
    for permission, who, action, topics in rules[:-1]:
        if permission != "allow":
            continue
        device = re.fullmatch(r'\{username, \{re, "(.+)"\}\}', who)
        service = re.fullmatch(r'\{username, "(stream|monitor|operator)"\}', who)
        if device is None and service is None:
            problems.append(f"a rule for {who}: not one user or the devices' pattern")
            continue
        if device is not None:
            pattern = re.compile(device.group(1))
            if any(pattern.fullmatch(u) for u in ("stream", "monitor", "gw-node-0000-2")):
                problems.append(f"the device pattern {pattern.pattern} matches a service user")
            kinds = reports if action == "publish" else inputs | {"desired"}
            for topic in topics:
                if action == "subscribe" and topic in shared:
                    continue
                parts = topic.split("/")
                if parts[:2] != ["vega", "${username}"] or len(parts) != 3 or parts[2] not in kinds:
                    problems.append(f"device rule {action} {topic}: not the device's own")
        else:
            assert service is not None
            kinds = {t.rsplit("/", 1)[1] for t in topics}
            if action == "publish" and (service.group(1) == "monitor" or kinds & reports):
                problems.append(f"{service.group(1)} publishes {topics}")
            if action == "subscribe" and kinds & inputs:
                problems.append(f"{service.group(1)} reads inputs {topics}")
    return problems


def test_emqx_binds_each_login_to_its_own_topics() -> None:
    docs = by_key(rendered("overlays/large"))
    acl = docs["ConfigMap", "emqx-acl"]["data"]["acl.conf"]
    pod = docs["StatefulSet", "emqx"]
    (server,) = pod_spec(pod)["containers"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert emqx_violations(acl, env) == []
    rules = emqx_rules(acl)
    device_pattern = re.compile(re.findall(r'\{re, "(.+)"\}', rules[0][1])[0])
    ids = fleet_ids(int(docs["ConfigMap", "vega-fleet"]["data"]["DEVICES"]))
    assert all(device_pattern.fullmatch(d) for d in (ids[0], ids[-1]))
    # the users: init.py --emqx-users from the fleet's key, the fleet the ConfigMap describes
    (users,) = pod_spec(pod)["initContainers"]
    assert users["command"] == [
        "python",
        "/opt/vega-emu/init.py",
        "--emqx-users",
        "/bootstrap/users.csv",
    ]
    refs = {e["name"]: e["valueFrom"]["configMapKeyRef"]["key"] for e in users["env"]
            if "valueFrom" in e}  # fmt: skip
    assert refs == {"DEVICES": "DEVICES", "SHARD_SIZE": "SHARD_SIZE", "WORKERS": "WORKERS"}
    # the check catches: an unbound client id, a rule by client id, a wildcard for a device,
    # a device pattern that takes in the stream, the monitor publishing, no final deny
    wrongs = [
        (acl, env | {"EMQX_MQTT__USE_USERNAME_AS_CLIENTID": "false"}),
        (acl.replace("vega/${username}/batch", "vega/${clientid}/batch"), env),
        (acl.replace("vega/${username}/telemetry", "vega/+/telemetry"), env),
        (acl.replace(device_pattern.pattern, "^(node-[0-9]{4,}|stream)$"), env),
        (acl.replace('"monitor"}, subscribe', '"monitor"}, publish'), env),
        (acl.replace("{deny, all}.", ""), env),
        (acl.replace('{username, "stream"}, publish', "all, publish"), env),
    ]  # fmt: skip
    for wrong_acl, wrong_env in wrongs:
        assert (wrong_acl, wrong_env) != (acl, env)
        try:
            found = emqx_violations(wrong_acl, wrong_env)
        except (AssertionError, IndexError):
            found = ["unparsable"]
        assert found, wrong_acl


def test_emqx_grants_the_topics_the_mosquitto_acl_grants() -> None:
    """A device publishes and the monitor reads on EMQX what they do on Mosquitto (broker/acl.py):
    a kind of report added to one ACL and not the other is caught here."""
    acl = by_key(rendered("overlays/large"))["ConfigMap", "emqx-acl"]["data"]["acl.conf"]
    emqx: dict[tuple[str, str], set[str]] = {}
    for permission, who, action, topics in emqx_rules(acl)[:-1]:
        if permission == "allow":
            role = next((r for r in ("monitor", "stream", "operator") if f'"{r}"' in who), "device")
            emqx.setdefault((role, action), set()).update(topics)
    mosquitto: dict[tuple[str, str], set[str]] = {}
    user = ""
    for line in acl_text(["node-0000"]).splitlines():
        if line.startswith("user "):
            user = "device" if line == "user node-0000" else line.split()[1]
        elif line.startswith("topic "):
            _, access, topic = line.split()
            action = "publish" if access == "write" else "subscribe"
            mosquitto.setdefault((user, action), set()).add(
                topic.replace("vega/node-0000/", "vega/${username}/")
            )
    assert emqx == mosquitto


def test_cert_manager_writes_the_secret_the_pods_mount() -> None:
    docs = render(K8S / "cert-manager")
    certificates = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Certificate"}
    server = certificates["vega-mqtt-tls"]
    assert server["secretName"] == "vega-mqtt-tls"
    issuers = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "Issuer"}
    assert "ca" in issuers[server["issuerRef"]["name"]]  # a CA issuer: the Secret has ca.crt
    for name in OVERLAYS:
        host = by_key(rendered(name))["ConfigMap", "vega-fleet"]["data"]["BROKER_HOST"]
        assert host.split(":")[0] in server["dnsNames"], name


# -- Kubernetes: NetworkPolicies, evaluated ----------------------------------------------------


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector against a set of labels."""
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions", []):
        present, value = expr["key"] in labels, labels.get(expr["key"])
        ok = {
            "In": present and value in expr.get("values", []),
            "NotIn": not present or value not in expr.get("values", []),
            "Exists": present,
            "DoesNotExist": not present,
        }[expr["operator"]]
        if not ok:
            return False
    return True


NAMESPACE = {"kubernetes.io/metadata.name": "vega"}
PROMETHEUS = (
    {"kubernetes.io/metadata.name": "monitoring"},
    {"app.kubernetes.io/name": "prometheus"},
)


def admits(
    docs: list[Manifest],
    target: Mapping[str, str],
    port: int,
    source: tuple[Mapping[str, str], Mapping[str, str]],
) -> bool:
    """Whether the NetworkPolicies of ``docs`` let ``source`` (namespace labels, pod labels)
    connect to TCP ``port`` of a pod of the stack's namespace labelled ``target``."""
    source_ns, source_pod = source
    policies = [
        d["spec"]
        for d in docs
        if d["kind"] == "NetworkPolicy"
        and "Ingress" in d["spec"].get("policyTypes", ["Ingress"])
        and selects(d["spec"]["podSelector"], target)
    ]
    if not policies:
        return True  # not isolated
    for policy in policies:
        for rule in policy.get("ingress", []):
            ports = rule.get("ports")
            if ports is not None and not any(
                p.get("protocol", "TCP") == "TCP" and p.get("port") == port for p in ports
            ):
                continue
            peers = rule.get("from")
            if peers is None:
                return True
            for peer in peers:
                if "ipBlock" in peer:
                    continue
                ns_ok = (
                    selects(peer["namespaceSelector"], source_ns)
                    if "namespaceSelector" in peer
                    else source_ns == NAMESPACE
                )
                pod_ok = selects(peer.get("podSelector", {}), source_pod)
                if ns_ok and pod_ok:
                    return True
    return False


def stack_pods(docs: list[Manifest]) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: pod_labels(d) for d in workloads(docs)}


def network_violations(docs: list[Manifest], broker: str) -> list[str]:
    """Who gets in where they should not, or not where they should."""
    pods = stack_pods(docs)
    stranger = (NAMESPACE, {"app.kubernetes.io/name": "stranger"})
    prometheus_here = (NAMESPACE, {"app.kubernetes.io/name": "prometheus"})
    fleet_elsewhere = ({"kubernetes.io/metadata.name": "other"}, pods["vega-fleet"])
    sources = {name: (NAMESPACE, labels) for name, labels in pods.items()}
    sources |= {"prometheus": PROMETHEUS, "stranger": stranger}
    sources |= {"prometheus in the namespace": prometheus_here, "fleet elsewhere": fleet_elsewhere}
    wanted = {
        ("vega-monitor", 9108): {"prometheus"},
        (broker, 8883): set(CLIENTS),
    }
    problems = []
    for target, labels in pods.items():
        for port in (8883, 9108, 1883, 18083, 4370, 80):
            for source_name, source in sources.items():
                if source_name == target:
                    continue
                allowed = admits(docs, labels, port, source)
                should = source_name in wanted.get((target, port), set())
                if broker == "emqx" and target == "emqx":  # cluster peers, stats for Prometheus
                    should |= (port, source_name) == (18083, "prometheus")
                if allowed != should:
                    problems.append(f"{source_name} -> {target}:{port} allowed={allowed}")
    return problems


@pytest.mark.parametrize(("name", "broker"), BROKERS.items())
def test_network_policies_let_in_only_whom_they_should(name: str, broker: str) -> None:
    docs = rendered(name)
    deny = [
        d["spec"] for d in docs if d["kind"] == "NetworkPolicy" and d["spec"]["podSelector"] == {}
    ]
    assert deny == [{"podSelector": {}, "policyTypes": ["Ingress"]}]
    assert network_violations(docs, broker) == []


def test_the_network_check_catches_an_open_exporter_and_an_open_broker() -> None:
    docs = rendered("overlays/small")
    without_deny = [d for d in docs if key(d) != ("NetworkPolicy", "vega-default-deny-ingress")]
    open_exporter = [
        merge(d, {"spec": {"ingress": [{"ports": [{"port": 9108}]}]}})
        if key(d) == ("NetworkPolicy", "vega-monitor-metrics")
        else d
        for d in docs
    ]
    open_broker = [d for d in docs if key(d) != ("NetworkPolicy", "mosquitto-clients")]
    for wrong in (without_deny, open_exporter, open_broker):
        assert network_violations(wrong, "mosquitto")


# -- Kubernetes: every pod hardened ------------------------------------------------------------


def effective(pod: Manifest, container: Manifest, field: str) -> Any:
    """A security setting as Kubernetes applies it: the container's, else the pod's."""
    own = container.get("securityContext", {})
    return own[field] if field in own else pod.get("securityContext", {}).get(field)


def hardening_violations(docs: list[Manifest]) -> list[str]:
    problems = []
    for doc in workloads(docs):
        pod = pod_spec(doc)
        for c in all_containers(doc):
            where = f"{key(doc)} {c['name']}"
            context = c.get("securityContext", {})
            if effective(pod, c, "seccompProfile") != {"type": "RuntimeDefault"}:
                problems.append(f"{where}: seccompProfile")
            if effective(pod, c, "runAsNonRoot") is not True:
                problems.append(f"{where}: runAsNonRoot")
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem")
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation")
            capabilities = context.get("capabilities", {})
            if capabilities.get("drop") != ["ALL"] or capabilities.get("add"):
                problems.append(f"{where}: capabilities")
            if context.get("privileged"):
                problems.append(f"{where}: privileged")
        if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
            problems.append(f"{key(doc)}: host namespaces")
    return problems


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_every_pod_is_hardened(name: str) -> None:
    docs = rendered(name)
    assert hardening_violations(docs) == []
    # a read-only root: what vega-emu writes goes to a volume (/tmp: an emptyDir)
    for doc in workloads(docs):
        emptied = {v["name"] for v in pod_spec(doc)["volumes"] if "emptyDir" in v}
        for c in all_containers(doc):
            if c["image"] == IMAGE:
                tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
                assert tmp and tmp[0]["name"] in emptied, (key(doc), c["name"])


def test_the_hardening_check_catches_each_missing_setting() -> None:
    docs = rendered("overlays/small")
    monitor = by_key(docs)["Deployment", "vega-monitor"]
    changes: list[dict[str, Any]] = [
        {"readOnlyRootFilesystem": None},
        {"allowPrivilegeEscalation": True},
        {"capabilities": {"drop": None, "add": ["NET_ADMIN"]}},
        {"runAsNonRoot": False},
    ]
    for change in changes:
        wrong = patched_pod(
            monitor, {"containers": [{"name": "monitor", "securityContext": change}]}
        )
        swapped = [wrong if key(d) == key(monitor) else d for d in docs]
        assert hardening_violations(swapped), change
    no_seccomp = patched_pod(monitor, {"securityContext": {"seccompProfile": None}})
    assert hardening_violations([no_seccomp])


# -- TLS with a real Mosquitto -----------------------------------------------------------------


def test_tls_files_are_private_kept_and_renewed(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        assert tls.generate(tmp_path / "tls", ["mosquitto", "localhost"], ca_out=tmp_path / "ca")
    finally:
        os.umask(old)
    files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "tls").iterdir()}
    assert files == {"tls.crt": 0o644, "tls.key": 0o600, "ca.crt": 0o644}  # no CA key kept
    assert (tmp_path / "ca").iterdir().__next__().name == "ca.crt"
    assert (tmp_path / "ca" / "ca.crt").read_bytes() == (tmp_path / "tls" / "ca.crt").read_bytes()
    key_bytes = (tmp_path / "tls" / "tls.key").read_bytes()
    assert not tls.generate(tmp_path / "tls", ["mosquitto", "localhost"])  # valid: kept
    assert tls.generate(tmp_path / "tls", ["mosquitto", "broker.example"])  # a new name
    assert (tmp_path / "tls" / "tls.key").read_bytes() != key_bytes
    assert tls.generate(tmp_path / "short", ["mosquitto"], days=10)
    assert not tls.up_to_date(tmp_path / "short", ["mosquitto"])  # expires within 30 days


def test_tls_configure_refuses_what_it_cannot_configure(tmp_path: Path) -> None:
    conf = tmp_path / "mosquitto.conf"
    conf.write_text("listener 8883 0.0.0.0\nallow_anonymous false\n")
    tls.configure(conf, "/mosquitto/tls")
    with pytest.raises(SystemExit, match="already has TLS lines"):
        tls.configure(conf, "/mosquitto/tls")
    conf.write_text("listener 1 0.0.0.0\nlistener 2 0.0.0.0\n")
    with pytest.raises(SystemExit, match="one listener"):
        tls.configure(conf, "/mosquitto/tls")


@pytest.mark.mosquitto
async def test_the_deployed_broker_speaks_tls_only_with_the_generated_ca(tmp_path: Path) -> None:
    """init.py's config, then tls.py generate + configure (compose's two init services), then a
    real Mosquitto: a vega-emu client with the CA file logs in over mqtts://; plain MQTT and a
    client that does not trust the CA are refused."""
    require_mosquitto()
    import getpass

    from broker import find_mosquitto

    port = free_port()
    secrets = tmp_path / "secrets"
    env = {f"{u.upper()}_PASSWORD_FILE": str(secrets / u) for u in ("stream", "monitor")}
    secret.ensure_secret(secrets / "fleet")  # the fleet's key, as make-secrets.py makes it
    env |= {"FLEET_KEY_FILE": str(secrets / "fleet"), "DEVICES": "2", "POD_NAME": "vega-fleet-0"}
    env |= {"PORT": str(port), "DATA_DIR": str(tmp_path / "data")}
    if os.geteuid() == 0:
        env |= {"MOSQUITTO_USER": getpass.getuser(), "BROKER_UID": "0", "CLIENT_UID": "0"}
    (tmp_path / "data").mkdir()
    mosquitto_init.write(tmp_path / "conf", env)
    tls.generate(tmp_path / "tls", ["localhost"], ca_out=tmp_path / "ca")
    tls.configure(tmp_path / "conf" / "mosquitto.conf", str(tmp_path / "tls"))
    assert stat.S_IMODE((tmp_path / "conf" / "mosquitto.conf").stat().st_mode) == 0o600
    process = await asyncio.create_subprocess_exec(
        find_mosquitto(), "-c", str(tmp_path / "conf" / "mosquitto.conf")
    )
    try:

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
            return True

        await wait_until(listening, timeout_s=30, what=f"mosquitto listening on port {port}")
        password = (secrets / "stream").read_text().strip()
        assert password
        url = parse_broker_url(
            f"mqtts://stream@localhost:{port}",
            password_file=secrets / "stream",
            ca_file=tmp_path / "ca" / "ca.crt",
        )
        async with aiomqtt.Client(**url.client_kwargs(), identifier="stream", timeout=10) as c:
            await c.publish("vega/node-0000/batch", b"x", qos=1)  # the stream's own right
        # a device, with the login a Kubernetes fleet pod derives for its shard
        mosquitto_init.write_shard_credentials(secrets / "shard", env)
        node_password = read_credentials(secrets / "shard")["node-0000"]
        tls_ca = ssl.create_default_context(cafile=tmp_path / "ca" / "ca.crt")
        async with aiomqtt.Client(
            "localhost",
            port,
            username="node-0000",
            password=node_password,
            identifier="node-0000",
            tls_context=tls_ca,
            timeout=10,
        ) as node:
            await node.publish("vega/node-0000/telemetry", b"{}", qos=1)
        plain = {"username": "stream", "password": password, "timeout": 5}
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", port, identifier="plain", **plain):
                pass
        system_trust = ssl.create_default_context()  # not the generated CA
        async with failed_handshakes():
            with pytest.raises(aiomqtt.MqttError, match="certificate verify failed"):
                async with aiomqtt.Client(
                    "localhost", port, identifier="untrusting", tls_context=system_trust, **plain
                ):
                    pass
    finally:
        process.terminate()
        await process.wait()


# -- supply chain ------------------------------------------------------------------------------


def image_references_by_parsing() -> set[tuple[str, str]]:
    """(file, image) of every third-party image, read as compose, Kubernetes and Docker do."""
    found = set()
    for service in compose()["services"].values():
        if service.get("image") and service["image"] != IMAGE:
            found.add(("compose.yaml", service["image"]))
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and "template" in doc.get("spec", {}):
                for c in all_containers(doc):
                    if "image" in c and c["image"] != IMAGE:  # a patch may name none
                        found.add((path.relative_to(DEPLOY).as_posix(), c["image"]))
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert set(re.findall(r"^FROM (\S+)", dockerfile, flags=re.M)) == {"${PYTHON_IMAGE}"}
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)", dockerfile, flags=re.M)
    found.add(("Dockerfile", base))
    return found


def test_every_image_has_an_exact_version_and_the_pin_command_finds_it(tmp_path: Path) -> None:
    found = {(r.path.relative_to(DEPLOY).as_posix(), r.ref) for r in pin_images.references(DEPLOY)}
    assert found == image_references_by_parsing()
    for _, ref in found:
        name_tag = ref.partition("@")[0]
        assert re.search(r":v?\d+\.\d+\.\d+(-[a-z0-9.-]+)?$", name_tag), ref  # not 2.0, latest
    # the command rewrites every reference to tag@digest, and the files still parse the same
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("secrets"))
    asked: list[str] = []

    def registry(name_tag: str) -> str:
        asked.append(name_tag)
        return "sha256:" + format(abs(hash(name_tag)) % 16**64, "064x")

    assert pin_images.pin(copy, registry)
    pinned = list(pin_images.references(copy))
    assert {r.name_tag for r in pinned} == {ref.partition("@")[0] for _, ref in found}
    assert all(r.digest == registry(r.name_tag) for r in pinned)
    assert len(asked) == len(set(asked)) + len(pinned)  # one question per tag
    data = yaml.safe_load((copy / "compose.yaml").read_text())
    assert data["services"]["mosquitto"]["image"].startswith("eclipse-mosquitto:2.0.20@sha256:")
    assert pin_images.pin(copy, registry) == []  # pinned already: nothing changes


def lock_entries(path: Path) -> dict[str, list[str]]:
    """name -> the requirement lines' hashes (``name==version`` keys, lower-case)."""
    entries: dict[str, list[str]] = {}
    current = None
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+==[^ ;\\]+)", line)
        if match:
            current = match.group(1).lower()
            entries.setdefault(current, [])
        elif current and "--hash=sha256:" in line:
            entries[current].append(line.strip().rstrip(" \\"))
    return entries


def test_the_image_installs_a_hashed_runtime_lock_without_test_tools() -> None:
    runtime = lock_entries(ROOT / "requirements-runtime.lock")
    build = lock_entries(ROOT / "requirements-build.lock")
    tested = lock_entries(ROOT / "requirements.lock")
    for lock in (runtime, build):
        assert lock and all(hashes for hashes in lock.values()), lock
    names = {entry.split("==")[0] for entry in runtime}
    assert not names & {
        "pytest",
        "pytest-asyncio",
        "mypy",
        "ruff",
        "hypothesis",
        "kubernetes-validate",
    }
    assert {"aiomqtt", "onnxruntime", "numpy", "sqlite-utils", "prometheus-client"} <= names
    # the runtime lock is the tested versions (it is compiled with -c requirements.lock)
    tested_versions = {e.split("==")[0]: e.split("==")[1] for e in tested}
    for entry in runtime:
        name, version = entry.split("==")
        if name in tested_versions and name not in ("numpy", "scipy", "contourpy"):
            assert tested_versions[name] == version, entry
    # requirements.lock stays without hashes: .ci/run uses it as constraints of an editable
    # install, which the pip of a new venv refuses when a constraint has a hash
    assert not any(tested.values())
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    installs = re.findall(r"pip install [^\n]*-r (\S+)", dockerfile)
    assert sorted(installs) == ["requirements-build.lock", "requirements-runtime.lock"]
    assert dockerfile.count("pip install --require-hashes") == 2
    assert "--no-build-isolation" in dockerfile  # the locked setuptools builds the wheel
