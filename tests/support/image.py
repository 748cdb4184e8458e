"""The project's image built without a Docker daemon, cached, and commands run in it.

The base (Debian bookworm with its Python 3.11) is made offline from the machine's Debian
mirror by ``mmdebstrap`` and imported into buildah's store as :data:`BASE_IMAGE`;
``deploy/Dockerfile`` is then built by ``buildah bud --isolation chroot`` unchanged but for its
``PYTHON_IMAGE`` build argument, and commands run in a working container of the image by
``buildah run --isolation chroot``. docs/operations.md ("Building the image without Docker")
shows the same commands.

Costs are paid once per content, not per test run:

- the base tarball is cached in :func:`cache_dir` per :func:`base_key` (the Debian suite, the
  package list and ``requirements.lock``); the base image in buildah's store carries the key as
  a label, so it is imported again only when the key changed;
- the built image is tagged ``IMAGE_REPOSITORY:<key>`` by :func:`image_key` (the Dockerfile, the
  locks, the base key and every file the Dockerfile copies); a later run with the same key
  reuses it. Builds run with ``--layers``: after a change of the code only, the step that
  installs the locked dependencies comes from the layer cache. Each build drops the images
  and cached steps of other keys, so the store keeps one build and the layers it reuses. The
  store is the test's own, in :func:`cache_dir` (``buildah --root``): nothing of a user's
  store is touched;
- :func:`image_lock` (``fcntl.flock`` on a file in the cache) serialises test runs side by
  side (CI runs the suite twice at once): the second one waits and then reuses the first one's
  image. The lock is held while commands run, so a run can remove every working container
  named ``CONTAINER_PREFIX*`` -- those of a run that was killed -- without touching a live one.

The build's pip reaches the machine's own index: :func:`machine_pip_settings` reads pip's
configuration (files and ``PIP_*``), and :func:`build_image` mounts a ``pip.conf`` with those
settings at ``/etc/pip.conf`` and the machine's CA bundle over the image's for the ``RUN``
steps only (``buildah bud --volume``): a mount is not part of any layer, so neither the
index nor the certificate reaches the image (tests/deploy/test_image.py checks it).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

__all__ = [
    "BASE_DPKG_EXCLUDES",
    "BASE_IMAGE",
    "BASE_PACKAGES",
    "BUILD_CA_BUNDLE",
    "BUILD_PIP_CONF",
    "CONTAINER_PREFIX",
    "DEBIAN_SUITE",
    "IMAGE_REPOSITORY",
    "REQUIRE_IMAGE",
    "BuiltImage",
    "ImageContainer",
    "PipSettings",
    "base_key",
    "build_image",
    "cache_dir",
    "ensure_base",
    "ensure_image",
    "image_key",
    "image_lock",
    "machine_pip_settings",
    "make_base",
    "remove_leftover_containers",
    "require_image_tools",
]

#: CI sets VEGA_EMU_REQUIRE_IMAGE=1: missing tools (or not root) then fail instead of skipping
REQUIRE_IMAGE: Final = os.environ.get("VEGA_EMU_REQUIRE_IMAGE") == "1"

#: the name deploy/Dockerfile's PYTHON_IMAGE argument is given: the base made by mmdebstrap
BASE_IMAGE: Final = "localhost/python:3.11-slim-bookworm"
DEBIAN_SUITE: Final = "bookworm"
BASE_PACKAGES: Final = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
#: the machine's deb822 sources: its own mirror, with the security and update suites (without
#: it, mmdebstrap takes Debian's default mirror and adds those suites itself)
MACHINE_SOURCES: Final = Path("/etc/apt/sources.list.d/debian.sources")
#: a slim base: no manuals, documentation or translations (what python:*-slim leaves out too)
BASE_DPKG_EXCLUDES: Final = (
    "/usr/share/man/*",
    "/usr/share/doc/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
)
IMAGE_REPOSITORY: Final = "localhost/vega-emu-ci"
CONTAINER_PREFIX: Final = "vega-emu-ci-"
BASE_KEY_LABEL: Final = "org.vega-emu.ci.base-key"
#: where the build's pip finds its configuration and the CA bundle (bind mounts, RUN steps only)
BUILD_PIP_CONF: Final = "/etc/pip.conf"
BUILD_CA_BUNDLE: Final = "/etc/ssl/certs/ca-certificates.crt"

MMDEBSTRAP_TIMEOUT_S: Final = 900.0
BUILD_TIMEOUT_S: Final = 1800.0
RUN_TIMEOUT_S: Final = 300.0
STORE_TIMEOUT_S: Final = 300.0


def require_image_tools() -> None:
    """Skip without buildah, mmdebstrap or root -- unless CI says they must be there."""
    missing = [tool for tool in ("buildah", "mmdebstrap") if shutil.which(tool) is None]
    if missing:
        reason = f"{' and '.join(missing)} not installed (apt-get install buildah mmdebstrap)"
    elif os.geteuid() != 0:
        reason = "buildah --isolation chroot and mmdebstrap need root here"
    else:
        return
    if REQUIRE_IMAGE:
        pytest.fail(f"VEGA_EMU_REQUIRE_IMAGE=1 but {reason}")
    pytest.skip(reason)


def cache_dir() -> Path:
    """The image cache outside the clone: ``$VEGA_EMU_IMAGE_CACHE``, else
    ``$XDG_CACHE_HOME/vega-emu-ci``, else ``~/.cache/vega-emu-ci``."""
    explicit = os.environ.get("VEGA_EMU_IMAGE_CACHE")
    if explicit:
        path = Path(explicit)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        path = (Path(xdg) if xdg else Path.home() / ".cache") / "vega-emu-ci"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def image_lock(cache: Path) -> Iterator[None]:
    """Hold the cache's lock: one test run at a time builds, reuses or runs the image."""
    with (cache / "image.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- pip settings of the machine, for the build ----------------------------------------------


@dataclass(frozen=True, slots=True)
class PipSettings:
    """The machine's pip index settings that the build passes to its pip.

    Only remote indexes are passed (``http(s)://``): a ``file://`` index or a find-links
    directory of the machine is not in the build's file system, and every file the locks name
    is on the remote index by its hash.
    """

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    trusted_hosts: tuple[str, ...] = ()
    cert_path: Path | None = None
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        for url in (self.index_url, *self.extra_index_urls):
            if url is not None and not url.startswith(("http://", "https://")):
                raise ValueError(f"not a remote pip index: {url!r}")
        if self.cert_path is not None and not self.cert_path.is_file():
            raise ValueError(f"pip's CA bundle is not a file: {self.cert_path}")

    def pip_conf(self) -> str:
        """The ``pip.conf`` the build's pip reads (its CA bundle at :data:`BUILD_CA_BUNDLE`)."""
        lines = ["[global]"]
        if self.index_url is not None:
            lines.append(f"index-url = {self.index_url}")
        if self.extra_index_urls:
            lines.append(f"extra-index-url = {' '.join(self.extra_index_urls)}")
        if self.trusted_hosts:
            lines.append(f"trusted-host = {' '.join(self.trusted_hosts)}")
        if self.cert_path is not None:
            lines.append(f"cert = {BUILD_CA_BUNDLE}")
        if self.timeout_s is not None:
            lines.append(f"timeout = {self.timeout_s:g}")
        return "\n".join(lines) + "\n"

    def volumes(self, pip_conf: Path) -> list[str]:
        """``buildah bud --volume`` arguments: the config file and the CA bundle, read-only."""
        mounts = [f"{pip_conf}:{BUILD_PIP_CONF}:ro"]
        if self.cert_path is not None:
            mounts.append(f"{self.cert_path}:{BUILD_CA_BUNDLE}:ro")
        return [arg for mount in mounts for arg in ("--volume", mount)]


_CONFIG_LINE = re.compile(r"^(?P<where>[^.]*)\.(?P<key>[a-z-]+)=(?P<value>.*)$")


def machine_pip_settings() -> PipSettings:
    """The index settings the machine's pip uses: its configuration files, then ``PIP_*``
    (environment over files, as pip itself orders them), read by ``pip config list``."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    from_files: dict[str, str] = {}
    from_env: dict[str, str] = {}
    for line in listed.splitlines():
        match = _CONFIG_LINE.match(line.strip())
        if match is None:
            continue
        value = match["value"]
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        target = from_env if match["where"] == ":env:" else from_files
        target[match["key"]] = value
    settings = {**from_files, **from_env}

    def remote(key: str) -> tuple[str, ...]:
        words = settings.get(key, "").split()
        return tuple(url for url in words if url.startswith(("http://", "https://")))

    index = remote("index-url")
    cert = settings.get("cert")
    timeout = settings.get("timeout") or settings.get("default-timeout")
    return PipSettings(
        index_url=index[0] if index else None,
        extra_index_urls=remote("extra-index-url"),
        trusted_hosts=tuple(settings.get("trusted-host", "").split()),
        cert_path=Path(cert) if cert and Path(cert).is_file() else None,
        timeout_s=float(timeout) if timeout else None,
    )


# -- keys --------------------------------------------------------------------------------------


def _digest(parts: Sequence[bytes]) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(len(part).to_bytes(8, "big"))
        sha.update(part)
    return sha.hexdigest()[:16]


def _mirror() -> list[str]:
    """mmdebstrap's mirror argument: the machine's own sources file if it has one."""
    return [str(MACHINE_SOURCES)] if MACHINE_SOURCES.is_file() else []


def base_key(root: Path) -> str:
    """The base tarball's key: suite, packages, excludes, sources and ``requirements.lock``."""
    sources = b"".join(Path(mirror).read_bytes() for mirror in _mirror())
    return _digest(
        [
            DEBIAN_SUITE.encode(),
            ",".join(BASE_PACKAGES).encode(),
            ",".join(BASE_DPKG_EXCLUDES).encode(),
            sources,
            (root / "requirements.lock").read_bytes(),
        ]
    )


def _copied_paths(dockerfile: Path) -> list[str]:
    """The build-context paths the Dockerfile's ``COPY`` lines take (not ``--from`` a stage)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    paths: list[str] = []
    for line in text.splitlines():
        words = shlex.split(line.strip(), comments=True) if line.strip() else []
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        args = words[1:]
        if any(arg.startswith("--from") for arg in args):
            continue
        sources = [arg for arg in args if not arg.startswith("--")][:-1]
        paths.extend(sources)
    return paths


def _ignored(path: Path) -> bool:
    """What deploy/.dockerignore keeps out of the context (bytecode, egg-info)."""
    return (
        "__pycache__" in path.parts
        or path.suffix == ".pyc"
        or any(part.endswith(".egg-info") for part in path.parts)
    )


def image_key(root: Path, dockerfile: Path, base: str) -> str:
    """The built image's key: the Dockerfile, the locks, the base key and every file that a
    ``COPY`` of the Dockerfile takes from the build context (by relative path and content)."""
    parts = [dockerfile.read_bytes(), base.encode()]
    for lock in sorted(root.glob("requirements*.lock")):
        parts += [lock.name.encode(), lock.read_bytes()]
    files: set[Path] = set()
    for source in _copied_paths(dockerfile):
        path = root / source
        if path.is_dir():
            files.update(p for p in path.rglob("*") if p.is_file() and not _ignored(p))
        elif path.is_file():
            files.add(path)
        else:
            raise ValueError(f"{dockerfile.name} copies {source!r}, which does not exist")
    for path in sorted(files):
        parts += [path.relative_to(root).as_posix().encode(), path.read_bytes()]
    return _digest(parts)


# -- buildah -----------------------------------------------------------------------------------


def _buildah_command() -> list[str]:
    """``buildah`` on the test's own store in :func:`cache_dir`: its images, layer cache and
    working containers are the test's alone (pruning them touches no image of the user's)."""
    cache = cache_dir()
    return ["buildah", "--root", str(cache / "storage"), "--runroot", str(cache / "runroot")]


def _buildah(*args: str, timeout_s: float = STORE_TIMEOUT_S) -> str:
    done = subprocess.run(
        [*_buildah_command(), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout_s,
    )
    if done.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done.stdout


def _image_labels(name: str) -> dict[str, str] | None:
    """The labels of a stored image, or None where the store has no image of that name."""
    done = subprocess.run(
        [*_buildah_command(), "inspect", "--type", "image", name],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=STORE_TIMEOUT_S,
    )
    if done.returncode != 0:
        return None
    config = json.loads(done.stdout).get("OCIv1", {}).get("config", {})
    return dict(config.get("Labels") or {})


def make_base(tarball: Path) -> None:
    """Debian with its Python 3.11 as a root file system tarball, from the machine's mirror."""
    partial = tarball.with_name(f"{tarball.stem}.partial.tar")
    command = [
        "mmdebstrap",
        "--variant=apt",
        "--format=tar",
        "--include=" + ",".join(BASE_PACKAGES),
        *(f"--dpkgopt=path-exclude={pattern}" for pattern in BASE_DPKG_EXCLUDES),
        DEBIAN_SUITE,
        str(partial),
        *_mirror(),
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=MMDEBSTRAP_TIMEOUT_S,
    )
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"mmdebstrap exited {done.returncode}:\n{done.stderr[-4000:]}")
    partial.replace(tarball)


