"""A renderer for the subset of kustomize that ``deploy/k8s`` uses, for machines without it.

Supported, in a ``kustomization.yaml``: ``resources`` (YAML files, or directories with a
``kustomization.yaml`` of their own, rendered first) and ``patches`` given as ``path:`` to a
file of strategic-merge patches, each naming its target by ``kind`` and ``metadata.name``,
and ``secretGenerator`` entries of ``files`` (``key=path`` or ``path``) with an optional ``type``,
under ``generatorOptions: {disableNameSuffixHash: true}`` (the Secret keeps its name, so nothing
refers to a hashed one). A file a generator names that does not exist is an error naming it and
the command that makes it. Anything else in a kustomization (``namePrefix``, ``commonLabels``,
other generators or options, JSON 6902 patches, ``$patch`` directives, ...) is refused with an
error, so this renderer cannot silently render something other than what kustomize would.

The strategic merge: mappings merge key by key (a ``null`` deletes the key); the lists Kubernetes
merges by name (containers, init containers, env, envFrom is not one, volumes, volume mounts)
merge item by item on ``name``; every other list is replaced, as kustomize does for lists without
a merge key. ``tests/deploy/test_deploy.py`` compares the result with ``kubectl kustomize`` where
kubectl is installed.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import yaml

KEYS = {"apiVersion", "kind", "resources", "patches", "secretGenerator", "generatorOptions"}
GENERATOR_KEYS = {"name", "files", "type"}
MAKE_SECRETS = "python deploy/k8s/make-secrets.py"
MERGE_BY_NAME = {"containers", "initContainers", "env", "volumes", "volumeMounts"}

Manifest = dict[str, Any]


class KustomizeError(ValueError):
    """A kustomization this renderer does not support, or a patch without its target."""


def load_all(path: Path) -> list[Manifest]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "name" not in doc.get("metadata", {}):
            raise KustomizeError(f"{path}: every document needs a kind and a metadata.name")
    return docs


def key(doc: Manifest) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def merge(base: Any, patch: Any, field: str = "") -> Any:
    """``patch`` merged into a copy of ``base`` (strategic merge, the subset above)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for name, value in patch.items():
            if name.startswith("$"):
                raise KustomizeError(f"patch directive {name!r} is not supported")
            if value is None:
                out.pop(name, None)
            elif name in out:
                out[name] = merge(out[name], value, name)
            else:
                out[name] = copy.deepcopy(value)
        return out
    if field in MERGE_BY_NAME and isinstance(base, list) and isinstance(patch, list):
        out_list = copy.deepcopy(base)
        for item in patch:
            if not isinstance(item, dict) or "name" not in item:
                raise KustomizeError(f"an item of {field} in a patch has no name: {item!r}")
            names = [i.get("name") for i in out_list]
            if item["name"] in names:
                at = names.index(item["name"])
                out_list[at] = merge(out_list[at], item, field)
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def generated_secrets(directory: Path, spec: dict[str, Any]) -> list[Manifest]:
    """The Secrets of ``spec``'s ``secretGenerator``, as ``kubectl kustomize`` writes them."""
    generators = spec.get("secretGenerator", [])
    if not generators:
        if "generatorOptions" in spec:
            raise KustomizeError(f"{directory}: generatorOptions without a generator")
        return []
    if spec.get("generatorOptions") != {"disableNameSuffixHash": True}:
        raise KustomizeError(f"{directory}: generators need disableNameSuffixHash: true only")
    docs = []
    for generator in generators:
        unknown = set(generator) - GENERATOR_KEYS
        if unknown:
            raise KustomizeError(f"{directory}: unsupported generator fields {sorted(unknown)}")
        data = {}
        for source in generator["files"]:
            name, _, path = source.rpartition("=")
            file = directory / path
            if not file.is_file():
                raise KustomizeError(
                    f"{file} is missing (Secret {generator['name']!r}): run {MAKE_SECRETS}"
                )
            data[name or Path(path).name] = base64.b64encode(file.read_bytes()).decode("ascii")
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": generator["name"]},
                "type": generator.get("type", "Opaque"),
                "data": data,
            }
        )
    return docs


def render(directory: Path) -> list[Manifest]:
    """The manifests of the kustomization in ``directory``, in resource order."""
    path = directory / "kustomization.yaml"
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    unknown = set(spec) - KEYS
    if unknown:
        raise KustomizeError(f"{path}: unsupported fields {sorted(unknown)}")
    docs: list[Manifest] = []
    for resource in spec.get("resources", []):
        target = directory / resource
        docs += render(target) if target.is_dir() else load_all(target)
    docs += generated_secrets(directory, spec)
    seen = [key(d) for d in docs]
    duplicates = {k for k in seen if seen.count(k) > 1}
    if duplicates:
        raise KustomizeError(f"{path}: resources defined twice: {sorted(duplicates)}")
    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeError(f"{path}: only 'path:' strategic-merge patches are supported")
        for change in load_all(directory / patch["path"]):
            at = [i for i, d in enumerate(docs) if key(d) == key(change)]
            if not at:
                raise KustomizeError(f"{path}: patch target {key(change)} is not a resource")
            docs[at[0]] = merge(docs[at[0]], change)
    return docs
