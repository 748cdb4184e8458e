"""Mosquitto's data directory is private whatever was there before and whatever the umask.

It holds the password hashes, the ACL, the persistence database and a log of every client's
id, user name and address: 0700, and every file 0600 -- the log while the broker writes it.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import Mosquitto, MosquittoConfig
from broker.mosquitto import render_config
from tests.support.mosquitto import require_mosquitto
from tests.support.strace import created_modes

FILES = ("acl", "mosquitto.conf", "mosquitto.log", "passwords")


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that takes nothing away: the modes must not depend on the user's umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.mosquitto
@pytest.mark.usefixtures("open_umask")
async def test_an_open_data_dir_and_its_files_are_made_private(tmp_path: Path) -> None:
    require_mosquitto()
    data = tmp_path / "mq"
    data.mkdir(mode=0o755)
    for name in FILES:  # left by an older run, or made by hand
        (data / name).write_text("old\n")
        (data / name).chmod(0o644)
    users = tmp_path / "users.txt"
    users.write_text("node-0000:p0\nstream:ps\n")
    config = MosquittoConfig(data_dir=data, password_file=users, acl_devices=("node-0000",))
    async with Mosquitto(config):
        assert mode(data) == 0o700
        assert {name: mode(data / name) for name in FILES} == dict.fromkeys(FILES, 0o600)
    assert mode(data / "mosquitto.db") == 0o600  # Mosquitto's own, saved on the way out


@pytest.mark.mosquitto
@pytest.mark.usefixtures("open_umask")
async def test_a_new_data_dir_is_private(tmp_path: Path) -> None:
    require_mosquitto()
    data = tmp_path / "new" / "mq"
    async with Mosquitto(MosquittoConfig(data_dir=data)):
        assert mode(data) == 0o700
        assert mode(data / "mosquitto.log") == mode(data / "mosquitto.conf") == 0o600


@pytest.mark.parametrize(("euid", "user"), [(0, "user root"), (1000, None), (102, None)])
def test_only_a_broker_started_by_root_is_told_to_stay_root(
    euid: int, user: str | None, tmp_path: Path
) -> None:
    """Mosquitto switches users only when it runs as root (to ``mosquitto`` by default, which
    could not enter the 0700 data dir): for anyone else a ``user`` line is noise."""
    lines = render_config(MosquittoConfig(data_dir=tmp_path), 1884, euid=euid).splitlines()
    assert [line for line in lines if line.startswith("user ")] == ([user] if user else [])


LAUNCH = """
import asyncio, sys
from pathlib import Path
from broker import Mosquitto, MosquittoConfig

async def main() -> None:
    config = MosquittoConfig(
        data_dir=Path(sys.argv[1]), password_file=Path(sys.argv[2]), acl_devices=("node-0000",)
    )
    async with Mosquitto(config):
        pass

asyncio.run(main())
"""


@pytest.mark.mosquitto
def test_each_file_is_created_0600_not_tightened_after(tmp_path: Path) -> None:
    """The password hashes are never, even for a moment, in a file others may open."""
    require_mosquitto()
    users = tmp_path / "users.txt"
    users.write_text("node-0000:p0\n")
    data = tmp_path / "mq"
    modes = created_modes(
        [sys.executable, "-c", LAUNCH, str(data), str(users)], under=data, cwd=tmp_path
    )
    ours = {path.name: mode for path, mode in modes.items() if path.name in (*FILES, "mq")}
    assert ours == {"mq": 0o700} | dict.fromkeys(FILES, 0o600)


def test_the_readme_recipe_writes_its_password_file_private(tmp_path: Path) -> None:
    """The README's own first line of the Mosquitto recipe, run as it is under umask 022."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    [line] = [line for line in readme.splitlines() if line.rstrip().endswith("> users.txt)")]
    subprocess.run(["bash", "-c", f"umask 022 && {line}"], cwd=tmp_path, check=True, timeout=30)
    users = tmp_path / "users.txt"
    assert users.read_text().startswith("node-0000:") and mode(users) == 0o600