def ensure_base(cache: Path, key: str) -> Path:
    """:data:`BASE_IMAGE` in buildah's store from the cached tarball of ``key`` (made first
    where missing; returned); tarballs of other keys are removed."""
    tarball = cache / f"base-{key}.tar"
    if not tarball.is_file():
        make_base(tarball)
    for other in cache.glob("base-*.tar"):
        if other != tarball:
            other.unlink()  # another key's, or a partial one of a killed run
    labels = _image_labels(BASE_IMAGE)
    if labels is not None and labels.get(BASE_KEY_LABEL) == key:
        return tarball
    container = _buildah("from", "--pull=never", "scratch").strip()
    try:
        _buildah("add", "--quiet", container, str(tarball), "/")
        _buildah("config", "--cmd", "python3", "--label", f"{BASE_KEY_LABEL}={key}", container)
        _buildah("commit", "--quiet", container, BASE_IMAGE)
    finally:
        _buildah("rm", container)
    return tarball


def build_image(root: Path, dockerfile: Path, tag: str, pip: PipSettings) -> None:
    """``buildah bud`` of the Dockerfile on :data:`BASE_IMAGE`, pip reaching the machine's
    index through mounts that stay out of the image's layers."""
    with tempfile.TemporaryDirectory(prefix="vega-emu-pip-") as scratch:
        pip_conf = Path(scratch) / "pip.conf"
        pip_conf.write_text(pip.pip_conf())
        pip_conf.chmod(0o644)
        command = [
            "bud",
            "--isolation",
            "chroot",
            "--format",
            "docker",
            "--pull=never",
            "--layers",
            "--build-arg",
            f"PYTHON_IMAGE={BASE_IMAGE}",
            *pip.volumes(pip_conf),
            "--file",
            str(dockerfile),
            "--tag",
            tag,
            str(root),
        ]
        _buildah(*command, timeout_s=BUILD_TIMEOUT_S)


