"""Pin every third-party image of deploy/ by digest, or check that each one is.

    python deploy/pin-images.py [--tool docker|crane|skopeo]    # rewrite tag -> tag@sha256:...
    python deploy/pin-images.py --check                         # exit 1 if one is not pinned

The references are the ``image:`` lines of ``compose.yaml`` and of every ``k8s/**/*.yaml``, and
the ``ARG PYTHON_IMAGE=`` default of the ``Dockerfile``; the project's own ``vega-emu`` image is
built from that Dockerfile and is not pinned here. Each keeps its exact version tag, for the
reader, and gains (or changes) the digest the registry gives for that tag today, for the
machine: ``eclipse-mosquitto:2.0.20`` becomes ``eclipse-mosquitto:2.0.20@sha256:...``, and a
pull then gets those bytes whatever the tag points to later. To update: change the tag, run
this, review and commit the diff. It asks the registry through ``docker buildx imagetools
inspect`` (or ``crane digest``, or ``skopeo inspect``), so it needs that tool and the registry.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ImageRef", "pin", "references", "resolve_with"]

HERE = Path(__file__).resolve().parent
OWN = "vega-emu"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
LINE = re.compile(r"^(?P<lead>\s*(?:-\s+)?image:\s*|ARG PYTHON_IMAGE=)(?P<ref>\S+)(?P<tail>.*)$")


@dataclass(frozen=True, slots=True)
class ImageRef:
    """One image reference on one line of a file of deploy/."""

    path: Path
    line: int  # 1-based
    ref: str

    @property
    def name_tag(self) -> str:
        return self.ref.partition("@")[0]

    @property
    def digest(self) -> str | None:
        digest = self.ref.partition("@")[2]
        return digest or None


def files(root: Path) -> list[Path]:
    return [root / "Dockerfile", root / "compose.yaml", *sorted((root / "k8s").rglob("*.yaml"))]


def references(root: Path = HERE) -> Iterator[ImageRef]:
    """Every third-party image reference under ``root`` (a copy of deploy/)."""
    for path in files(root):
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            match = LINE.match(text)
            if match and not match["ref"].split(":")[0].endswith(OWN):
                yield ImageRef(path, number, match["ref"].strip("\"'"))


def resolve_with(tool: str) -> Callable[[str], str]:
    """A function from ``name:tag`` to the digest the registry has for it, by ``tool``."""
    commands = {
        "docker": ["docker", "buildx", "imagetools", "inspect", "--format", "{{json .Manifest}}"],
        "crane": ["crane", "digest"],
        "skopeo": ["skopeo", "inspect", "--format", "{{.Digest}}"],
    }

    def resolve(name_tag: str) -> str:
        target = f"docker://{name_tag}" if tool == "skopeo" else name_tag
        out = subprocess.run(
            [*commands[tool], target], capture_output=True, text=True, timeout=120, check=True
        ).stdout.strip()
        digest = str(json.loads(out)["digest"]) if tool == "docker" else out
        if not DIGEST.match(digest):
            raise SystemExit(f"{tool} gave no sha256 digest for {name_tag}: {out[:200]!r}")
        return digest

    return resolve


def pin(root: Path, resolve: Callable[[str], str]) -> list[ImageRef]:
    """Rewrite every reference under ``root`` to ``name:tag@digest``; the ones that changed."""
    changed = []
    digests: dict[str, str] = {}
    for path in files(root):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        for index, text in enumerate(lines):
            match = LINE.match(text.rstrip("\n"))
            if not match or match["ref"].split(":")[0].endswith(OWN):
                continue
            ref = ImageRef(path, index + 1, match["ref"])
            if ref.name_tag not in digests:
                digests[ref.name_tag] = resolve(ref.name_tag)
            pinned = f"{ref.name_tag}@{digests[ref.name_tag]}"
            if pinned != ref.ref:
                lines[index] = f"{match['lead']}{pinned}{match['tail']}\n"
                changed.append(ref)
        path.write_text("".join(lines), encoding="utf-8")
    return changed


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="pin-images.py", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a reference has no digest")
    parser.add_argument("--tool", choices=["docker", "crane", "skopeo"], default="docker")
    args = parser.parse_args(argv)
    if args.check:
        loose = [r for r in references() if r.digest is None or not DIGEST.match(r.digest)]
        for ref in loose:
            print(f"{ref.path.relative_to(HERE.parent)}:{ref.line}: {ref.ref} has no digest")
        raise SystemExit(1 if loose else 0)
    for ref in pin(HERE, resolve_with(args.tool)):
        print(f"{ref.path.relative_to(HERE.parent)}:{ref.line}: {ref.ref} pinned")


if __name__ == "__main__":
    main(sys.argv[1:])
