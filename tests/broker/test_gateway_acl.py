"""The gateway role of the generated ACL: a ``gw-{first}-{count}`` user gets its devices' rules
and its own status, and a name that does not fit the ACL's devices is refused before Mosquitto
starts. The fleet names its workers' gateways the same way (:func:`device.fleet.shard.gateway_id`).
"""

from __future__ import annotations

import pytest

from broker import BrokerError, acl_text, service_role
from broker.acl import gateway_devices
from dataset_stream.protocol import fleet_ids
from device.fleet.shard import gateway_id

IDS = fleet_ids(6)


def stanza(text: str, user: str) -> list[str]:
    block = text.split(f"user {user}\n", 1)[1].split("\n\n", 1)[0]
    return block.splitlines()


def test_a_gateway_user_gets_its_devices_rules_and_its_own_status() -> None:
    text = acl_text(IDS, "vega", service_users=["gw-node-0002-3", "monitor-lab"])
    rules = stanza(text, "gw-node-0002-3")
    assert rules[0] == "topic write vega/gateway/gw-node-0002-3/status"
    devices = IDS[2:5]
    assert sorted(rules[1:]) == sorted(
        {r for d in devices for r in stanza(text, d)}
    )  # exactly what those devices may do themselves, no wildcard but the shared topics'
    shared = {"topic read vega/heads/+/weights", "topic read vega/evalsets/+/set"}
    assert not [r for r in rules if ("+" in r or "#" in r) and r not in shared]
    assert "topic read vega/gateway/+/status" in stanza(text, "monitor-lab")
    assert service_role("gw-node-0002-3") == "gateway"


def test_the_fleet_names_its_gateways_as_the_acl_reads_them() -> None:
    for first, count in ((0, 6), (2, 3), (5, 1)):
        user = gateway_id(IDS[first], count)
        assert gateway_devices(user, IDS) == IDS[first : first + count]


@pytest.mark.parametrize(
    ("user", "why"),
    [
        ("gw-node-0009-1", "not one of the ACL's devices"),
        ("gw-node-0004-3", "2 devices from node-0004 on, not 3"),
    ],
)
def test_a_gateway_that_does_not_fit_the_devices_is_refused(user: str, why: str) -> None:
    with pytest.raises(BrokerError, match=why):
        acl_text(IDS, service_users=[user])


def test_gateway_names_are_reserved() -> None:
    with pytest.raises(BrokerError, match="reserved"):
        acl_text([*IDS, "gw-a-1"])
    for not_a_gateway in ("gw-node-0000", "gw--1", "gw-x-0", "gw-" + "x" * 60 + "-1"):
        with pytest.raises(BrokerError, match="service user"):
            service_role(not_a_gateway)