def _image_ids() -> set[str]:
    """The ids of every image in the store, intermediate ones (the layer cache) included."""
    return set(_buildah("images", "--all", "--no-trunc", "--format", "{{.ID}}").split())


def _drop_other_builds(keep: str, built_now: set[str]) -> None:
    """Remove the images of :data:`IMAGE_REPOSITORY` but ``keep``, then, over and over, the
    dangling intermediate images that the build just made did not: what other keys' builds
    left. A cached step that the new build reused (the locked dependencies) still has a
    child and stays, so the store holds one build and its layer cache."""
    listed = _buildah("images", "--format", "{{.Name}}:{{.Tag}}")
    for name in listed.split():
        if name.startswith(f"{IMAGE_REPOSITORY}:") and name != keep:
            _buildah("rmi", "--force", name)
    while True:
        dangling = _buildah(
            "images", "--all", "--no-trunc", "--filter", "dangling=true", "--format", "{{.ID}}"
        ).split()
        stale = [image for image in dangling if image not in built_now]
        if not stale:
            return
        _buildah("rmi", *stale)


def remove_leftover_containers() -> None:
    """Remove working containers named :data:`CONTAINER_PREFIX`* (a killed run's)."""
    listed = _buildah("containers", "--format", "{{.ContainerName}}")
    for name in listed.split():
        if name.startswith(CONTAINER_PREFIX):
            _buildah("rm", name)


