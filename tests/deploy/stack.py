"""The deployed stack as the tests read it: deploy/'s scripts as modules, the compose file, and
the Kubernetes kustomizations rendered from a copy of deploy/k8s whose secret files were made
by ``deploy/k8s/make-secrets.py`` (the repository holds none, as a fresh clone does)."""

from __future__ import annotations

import atexit
import functools
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from tests.deploy.kustomize import Manifest, key, render

__all__ = [
    "DEPLOY",
    "IMAGE",
    "K8S",
    "KUSTOMIZATIONS",
    "OVERLAYS",
    "ROOT",
    "by_key",
    "compose",
    "copy_k8s",
    "k8s_with_secrets",
    "load_script",
    "make_secrets",
    "rendered",
    "workloads",
]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUSTOMIZATIONS = ["base", "overlays/small", "overlays/large"]
OVERLAYS = {"overlays/small": 200, "overlays/large": 100_000}  # devices each one runs
IMAGE = "vega-emu:latest"


def load_script(name: str, path: Path) -> ModuleType:
    """A script of deploy/ as a module (deploy/ is no package: the image copies the files)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


make_secrets = load_script("deploy_make_secrets", K8S / "make-secrets.py")


def copy_k8s(where: Path) -> Path:
    """deploy/k8s copied to ``where/k8s`` without any secret file a developer made."""
    target = where / "k8s"
    shutil.copytree(K8S, target, ignore=shutil.ignore_patterns("secrets"))
    return target


@functools.cache
def k8s_with_secrets() -> Path:
    """A copy of deploy/k8s with its secret files made by make-secrets.py (once per session)."""
    where = Path(tempfile.mkdtemp(prefix="vega-emu-k8s-"))
    atexit.register(shutil.rmtree, where, ignore_errors=True)
    target = copy_k8s(where)
    make_secrets.make(target)
    return target


def rendered(name: str) -> list[Manifest]:
    return render(k8s_with_secrets() / name)


def by_key(docs: list[Manifest]) -> dict[tuple[str, str], Manifest]:
    return {key(d): d for d in docs}


def workloads(docs: list[Manifest]) -> list[Manifest]:
    """The manifests that run pods (Deployments, StatefulSets, ...)."""
    return [d for d in docs if "template" in d.get("spec", {})]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return data
