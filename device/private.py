"""Private files: a node's state is its weights and its stored training latents -- not for others.

State directories the node creates are 0700 and every file it writes is 0600, whatever the
umask. SQLite creates a database's ``-wal`` and ``-shm`` files with the database file's own
permissions, so creating the database file 0600 before SQLite opens it covers them too.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) with mode 0700; an existing one is left as it is, with a
    warning if others can enter it (the files in it are 0600 all the same)."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask
    else:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning(
                "state directory %s has mode %03o: others can list it (its files are 0600); "
                "chmod 700 it or use a private directory",
                path,
                mode,
            )
    return path


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists with mode 0600 (created empty if missing, tightened if not)."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def private_database(path: Path) -> Path:
    """The database file and any SQLite side files that already exist, 0600."""
    private_file(path)
    for suffix in SQLITE_SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.chmod(side, FILE_MODE)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, then rename), mode 0600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # an old temporary may exist with other permissions
        with os.fdopen(fd, "wb") as out:
            fd = -1
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise


__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "private_database",
    "private_dir",
    "private_file",
    "write_private",
]
