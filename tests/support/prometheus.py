"""A real Prometheus server (and promtool) for tests: found once, started per test, queried over
its HTTP API.

Debian's ``prometheus`` package gives both binaries. Without them a test skips with the reason
-- unless ``VEGA_EMU_REQUIRE_PROMETHEUS=1`` (CI), then it fails, as for Mosquitto
(:mod:`tests.support.mosquitto`).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import pytest
import yaml

from tests.support.wait import wait_until

__all__ = [
    "REQUIRE_PROMETHEUS",
    "PrometheusServer",
    "Sample",
    "find_binary",
    "promtool",
    "require_prometheus",
]

#: CI sets VEGA_EMU_REQUIRE_PROMETHEUS=1: a missing binary then fails instead of skipping
REQUIRE_PROMETHEUS: Final = os.environ.get("VEGA_EMU_REQUIRE_PROMETHEUS") == "1"
#: where Debian puts them when PATH does not say
FALLBACK_DIR: Final = Path("/usr/bin")
READY_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 20.0
HTTP_TIMEOUT_S: Final = 10.0


def find_binary(name: str) -> Path | None:
    """``name`` (prometheus, promtool) on PATH or in /usr/bin, or None."""
    found = shutil.which(name) or shutil.which(name, path=str(FALLBACK_DIR))
    return Path(found) if found else None


def require_prometheus() -> tuple[Path, Path]:
    """The prometheus and promtool binaries; skip without them -- unless CI says they must be
    there, then fail."""
    prometheus, tool = find_binary("prometheus"), find_binary("promtool")
    if prometheus is not None and tool is not None:
        return prometheus, tool
    if REQUIRE_PROMETHEUS:
        pytest.fail("VEGA_EMU_REQUIRE_PROMETHEUS=1 but prometheus or promtool is missing")
    pytest.skip("prometheus is not installed (apt-get install prometheus)")


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``promtool ARGS`` run to its end (skips or fails as :func:`require_prometheus`)."""
    _, tool = require_prometheus()
    return subprocess.run(
        [str(tool), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Sample:
    """One element of an instant vector: its labels and value (NaN and Inf as Prometheus says)."""

    labels: dict[str, str]
    value: float


class PrometheusServer:
    """``prometheus`` scraping ``targets`` every ``scrape_interval_s``, its TSDB in ``directory``,
    its web API on a free local port; stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(
        self, directory: Path, targets: list[str], *, scrape_interval_s: float = 1.0
    ) -> None:
        self.directory = directory
        self.targets = targets
        self.scrape_interval_s = scrape_interval_s
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        every = f"{self.scrape_interval_s:g}s"
        return {
            "global": {"scrape_interval": every, "evaluation_interval": every},
            "scrape_configs": [
                {
                    "job_name": "vega",
                    "scrape_timeout": every,
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }

    async def __aenter__(self) -> Self:
        binary, _ = require_prometheus()
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config()), encoding="utf-8")
        self.port = free_port()
        self.log = self.directory / "prometheus.log"
        with self.log.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                stdout=log,
                stderr=log,
            )
        try:
            await wait_until(self._ready, READY_TIMEOUT_S, what=f"prometheus ready ({self.log})")
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    async def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.returncode is not None:
            raise AssertionError(f"prometheus exited: {self.log.read_text(errors='replace')}")
        try:
            await asyncio.to_thread(self._get, "/-/ready")
        except (urllib.error.URLError, OSError):
            return False
        return True

    def _get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=HTTP_TIMEOUT_S) as response:
            return bytes(response.read())

    async def query(self, expr: str) -> list[Sample]:
        """The instant vector (or scalar, as one unlabelled sample) ``expr`` gives now; an API
        error fails naming the query."""
        path = "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        body = json.loads(await asyncio.to_thread(self._get, path))
        assert body["status"] == "success", f"{expr!r}: {body}"
        data = body["data"]
        if data["resultType"] == "scalar":
            return [Sample({}, float(data["result"][1]))]
        assert data["resultType"] == "vector", f"{expr!r}: {data['resultType']}"
        return [Sample(dict(r["metric"]), float(r["value"][1])) for r in data["result"]]

    async def targets_up(self) -> bool:
        """Whether every target's last scrape succeeded."""
        body = json.loads(await asyncio.to_thread(self._get, "/api/v1/targets"))
        active = body["data"]["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)
