"""A node's state files seen from outside: what a test compares before and after an input."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["db_fingerprint"]


def db_fingerprint(state_dir: Path, device: str) -> dict[str, str]:
    """A hash of each of ``device``'s SQLite files (database, WAL, shared memory) by name."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(state_dir.glob(f"{device}.db*"))
    }
