"""deploy/mosquitto/init.py: the broker config bounds input as ``vega-emu broker``'s does, and
every file it writes is private from the moment it exists."""

from __future__ import annotations

import importlib.util
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from broker.limits import BrokerLimits
from broker.mosquitto import MosquittoConfig, render_config
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


def env_for(where: Path) -> dict[str, str]:
    secrets = where / "secrets"
    return {f"{u.upper()}_PASSWORD_FILE": str(secrets / u) for u in ("stream", "monitor", "fleet")}


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
    assert len(written) == 6
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
    names = ["acl", "fleet", "monitor", "mosquitto.conf", "passwords", "stream"]
    assert files == dict.fromkeys(names, 0o600)
