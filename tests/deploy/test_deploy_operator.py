"""The deployed stacks' operator: a user with a password of its own (a volume in compose, a
Secret in Kubernetes) that only the broker and the operator's own ``vega-emu ctl`` hold, and a
compose service that runs ``ctl`` and ``rollout`` on demand only. What the login may do on the
deployed broker: tests/deploy/test_deploy_broker_probe.py."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.deploy.stack import DEPLOY, IMAGE, OVERLAYS, by_key, compose, rendered
from tests.deploy.test_deploy import parse_vega_emu

OPERATOR_URL = "mqtts://operator@mosquitto:8883"


def test_compose_runs_the_operators_tools_on_demand_with_its_own_password() -> None:
    data = compose()
    operator = data["services"]["operator"]
    assert operator["image"] == IMAGE and operator["profiles"] == ["operator"]  # not on `up`
    assert operator["restart"] == "no" and operator["networks"] == ["mqtt"]
    assert operator["entrypoint"] == ["vega-emu"]
    assert operator["environment"]["VEGA_EMU_MQTT_CA_FILE"] == "/tls/ca.crt"
    assert sorted(operator["volumes"]) == ["mqtt-ca:/tls:ro", "secret-operator:/secrets:ro"]
    init = data["services"]["mosquitto-init"]
    written = Path(init["environment"]["OPERATOR_PASSWORD_FILE"])
    assert f"secret-operator:{written.parent}" in init["volumes"]
    # the command line compose.yaml documents is one vega-emu takes, reading that file
    documented = next(line for line in open_compose_lines() if "run --rm operator ctl" in line)
    args = shlex.split(documented.partition("operator ctl")[2].rstrip("\\"))
    args += shlex.split(next_line_after(documented).lstrip("#"))
    name, params = parse_vega_emu(["ctl", *args])
    assert name == "ctl get" and params["broker"] == OPERATOR_URL
    assert params["password_file"] == Path("/secrets") / written.name


def open_compose_lines() -> list[str]:
    return (DEPLOY / "compose.yaml").read_text(encoding="utf-8").splitlines()


def next_line_after(line: str) -> str:
    lines = open_compose_lines()
    return lines[lines.index(line) + 1]


@pytest.mark.parametrize("name", OVERLAYS)
def test_k8s_the_operator_password_is_the_brokers_only(name: str) -> None:
    docs = by_key(rendered(name))
    assert docs["Secret", "vega-mqtt-operator"]["data"].keys() == {"operator"}
    holders = [
        who
        for (kind, who), doc in docs.items()
        if kind in ("Deployment", "StatefulSet")
        and any(
            v.get("secret", {}).get("secretName") == "vega-mqtt-operator"
            for v in doc["spec"]["template"]["spec"].get("volumes", [])
        )
    ]
    assert holders == [("mosquitto" if name.endswith("small") else "emqx")]
    broker = docs[("StatefulSet", holders[0])]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for c in broker["initContainers"] for e in c.get("env", [])}
    assert env["OPERATOR_PASSWORD_FILE"] == "/secrets/operator/operator"
