"""The image, built from deploy/Dockerfile without a Docker daemon and run for real.

Debian's ``mmdebstrap`` makes the base offline, ``buildah`` builds the Dockerfile on it
unchanged but for its ``PYTHON_IMAGE`` argument, and the commands run in the image as a
``docker run`` would run them: through its entrypoint, as its non-root user, in its working
directory. A second run with the same Dockerfile, locks and sources reuses the built image
(tests/support/image.py); docs/operations.md, "Building the image without Docker", shows the
same commands.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.image import (
    BASE_DPKG_EXCLUDES,
    BASE_IMAGE,
    BASE_PACKAGES,
    BUILD_CA_BUNDLE,
    BUILD_PIP_CONF,
    CONTAINER_PREFIX,
    DEBIAN_SUITE,
    BuiltImage,
    ImageContainer,
    cache_dir,
    ensure_image,
    image_lock,
    remove_leftover_containers,
    require_image_tools,
)

ROOT = Path(__file__).resolve().parents[2]

OPERATIONS = ROOT / "docs" / "operations.md"


def _explain(done: object) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"  # type: ignore[attr-defined]


def test_image_docs_show_the_commands_the_test_runs() -> None:
    """docs/operations.md's "Building the image without Docker" has the base, build and run
    options of tests/support/image.py (a change to one shows up against the other)."""
    text = OPERATIONS.read_text()
    start = text.index("### Building the image without Docker")
    section = " ".join(text[start : text.index("\n## ", start)].replace("\\\n", " ").split())
    expected = [
        "mmdebstrap --variant=apt --format=tar",
        "--include=" + ",".join(BASE_PACKAGES),
        *(f"'--dpkgopt=path-exclude={pattern}'" for pattern in BASE_DPKG_EXCLUDES),
        f"{DEBIAN_SUITE} python-base.tar",
        f'buildah commit "$c" {BASE_IMAGE}',
        "buildah bud --isolation chroot --format docker --pull=never",
        f"--build-arg PYTHON_IMAGE={BASE_IMAGE}",
        f'--volume "$PWD/pip.conf:{BUILD_PIP_CONF}:ro"',
        f"--volume {BUILD_CA_BUNDLE}:{BUILD_CA_BUNDLE}:ro",
        "buildah run --isolation chroot --user 10001:10001 vega-emu-try -- vega-emu fleet --help",
        "vega-emu up --devices 2 --events 3",
    ]
    missing = [words for words in expected if words not in section]
    assert not missing, f"docs/operations.md lacks {missing}"


@pytest.fixture(scope="module")
def image() -> Iterator[tuple[BuiltImage, ImageContainer]]:
    """The built (or reused) image and a working container of it, the cache's lock held."""
    require_image_tools()
    cache = cache_dir()
    with image_lock(cache):
        remove_leftover_containers()
        built = ensure_image(ROOT, cache)
        print(
            f"image {built.tag}: {'built' if built.built else 'reused'}"
            f" (base {built.base_s:.0f} s, build {built.build_s:.0f} s)"
        )
        with ImageContainer(built.tag, f"{CONTAINER_PREFIX}{os.getpid()}") as container:
            yield built, container


@pytest.mark.slow
def test_image_runs_as_its_non_root_user_through_its_entrypoint(
    image: tuple[BuiltImage, ImageContainer],
) -> None:
    _, container = image
    assert container.entrypoint == ("vega-emu",)
    assert container.user == "10001:10001"
    done = container.run(["id", "-u"], entrypoint=False)
    assert done.returncode == 0, _explain(done)
    assert done.stdout.strip() == "10001"
    done = container.run(["--help"])
    assert done.returncode == 0, _explain(done)
    assert "fleet" in done.stdout


@pytest.mark.slow
def test_image_vega_emu_fleet_help(image: tuple[BuiltImage, ImageContainer]) -> None:
    _, container = image
    done = container.run(["fleet", "--help"])
    assert done.returncode == 0, _explain(done)
    assert "Usage: vega-emu fleet" in done.stdout


@pytest.mark.slow
def test_image_vega_emu_up_learns_every_event(image: tuple[BuiltImage, ImageContainer]) -> None:
    """An embedded broker, two devices, three events each, the bundled data and the model the
    build trained: all six learned, and the run recorded in the user's working directory."""
    _, container = image
    done = container.run(["up", "--devices", "2", "--events", "3"])
    assert done.returncode == 0, _explain(done)
    summary = " ".join((done.stdout + done.stderr).split())
    assert "vega-emu fleet: 6/6 events learned" in summary, _explain(done)
    assert "answered 6 of 6 batch(es): 6 learned, 0 duplicate" in summary, _explain(done)
    assert "0 refused, 0 lost in gaps" in summary, _explain(done)
    recorded = re.search(r"run recorded in (\S+/run\.sqlite)", summary)
    assert recorded is not None, _explain(done)
    listed = container.run(["ls", "-l", f"/var/lib/vega-emu/{recorded[1]}"], entrypoint=False)
    assert listed.returncode == 0, _explain(listed)


@pytest.mark.slow
def test_image_keeps_none_of_the_builds_pip_settings(
    image: tuple[BuiltImage, ImageContainer],
) -> None:
    """The index and the CA bundle reached the build's pip by mounts: the image has neither
    (at most the empty file a mount point leaves), its CA bundle is the one Debian made."""
    built, container = image
    done = container.run(["cat", BUILD_PIP_CONF], entrypoint=False)
    assert done.stdout == "", f"{BUILD_PIP_CONF} in the image:\n{done.stdout}"
    done = container.run(["cat", BUILD_CA_BUNDLE], entrypoint=False)
    assert done.returncode == 0, _explain(done)
    with tarfile.open(built.base_tarball) as base:
        member = base.extractfile("." + BUILD_CA_BUNDLE)
        assert member is not None
        debian_bundle = member.read().decode()
    assert done.stdout == debian_bundle, "the image's CA bundle is not the one of its base"
