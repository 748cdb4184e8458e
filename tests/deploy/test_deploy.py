"""deploy/: the image, the compose stack, the Kubernetes manifests and the Grafana dashboard.

- every Kubernetes manifest (the base and both overlays, rendered by :mod:`tests.deploy.kustomize`
  from a copy whose secret files ``deploy/k8s/make-secrets.py`` made, which must agree with
  ``kubectl kustomize`` where kubectl exists) validates offline against the Kubernetes JSON
  schemas of :data:`K8S_VERSION` (``kubernetes-validate``, strict);
- every ``vega-emu`` command line of the compose file and of the manifests (the fleet shards'
  shell entrypoint run for real, with a stand-in ``vega-emu`` that prints its arguments) parses
  with the real command line parser of ``device.cli.app``;
- the shard id ranges cover the stream's devices exactly once, in compose and in each overlay;
- every metric a query of the Grafana dashboard names is one a live exporter serves;
- (the generated Mosquitto config: tests/deploy/test_mosquitto_init_config.py and, probed with
  real clients, tests/deploy/test_deploy_broker_probe.py);
- the security of the deployed stacks (secrets per role, TLS, NetworkPolicies, pod hardening,
  pinned images and hashed locks) is in ``test_deploy_security.py``;
- with a Docker daemon, the image builds and ``vega-emu --help`` runs in it.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import kubernetes_validate
import pytest
import typer.main
import yaml
from prometheus_client.parser import text_string_to_metric_families

from broker import BrokerURL, EmbeddedBroker
from broker.acl import read_credentials
from dataset_stream.protocol import ErrorMessage, Status, fleet_ids
from device.cli import app
from device.fleet.shard import gateway_id
from device.fleet.spec import shard
from device.observe.exporter import MetricsServer
from device.observe.monitor import FleetMonitor
from tests.deploy.kustomize import KustomizeError, Manifest, key, merge, render
from tests.deploy.stack import (
    DEPLOY,
    IMAGE,
    KUSTOMIZATIONS,
    OVERLAYS,
    ROOT,
    by_key,
    compose,
    k8s_with_secrets,
    load_script,
    rendered,
)
from tests.support.messages import report
from tests.support.times import NOW

K8S_VERSION = "1.30.0"  # the Kubernetes schemas the manifests are validated against


healthcheck = load_script("deploy_healthcheck", DEPLOY / "healthcheck.py")
mosquitto_init = load_script("deploy_mosquitto_init_k8s", DEPLOY / "mosquitto" / "init.py")


# -- the command line ------------------------------------------------------------------------


def parse_vega_emu(args: list[str]) -> tuple[str, dict[str, Any]]:
    """``(command, params)`` of ``vega-emu ARGS`` by the real parser; an unknown command or
    option, a missing required one or a bad value fails the test."""
    group = typer.main.get_command(app)
    assert args, "an empty vega-emu command line"
    commands = group.commands  # type: ignore[attr-defined]
    assert args[0] in commands, f"vega-emu has no command {args[0]!r}"
    command = commands[args[0]]
    rest = args[1:]
    name = args[0]
    if hasattr(command, "commands"):  # a group: vega-emu model build-default ...
        assert rest and rest[0] in command.commands, f"vega-emu {name} has no {rest[:1]}"
        name, command, rest = f"{name} {rest[0]}", command.commands[rest[0]], rest[1:]
    ctx = command.make_context(name, list(rest))
    return name, ctx.params


def test_parse_vega_emu_refuses_what_the_command_line_refuses() -> None:
    assert parse_vega_emu(["fleet", "--state-dir", "s", "-n", "3"])[1]["devices"] == 3
    for bad in (["flete"], ["fleet", "--state-dir", "s", "--no-such-option", "1"], ["fleet"]):
        with pytest.raises((AssertionError, Exception)):
            parse_vega_emu(bad)


# -- Kubernetes ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_manifests_validate_against_the_kubernetes_schemas(name: str) -> None:
    docs = rendered(name)
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{name}: {key(doc)} {path}: {exc.message}")


def test_the_validator_catches_a_wrong_manifest() -> None:
    fleet = by_key(rendered("base"))["StatefulSet", "vega-fleet"]
    for wrong in (
        merge(fleet, {"spec": {"replicas": "two"}}),
        merge(fleet, {"spec": {"template": {"spec": {"containerz": []}}}}),  # strict: unknown
    ):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(wrong, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_the_renderer_agrees_with_kubectl_kustomize(name: str) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the Python renderer is checked on its own")
    out = subprocess.run(
        ["kubectl", "kustomize", str(k8s_with_secrets() / name)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    theirs = by_key([unwrapped(d) for d in yaml.safe_load_all(out) if d])
    assert by_key(rendered(name)) == theirs


def unwrapped(doc: Manifest) -> Manifest:
    """``doc`` with a Secret's base64 values on one line (kustomize wraps long ones at 76)."""
    if doc.get("kind") == "Secret":
        doc["data"] = {k: "".join(v.split()) for k, v in doc.get("data", {}).items()}
    return doc