@dataclass(frozen=True, slots=True)
class BuiltImage:
    """An image in buildah's store, and what it took to have it."""

    tag: str
    base_tarball: Path  # the root file system the image was built on
    built: bool  # False: reused from an earlier run with the same key
    base_s: float  # making (or reusing) and importing the base
    build_s: float  # buildah bud; 0 when reused


def ensure_image(root: Path, cache: Path) -> BuiltImage:
    """The image of ``root``'s Dockerfile and sources: reused when its key was built before,
    else built on the base. Call it holding :func:`image_lock`."""
    dockerfile = root / "deploy" / "Dockerfile"
    started = time.monotonic()
    base = base_key(root)
    tag = f"{IMAGE_REPOSITORY}:{image_key(root, dockerfile, base)}"
    tarball = ensure_base(cache, base)
    based = time.monotonic()
    built = _image_labels(tag) is None
    if built:
        before = _image_ids()
        build_image(root, dockerfile, tag, machine_pip_settings())
        _drop_other_builds(keep=tag, built_now=_image_ids() - before)
    return BuiltImage(
        tag=tag,
        base_tarball=tarball,
        built=built,
        base_s=based - started,
        build_s=time.monotonic() - based,
    )


class ImageContainer:
    """A working container of an image: commands run in it with its entrypoint, working
    directory, environment and user, as ``docker run IMAGE ARGS`` would run them."""

    def __init__(self, image: str, name: str) -> None:
        self.image = image
        self.name = name
        config = json.loads(_buildah("inspect", "--type", "image", image))["OCIv1"]["config"]
        self.entrypoint: tuple[str, ...] = tuple(config.get("Entrypoint") or ())
        self.user: str = config.get("User") or "0:0"

    def __enter__(self) -> ImageContainer:
        _buildah("from", "--pull=never", "--name", self.name, self.image)
        return self

    def __exit__(self, *exc: object) -> None:
        _buildah("rm", self.name)

    def run(
        self, args: Sequence[str], *, entrypoint: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``args`` after the image's entrypoint (or alone), as the image's user."""
        argv = [*(self.entrypoint if entrypoint else ()), *args]
        run = [*_buildah_command(), "run", "--isolation", "chroot", "--user", self.user]
        return subprocess.run(
            [*run, self.name, "--", *argv],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=RUN_TIMEOUT_S,
        )
