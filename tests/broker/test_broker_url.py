import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import BrokerURL, BrokerURLError, parse_broker_url


def test_plain_url() -> None:
    url = parse_broker_url("mqtt://broker.local:1884", environ={})
    assert url == BrokerURL(host="broker.local", port=1884)
    assert url.client_kwargs() == {"hostname": "broker.local", "port": 1884}


def test_default_ports() -> None:
    assert parse_broker_url("mqtt://h", environ={}).port == 1883
    assert parse_broker_url("mqtts://h", environ={}).port == 8883


def test_credentials_from_url_are_masked() -> None:
    url = parse_broker_url("mqtt://alice:s3cr%40t@h:1", environ={})
    assert (url.username, url.password) == ("alice", "s3cr@t")
    assert "s3cr" not in str(url) and "s3cr" not in repr(url)
    assert str(url) == "mqtt://alice:***@h:1"


def test_credentials_from_environment() -> None:
    env = {"VEGA_EMU_MQTT_USERNAME": "bob", "VEGA_EMU_MQTT_PASSWORD": "pw"}
    url = parse_broker_url("mqtt://h:2", environ=env)
    assert (url.username, url.password) == ("bob", "pw")
    assert url.client_kwargs()["password"] == "pw"


def test_tls_with_ca_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not really a cert")
    url = parse_broker_url("mqtts://h", ca_file=ca, environ={})
    assert url.tls and url.ca_file == ca
    with pytest.raises(BrokerURLError, match="does not exist"):
        parse_broker_url("mqtts://h", ca_file=tmp_path / "missing.pem", environ={})


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("http://h:1", "must start with mqtt"),
        ("mqtt://:1", "no host"),
        ("mqtt://h:99999", "cannot parse"),
        ("mqtt://h:1/path", "path"),
        ("h:1", "must start with mqtt"),
    ],
)
def test_bad_urls_name_the_problem(bad: str, why: str) -> None:
    with pytest.raises(BrokerURLError, match=why):
        parse_broker_url(bad, environ={})


def test_error_never_shows_the_password() -> None:
    with pytest.raises(BrokerURLError) as info:
        parse_broker_url("http://u:topsecret@h:1", environ={})
    assert "topsecret" not in str(info.value)


@given(st.text(max_size=60))
def test_arbitrary_text_parses_or_raises_url_error(text: str) -> None:
    with contextlib.suppress(BrokerURLError):
        parse_broker_url(text, environ={})


URL_SPECIAL = "/?#@:%&=+;,[]! $'\"\\"


@pytest.mark.parametrize("password", ["s3cr/t", "a#b?c", "p@ss:w0rd", URL_SPECIAL, "x" * 3 + "%2F"])
def test_any_password_parses_and_never_shows(password: str) -> None:
    from urllib.parse import quote

    for text, expected in (
        (f"mqtt://alice:{quote(password, safe='')}@h:1884", password),  # percent-encoded
        (f"mqtt://alice:{password}@h:1884", None),  # as typed
    ):
        url = parse_broker_url(text, environ={})
        assert (url.host, url.port, url.username) == ("h", 1884, "alice"), text
        if expected is not None:
            assert url.password == expected
        assert url.password and url.password not in str(url) + repr(url)


@pytest.mark.parametrize("password", ["s3cr/t", "a#b?c", "p@ss:w0rd", URL_SPECIAL])
@pytest.mark.parametrize(
    "template",
    [
        "mqtt://alice:{pw}@h:notaport",
        "mqtt://alice:{pw}@h:99999",
        "http://alice:{pw}@h:1",
        "mqtt://alice:{pw}@",
        "mqtt://alice:{pw}@h:1/path",
    ],
)
def test_errors_never_hold_any_part_of_the_password(password: str, template: str) -> None:
    with pytest.raises(BrokerURLError) as info:
        parse_broker_url(template.format(pw=password), environ={})
    message = str(info.value)
    pieces = [password[i : i + 3] for i in range(len(password) - 2)]
    leaked = [p for p in pieces if p in message and p not in template]
    assert not leaked, message


def test_password_file_and_its_errors(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cr/t#?\nignored\n")
    url = parse_broker_url("mqtt://alice@h:1", password_file=secret, environ={})
    assert url.password == "s3cr/t#?"
    with pytest.raises(BrokerURLError, match="once"):
        parse_broker_url("mqtt://alice:x@h:1", password_file=secret, environ={})
    with pytest.raises(BrokerURLError, match="missing"):
        parse_broker_url("mqtt://alice@h:1", password_file=tmp_path / "missing", environ={})
