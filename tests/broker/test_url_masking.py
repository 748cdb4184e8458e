"""A password in a broker URL is never shown, however malformed the URL is.

The parser finds the password by the last ``@`` before it trusts anything else in the URL, so
``stream:PW@host``, ``mqtt:/...``, ``mqtt//...`` and ``mqtt:stream:...`` -- refused for their
scheme -- are masked as well as a well-formed URL is. Checked on the parser with hypothesis and
on every command that takes ``--broker``, as real processes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from broker import BrokerURLError, parse_broker_url
from broker.url import free_port, mask_url

#: A character only the generated passwords hold: seeing it anywhere means a piece leaked.
MARK = "\u2603"
PREFIXES = (
    "",
    "mqtt:",
    "mqtt:/",
    "mqtt//",
    "mqtt:///",
    "mqtt://",
    "mqtts://",
    "mqtts:/",
    "MQTT://",
    " mqtt://",
    "http://",
    "mqtt:stream:",
    "mqtt://mqtt://",
)
HOSTS = (
    "127.0.0.1:4",
    "h",
    "h:1",
    "",
    "h:notaport",
    "h:99999",
    "h:1/path",
    "h:1?q#f",
    "[::1]:1884",
    "[::1",
    ":1",
    "h:1:2",
)
ISSUE_FORMS = (
    "stream:{pw}@127.0.0.1:4",
    "mqtt:/stream:{pw}@127.0.0.1:4",
    "mqtt//stream:{pw}@127.0.0.1:4",
    "mqtt:stream:{pw}@127.0.0.1:4",
)

no_mark = st.text(st.characters(blacklist_characters=MARK, blacklist_categories=("Cs",)))


def texts_of(exc: BaseException) -> str:
    """``str`` and ``repr`` of an exception and of every exception chained to it."""
    seen: list[str] = []
    current: BaseException | None = exc
    while current is not None:
        seen += [str(current), repr(current), *map(repr, current.args)]
        current = current.__cause__ or current.__context__
    return "\n".join(seen)


@st.composite
def urls_with_a_password(draw: st.DrawFn) -> tuple[str, str]:
    """(URL, password): ``prefix user SEP password @ host``, the prefix and host from a list of
    malformed and valid ones or arbitrary text; the password holds :data:`MARK` somewhere."""
    password = draw(no_mark) + MARK + draw(no_mark)
    prefix = draw(st.sampled_from(PREFIXES) | no_mark)
    user = draw(st.sampled_from(("stream", "", "node-0000", "a:b")) | no_mark)
    separator = draw(st.sampled_from((":", "@", "::")))
    host = draw(st.sampled_from(HOSTS) | no_mark)
    return f"{prefix}{user}{separator}{password}@{host}", password


@given(urls_with_a_password())
def test_no_part_of_the_password_is_ever_shown(case: tuple[str, str]) -> None:
    url, password = case
    assert MARK not in mask_url(url)
    try:
        parsed = parse_broker_url(url, environ={})
    except BrokerURLError as exc:
        shown = texts_of(exc)
    else:
        shown = f"{parsed}\n{parsed!r}"
    assert MARK not in shown and password not in shown, shown


@given(no_mark, no_mark)
def test_a_url_without_a_password_is_shown_as_given_after_the_last_at(head: str, tail: str) -> None:
    """Masking hides what is before the last ``@``, not what the reader needs to fix the rest."""
    assume("@" not in tail and ":" not in tail)
    assert mask_url(f"{head}@{tail}").endswith(f"***@{tail}")


@pytest.mark.parametrize("form", ISSUE_FORMS)
def test_the_malformed_forms_are_refused_with_the_password_masked(form: str) -> None:
    with pytest.raises(BrokerURLError) as info:
        parse_broker_url(form.format(pw="PW"), environ={})
    message = str(info.value)
    assert "PW" not in message
    assert "'***@127.0.0.1:4' must start with mqtt:// or mqtts://" in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mqtt://alice:pw@h:1", "mqtt://***@h:1"),
        ("mqtts://alice:pw@h", "mqtts://***@h"),
        ("mqtt://stream:PW", "mqtt://stream:***"),  # the @host forgotten: PW sits where a port is
        ("stream:PW", "stream:***"),
        ("mqtt://h:1884", "mqtt://h:1884"),
        ("mqtt://h:99999", "mqtt://h:99999"),
        ("mqtt://h:1/path", "mqtt://h:1/path"),
        ("mqtt://[::1]:1884", "mqtt://[::1]:1884"),
        ("mqtt://[::1]:x", "mqtt://[::1]:***"),
        ("http://h:1", "http://h:1"),
    ],
)
def test_mask_url_keeps_what_cannot_be_a_password(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_a_user_name_with_an_at_is_refused_not_shown() -> None:
    """``user@password@host`` is a typo for ``user:password@host``: as a user name the
    password would be printed in every log line that names the broker."""
    with pytest.raises(BrokerURLError, match="user name holds an '@'") as info:
        parse_broker_url("mqtt://stream@PW@h:1", environ={})
    assert "PW" not in str(info.value)
    assert parse_broker_url("mqtt://me%40corp@h:1", environ={}).username == "me@corp"


# -- the commands, as real processes -------------------------------------------------------------

PASSWORD = "PWs3cr3tPW"
#: Box-drawing characters and white space: rich draws error panels and wraps long lines.
_LAYOUT = re.compile(r"[\s\u2500-\u257f]+")


def commands(where: Path) -> dict[str, list[str]]:
    source = where / "samples.jsonl"
    source.write_text('{"device": "node-0000", "x": [1], "label": 1}\n', encoding="utf-8")
    return {
        "node": ["node", "--id", "node-0000", "--state-dir", str(where / "node")],
        "fleet": ["fleet", "-n", "1", "--state-dir", str(where / "fleet")],
        # a broker that is down at start is waited for up to --max-outage: a second is enough here
        "stream": ["stream", "--devices", "1", "--events", "1", "--max-outage", "1"],
        "monitor": ["monitor", "--duration", "1"],
        "bridge": ["bridge", "--from", str(source), "--device", "node-0000"],
    }


def run_cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"COLUMNS": "100"},
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.parametrize(
    ("command", "form"),
    [
        ("node", "stream:{pw}@127.0.0.1:4"),
        ("fleet", "mqtt:/stream:{pw}@127.0.0.1:4"),
        ("stream", "mqtt//stream:{pw}@127.0.0.1:4"),
        ("monitor", "mqtt:stream:{pw}@127.0.0.1:4"),
        ("bridge", "stream:{pw}@127.0.0.1:4"),
        ("node", "mqtt://stream:{pw}"),
        ("monitor", "mqtt://stream@{pw}@127.0.0.1:4"),
        # the bridge's source is a URL too: a mistyped one is not taken for a file name
        ("bridge-from", "mqtt:/stream:{pw}@127.0.0.1:4/sensors/#"),
        ("bridge-from", "mqtt//stream:{pw}@127.0.0.1/sensors/#"),
        ("bridge-from", "stream:{pw}@127.0.0.1:4"),
        ("bridge-from", "mqtt:stream:{pw}@127.0.0.1"),
        # well formed, nothing listens: the connection error names the broker, masked
        ("stream", "mqtt://stream:{pw}@127.0.0.1:{port}"),
        ("monitor", "mqtt://stream:{pw}@127.0.0.1:{port}"),
    ],
)
def test_no_command_prints_the_password(command: str, form: str, tmp_path: Path) -> None:
    url = form.format(pw=PASSWORD, port=free_port())
    if command == "bridge-from":  # the password is in the bridge's source, not its broker
        done = run_cli(["bridge", "--from", url, "--device", "node-0000"])
    else:
        done = run_cli([*commands(tmp_path)[command], "--broker", url])
    output = done.stdout + done.stderr
    assert done.returncode in (1, 2), output
    assert "***" in output, output  # it did reach the URL and named it
    for text in (output, _LAYOUT.sub("", output)):
        assert "PW" not in text and "s3cr3t" not in text, output
