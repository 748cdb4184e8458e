"""Random secrets in files, made once and kept: the admin passwords and MQTT passwords of deploy/.

    python secret.py FILE... [--owner UID]

Each FILE that does not exist yet is created mode 0600 (``os.open`` with the mode: never readable
by others, not even for a moment) holding ``secrets.token_urlsafe(24)`` and a newline; an existing
one is kept (its first line must not be empty) and tightened to 0600. ``--owner`` (when run as
root) gives the files to that uid: compose's ``mosquitto-tls`` service makes Grafana's admin
password for Grafana's uid (472) this way, ``deploy/k8s/make-secrets.py`` makes the files its
Secrets are generated from. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ensure_secret"]


def ensure_secret(path: Path, owner: int | None = None) -> bool:
    """Create ``path`` with a random secret unless it exists; ``True`` when it was created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        first = path.read_text(encoding="utf-8").splitlines()[:1]
        if not first or not first[0].strip():
            raise SystemExit(f"{path}: the first line is empty") from None
        os.chmod(path, 0o600)
        created = False
    else:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
        created = True
    if owner is not None and os.geteuid() == 0:
        os.chown(path, owner, owner)
    return created


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="secret.py", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--owner", type=int)
    args = parser.parse_args(argv)
    for path in args.files:
        made = ensure_secret(path, args.owner)
        print(f"{path}: {'made' if made else 'kept'}")


if __name__ == "__main__":
    main(sys.argv[1:])
