"""Container health check of the vega-emu image (Docker HEALTHCHECK, Kubernetes exec probe).

- ``VEGA_EMU_HEALTH_URL`` set (a monitor: ``http://127.0.0.1:9108/metrics``): healthy when the
  page answers within 5 s and reports ``vega_monitor_connected 1`` (the monitor is connected to
  its broker);
- else ``VEGA_EMU_HEALTH_TCP`` set (``host:port``, e.g. the broker of a fleet shard or a
  stream): healthy when a TCP connection to it opens within 5 s;
- neither: healthy (the container runs as long as its process does; ``vega-emu fleet`` exits
  with status 1 on a failure a restart cannot mend).

Exit status 0: healthy, 1: not (the reason on stderr). Standard library only.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

TIMEOUT_S = 5.0
CONNECTED = re.compile(r"^vega_monitor_connected\s+1(\.0)?\s*$", re.M)


def check(env: Mapping[str, str]) -> str | None:
    """``None`` when healthy, else why not."""
    url = env.get("VEGA_EMU_HEALTH_URL")
    if url:
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                text = response.read().decode("utf-8", "replace")
        except (OSError, urllib.error.URLError) as exc:
            return f"{url}: {exc}"
        return None if CONNECTED.search(text) else f"{url}: the monitor is not connected"
    target = env.get("VEGA_EMU_HEALTH_TCP")
    if target:
        host, _, port = target.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=TIMEOUT_S):
                return None
        except (OSError, ValueError) as exc:
            return f"{target}: {exc}"
    return None


if __name__ == "__main__":
    problem = check(os.environ)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
    sys.exit(0 if problem is None else 1)