def test_the_renderer_refuses_what_it_does_not_support(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(KustomizeError, match="namePrefix"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("patches:\n  - path: p.yaml\n")
    (tmp_path / "p.yaml").write_text("kind: ConfigMap\nmetadata:\n  name: nowhere\n")
    with pytest.raises(KustomizeError, match="not a resource"):
        render(tmp_path)


def config_map(docs: list[Manifest]) -> dict[str, str]:
    data: dict[str, str] = by_key(docs)["ConfigMap", "vega-fleet"]["data"]
    return data


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command and args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m.group(1)], text)


def containers(docs: list[Manifest]) -> Iterator[tuple[Manifest, Manifest]]:
    for doc in docs:
        template = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in template.get("initContainers", []) + template.get("containers", []):
            yield doc, c


def pod_args(docs: list[Manifest], container: Manifest, pod_name: str, tmp_path: Path) -> list[str]:
    """The ``vega-emu`` command line a container runs: ``$(VAR)`` expanded as Kubernetes does,
    or its shell command run for real with the pod's environment, a ``vega-emu`` on PATH that
    prints its arguments and a ``sleep`` that returns at once."""
    env = config_map(docs)
    if not container.get("command"):
        args = [expand(a, env) for a in container["args"]]
        assert args[0] != "vega-emu", "the image's entrypoint is vega-emu already"
        return args
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        (bin_dir / "vega-emu").write_text(
            '#!/bin/sh\nfor a in "$@"; do printf \'%s\\n\' "$a"; done\n'
        )
        (bin_dir / "sleep").write_text("#!/bin/sh\nexit 0\n")
        for tool in bin_dir.iterdir():
            tool.chmod(0o755)
    out = subprocess.run(
        [*container["command"], *container["args"]],
        env={**env, "POD_NAME": pod_name, "PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return out.splitlines()


def shard_args(docs: list[Manifest], ordinal: int, tmp_path: Path) -> list[str]:
    """The command line of the fleet shard ``ordinal`` (pod ``vega-fleet-{ordinal}``)."""
    fleet = by_key(docs)["StatefulSet", "vega-fleet"]
    (container,) = fleet["spec"]["template"]["spec"]["containers"]
    return pod_args(docs, container, f"{fleet['metadata']['name']}-{ordinal}", tmp_path)


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_every_vega_emu_command_line_of_the_manifests_parses(name: str, tmp_path: Path) -> None:
    docs = rendered(name)
    env = config_map(docs)
    seen = {}
    for doc, c in containers(docs):
        scripts = {"/opt/vega-emu/init.py", "/opt/vega-emu/tls.py"}
        if c["image"] != IMAGE or scripts & set(c.get("command", [])):
            continue  # the Mosquitto config's scripts: tested below
        if c.get("command") and "vega-emu" not in " ".join(c["args"]):
            continue  # EMQX's users file
        command, params = parse_vega_emu(
            pod_args(docs, c, f"{doc['metadata']['name']}-0", tmp_path)
        )
        seen[command] = params
        if command == "fleet":  # each node logs in as its device: no user of its own
            assert params["credentials"] == Path("/secrets/fleet"), key(doc)
            assert params["password_file"] is None, key(doc)
            assert params["broker"] == f"mqtts://{env['BROKER_HOST']}", key(doc)
            continue
        assert params["password_file"] == Path(f"/secrets/{command}"), key(doc)
        assert params["broker"] == f"mqtts://{command}@{env['BROKER_HOST']}", key(doc)
    assert sorted(seen) == ["fleet", "monitor", "stream"]
    assert seen["fleet"]["profile"] == env["PROFILE"]
    assert seen["fleet"]["lr_size"] == int(env["LR_SIZE"])
    assert seen["fleet"]["workers"] == int(env["WORKERS"])
    assert seen["stream"]["speed"] == env["STREAM_SPEED"]
    assert seen["stream"]["forever"], "the deployed stream runs an endless scenario"


@pytest.mark.parametrize(("name", "devices"), OVERLAYS.items())
def test_shard_ranges_cover_every_device_once(name: str, devices: int, tmp_path: Path) -> None:
    docs = rendered(name)
    env = config_map(docs)
    replicas = by_key(docs)["StatefulSet", "vega-fleet"]["spec"]["replicas"]
    assert int(env["DEVICES"]) == devices == replicas * int(env["SHARD_SIZE"])
    owners: dict[str, int] = {}
    for ordinal in range(replicas):  # every pod's own command line, by the real shell
        _, params = parse_vega_emu(shard_args(docs, ordinal, tmp_path))
        for device in fleet_ids(params["devices"], start=params["start_index"]):
            assert device not in owners, f"{device} in shards {owners[device]} and {ordinal}"
            owners[device] = ordinal
    stream = by_key(docs)["Deployment", "vega-stream"]["spec"]["template"]["spec"]
    _, params = parse_vega_emu(pod_args(docs, stream["containers"][0], "vega-stream", tmp_path))
    assert set(owners) == set(fleet_ids(int(params["devices"]))) and len(owners) == devices


def container_env(docs: list[Manifest], container: Manifest, **more: str) -> dict[str, str]:
    """A container's environment as Kubernetes makes it: ``envFrom`` the ConfigMap, ``value``
    and ``configMapKeyRef`` entries (``more``: the downward API's, or paths moved)."""
    data = config_map(docs)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == "vega-fleet"
        env |= data
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "configMapKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["configMapKeyRef"]
            assert ref["name"] == "vega-fleet"
            env[entry["name"]] = data[ref["key"]]
    return env | more


def init_container(doc: Manifest, name: str) -> Manifest:
    (c,) = [c for c in doc["spec"]["template"]["spec"]["initContainers"] if c["name"] == name]
    return c


@pytest.mark.parametrize("name", OVERLAYS)
def test_each_fleet_pod_derives_the_logins_its_broker_makes(name: str, tmp_path: Path) -> None:
    """The fleet pods' init container and the broker's, run with the environment the rendered
    manifests give them and the key make-secrets.py made: every shard's file holds exactly the
    logins its ``vega-emu fleet`` needs (its devices, its workers' gateways), with the passwords
    the broker's users have."""
    docs = rendered(name)
    by = by_key(docs)
    key_file = k8s_with_secrets() / "base" / "secrets" / "fleet"
    fleet = by["StatefulSet", "vega-fleet"]
    logins = init_container(fleet, "logins")
    assert logins["command"][:3] == ["python", "/opt/vega-emu/init.py", "--shard-credentials"]
    out = Path(logins["command"][3])
    mounts = {m["mountPath"]: m["name"] for m in logins["volumeMounts"]}
    (main,) = fleet["spec"]["template"]["spec"]["containers"]
    main_mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
    # the file the init container writes is the one --credentials reads
    assert f"{main_mounts[mounts[str(out.parent)]]}/{out.name}" == "/secrets/fleet"
    broker_doc = by["StatefulSet", "mosquitto" if name.endswith("small") else "emqx"]
    broker_init = init_container(broker_doc, "config" if name.endswith("small") else "users")
    broker_env = container_env(docs, broker_init)
    assert Path(broker_env["FLEET_KEY_FILE"]).name == "fleet"
    for var in ("DEVICES", "SHARD_SIZE", "WORKERS"):  # the same fleet on both sides
        assert broker_env[var] == config_map(docs)[var], var
    shards = mosquitto_init.fleet_shards(broker_env)
    everyone = mosquitto_init.fleet_logins(
        broker_env | {"FLEET_KEY_FILE": str(key_file)}, shards, 0
    )
    replicas = fleet["spec"]["replicas"]
    assert len(shards) == replicas
    for ordinal in sorted({0, replicas - 1}):
        env = container_env(docs, logins, POD_NAME=f"vega-fleet-{ordinal}")
        assert Path(env["FLEET_KEY_FILE"]).parent.as_posix() in mounts
        env["FLEET_KEY_FILE"] = str(key_file)
        mosquitto_init.write_shard_credentials(tmp_path / f"fleet-{ordinal}", env)
        held = read_credentials(tmp_path / f"fleet-{ordinal}")
        _, params = parse_vega_emu(shard_args(docs, ordinal, tmp_path))
        ids = fleet_ids(params["devices"], start=params["start_index"])
        gateways = [gateway_id(p[0], len(p)) for p in shard(ids, params["workers"])]
        assert sorted(held) == sorted([*ids, *gateways])
        assert held == {u: everyone[u] for u in held}


def test_the_brokers_and_the_credentials_line_up() -> None:
    for name, broker in (("overlays/small", "mosquitto"), ("overlays/large", "emqx")):
        docs = by_key(rendered(name))
        host, port = config_map(list(docs.values()))["BROKER_HOST"].split(":")
        service = docs["Service", host]
        assert int(port) in [p["port"] for p in service["spec"]["ports"]]
        assert ("StatefulSet", broker) in docs
    base = by_key(rendered("base"))
    for role in ("fleet", "stream", "monitor"):
        assert set(base["Secret", f"vega-mqtt-{role}"]["data"]) == {role}
    # each pod that reads a password mounts the Secret; each volume it mounts exists
    for name in KUSTOMIZATIONS:
        for doc, c in containers(rendered(name)):
            volumes = {v["name"] for v in doc["spec"]["template"]["spec"].get("volumes", [])}
            claims = {v["metadata"]["name"] for v in doc["spec"].get("volumeClaimTemplates", [])}
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes | claims, (key(doc), mount)


def test_the_monitor_is_scraped_and_the_shards_keep_their_state() -> None:
    docs = by_key(rendered("base"))
    service = docs["Service", "vega-monitor"]["metadata"]["annotations"]
    pod = docs["Deployment", "vega-monitor"]["spec"]["template"]["metadata"]["annotations"]
    for notes in (service, pod):
        assert notes["prometheus.io/scrape"] == "true"
        assert notes["prometheus.io/port"] == "9108"
    fleet = docs["StatefulSet", "vega-fleet"]["spec"]
    (claim,) = fleet["volumeClaimTemplates"]
    mounts = fleet["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/var/lib/vega-emu/state"} in mounts
    assert (
        "--state-dir /var/lib/vega-emu/state"
        in fleet["template"]["spec"]["containers"][0]["args"][0]
    )


# -- compose ---------------------------------------------------------------------------------


def test_every_compose_command_is_a_real_vega_emu_command_line() -> None:
    services = compose()["services"]
    commands = {}
    for name, service in services.items():
        if service.get("image") != IMAGE or "entrypoint" in service:
            continue
        assert all(isinstance(a, str) for a in service["command"]), name
        commands[name], params = parse_vega_emu(service["command"])
        if params["password_file"] is not None:
            user = params["broker"].removeprefix("mqtts://").partition("@")[0]
            assert params["password_file"] == Path(f"/secrets/{user}"), name
    assert sorted(commands.values()) == ["fleet", "fleet", "monitor", "stream"]
    init = services["mosquitto-init"]
    assert init["entrypoint"][:2] == ["python", "/opt/vega-emu/init.py"]
    assert "deploy/mosquitto/init.py" in (DEPLOY / "Dockerfile").read_text(encoding="utf-8")


def test_compose_shards_cover_the_streamed_devices_once() -> None:
    services = compose()["services"]
    owners: dict[str, str] = {}
    streamed: list[str] = []
    for name, service in services.items():
        if service.get("image") != IMAGE or "entrypoint" in service:
            continue
        command, params = parse_vega_emu(service["command"])
        if command == "fleet":
            for device in fleet_ids(params["devices"], start=params["start_index"]):
                assert device not in owners, f"{device} in {owners[device]} and {name}"
                owners[device] = name
            volumes = [v.split(":") for v in service["volumes"]]
            assert [params["state_dir"].as_posix()] == [v[1] for v in volumes if "state" in v[0]]
        elif command == "stream":
            streamed = fleet_ids(int(params["devices"]))
            assert params["forever"], "the deployed stream runs an endless scenario"
    assert sorted(owners) == streamed and len(set(owners.values())) >= 2


def test_compose_files_and_volumes_exist() -> None:
    data = compose()
    for name, service in data["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), (name, source)
            else:
                assert source in data["volumes"], (name, source)
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    monitor = data["services"]["monitor"]["command"]
    assert targets == [f"monitor:{monitor[monitor.index('--prometheus-port') + 1]}"]


# -- the image -------------------------------------------------------------------------------


def test_the_dockerfile_follows_the_rules() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim", text, flags=re.M)
    assert len(re.findall(r"^FROM ", text, flags=re.M)) >= 2  # multi-stage
    assert "pip install --require-hashes --no-deps -r requirements-runtime.lock" in text
    assert "pip install --no-deps /tmp/wheels/vega_emu-" in text
    assert re.search(r"^USER 10001", text, flags=re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*healthcheck\.py", text, flags=re.M)
    assert 'ENTRYPOINT ["vega-emu"]' in text
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for line in re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.M):
        for source in line.split():
            assert (ROOT / source).exists(), source
            assert source.split("/")[0] not in ignored, f"{source} is in .dockerignore"


def docker_daemon() -> str | None:
    """Why Docker cannot build here, or ``None``."""
    if shutil.which("docker") is None:
        return "docker is not installed"
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"no Docker daemon: {probe.stderr.strip().splitlines()[-1:]}"
    return None


@pytest.mark.slow
def test_the_image_builds_and_runs_vega_emu() -> None:
    reason = docker_daemon()
    if reason is not None:
        pytest.skip(reason)
    tag = "vega-emu:test-deploy"
    subprocess.run(
        ["docker", "build", "-f", str(DEPLOY / "Dockerfile"), "-t", tag, str(ROOT)],
        check=True,
        timeout=1800,
    )
    out = subprocess.run(
        ["docker", "run", "--rm", tag, "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "fleet" in out.stdout
    user = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert user.stdout.strip() == "10001"
    # the non-root user loads the baked-in default model (no rebuild: the cache is read-only)
    load = "from device.app import load_model; print(load_model(None).path)"
    model = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "python", tag, "-c", load],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert model.returncode == 0, model.stderr
    assert "first run" not in model.stdout


# -- the health check ------------------------------------------------------------------------


def test_the_health_check_tcp_branch() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert healthcheck.check({"VEGA_EMU_HEALTH_TCP": f"127.0.0.1:{port}"}) is None
    problem = healthcheck.check({"VEGA_EMU_HEALTH_TCP": f"127.0.0.1:{port}"})
    assert problem is not None and str(port) in problem
    assert healthcheck.check({}) is None


# -- the dashboard against a live exporter ---------------------------------------------------

PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}


def metric_names(query: str) -> set[str]:
    """The metric names a PromQL query selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', query)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        after = text[match.end() :].lstrip()
        if after.startswith("(") or match.group() in PROMQL_WORDS:
            continue  # a function or a keyword
        if re.fullmatch(r"\d+[a-z]+|e\d+", match.group()):
            continue
        names.add(match.group())
    return names


def test_metric_names_of_promql() -> None:
    query = 'histogram_quantile(0.99, sum by (le) (rate(vega_x_bucket{a="b(c)"}[5m]))) * 60'
    assert metric_names(query) == {"vega_x_bucket"}
    assert metric_names("time() - vega_t > 300 or vector(0)") == {"vega_t"}
    assert metric_names('bottomk(10, vega_l{state=~"idle|x"})') == {"vega_l"}


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "vega-fleet.json").read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


async def live_sample_names(url: BrokerURL) -> tuple[set[str], str]:
    """Sample names a live exporter serves after a few real reports, and its /metrics URL's
    health check verdict."""
    a, b = "node-0000", "node-0001"
    messages = [
        ("telemetry", a, report(a, 1, t=NOW - 2.0, events=1, accuracy=0.7, lifetime_h=30.0)),
        ("telemetry", b, report(b, 4, t=NOW - 1.0, events=4, gaps=1, lifetime_h=900.0)),
        ("status", a, Status("learning", device=a, model="digits", last_seq=1).to_json()),
        ("error", b, ErrorMessage(b, "gap", "2..3 skipped", gap_first=2, gap_last=3).to_json()),
        ("error", b, ErrorMessage(b, "duplicate", "seq 4 again", seq=4).to_json()),
        ("error", b, ErrorMessage(b, "bad_shape", "wrong shape", seq=5).to_json()),
        ("error", a, ErrorMessage(a, "store_failed", "disk full", seq=2).to_json()),
    ]
    async with (
        FleetMonitor(url, clock=lambda: NOW) as monitor,
        MetricsServer(monitor, port=0) as server,
        aiomqtt.Client(**url.client_kwargs()) as node,
    ):
        for kind, device, payload in messages:
            await node.publish(f"vega/{device}/{kind}", payload, qos=1)
        async with asyncio.timeout(10):
            await monitor.wait_handled(len(messages))

        def scrape() -> str:
            with urllib.request.urlopen(server.url, timeout=10) as response:
                return str(response.read().decode())

        text = await asyncio.to_thread(scrape)
        verdict = await asyncio.to_thread(healthcheck.check, {"VEGA_EMU_HEALTH_URL": server.url})
    names = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    return names, str(verdict)


async def test_every_dashboard_query_uses_metrics_the_exporter_serves(
    embedded_broker: EmbeddedBroker,
) -> None:
    served, verdict = await live_sample_names(embedded_broker.url)
    assert verdict == "None"  # the health check passes on a connected monitor's /metrics
    queries = dashboard_queries()
    used: set[str] = set()
    for title, query in queries:
        names = metric_names(query)
        assert names, f"{title}: no metric in {query!r}"
        missing = names - served
        assert not missing, f"{title}: {query!r} uses {missing}, not served by the exporter"
        used |= names
    # what the dashboard must show (issue 15): battery, lifetime distribution, first to die,
    # accuracy, energy by phase, event lag, nodes online, gaps and rejected inputs
    for needed in (
        "vega_battery_soc_ratio",
        "vega_fleet_lifetime_seconds_bucket",
        "vega_lifetime_seconds",
        "vega_accuracy_ratio",
        "vega_energy_joules_total",
        "vega_event_lag_seconds_bucket",
        "vega_nodes",
        "vega_gaps_total",
        "vega_rejected_inputs_total",
    ):
        assert needed in used, needed


def test_the_dashboard_is_provisioned_from_prometheus() -> None:
    datasources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text()
    )["datasources"]
    (source,) = datasources
    dashboard = json.loads((DEPLOY / "grafana/dashboards/vega-fleet.json").read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/vega.yaml").read_text())
    path = providers["providers"][0]["options"]["path"]
    grafana = compose()["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{path}:ro" in grafana


# -- sizing: docs/scaling.md -----------------------------------------------------------------


def quantity_mib(text: str) -> float:
    units = {"Mi": 1.0, "Gi": 1024.0}
    return float(text[:-2]) * units[text[-2:]]


def quantity_cores(text: str) -> float:
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_shard_requests_follow_the_benchmarks() -> None:
    """The arithmetic of docs/scaling.md, from the result files, against every overlay."""
    results = ROOT / "benchmarks" / "results"
    runs = json.loads((results / "fleet_capacity.json").read_text())["runs"]
    # the shards run a session per node (deploy/k8s/base: each device its own last will),
    # sized on every node's event of a minute at the same instant (the worst case)
    runs = [
        r
        for r in runs
        if (r.get("connection", "node"), r.get("arrivals", "burst")) == ("node", "burst")
    ]
    small, large = runs[0], runs[-1]  # the real `vega-emu fleet`, smallest and largest size
    per_node = (large["fleet_rss_mib"] - small["fleet_rss_mib"]) / (
        large["devices"] - small["devices"]
    )
    per_process = (small["fleet_rss_mib"] - small["devices"] * per_node) / small["workers"]
    core_s = large["fleet_cpu_s_per_event"]
    doc = (ROOT / "docs" / "scaling.md").read_text(encoding="utf-8")
    figures = (core_s, small["fleet_rss_mib"], large["fleet_rss_mib"])
    for figure in (*figures, round(per_node, 2), round(per_process, 1)):
        assert str(figure) in doc, figure
    for name in ("base", *OVERLAYS):
        docs = rendered(name)
        env = config_map(docs)
        nodes, workers = int(env["SHARD_SIZE"]), int(env["WORKERS"])
        fleet = by_key(docs)["StatefulSet", "vega-fleet"]["spec"]["template"]["spec"]
        resources = fleet["containers"][0]["resources"]
        memory = workers * per_process + nodes * per_node
        cpu = nodes * core_s / 60 * 1.2  # one event per node per minute, 20 % for the rest
        assert quantity_mib(resources["requests"]["memory"]) == math.ceil(memory / 100) * 100
        assert quantity_mib(resources["limits"]["memory"]) == math.ceil(memory * 1.25 / 100) * 100
        assert quantity_cores(resources["requests"]["cpu"]) == math.ceil(cpu * 10) / 10
        assert quantity_cores(resources["limits"]["cpu"]) == workers
        row = f"{nodes:,} nodes, {workers} worker"
        assert row in doc, row
