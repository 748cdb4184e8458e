"""The files the Kubernetes Secrets of deploy/k8s are generated from (kustomize secretGenerator).

    python deploy/k8s/make-secrets.py [--namespace NS] [--no-tls]

Run once before ``kubectl apply -k deploy/k8s/overlays/...``; nothing in the repository holds a
password, so without these files ``kubectl kustomize`` stops at the first missing one. It makes,
each mode 0600 with a random ``secrets.token_urlsafe(24)`` (an existing file is kept):

- ``base/secrets/stream``, ``monitor``, ``operator``: the MQTT passwords of those users (the
  operator's is mounted by the broker only: ``vega-emu ctl`` and ``rollout`` read it here), and
  ``base/secrets/fleet``: the fleet's key, which every device's and fleet worker's password is
  derived from (``deploy/mosquitto/init.py``: the broker derives them all, each fleet pod its
  own shard's, so no file grows with the fleet and nobody types 100,000 passwords); one Secret
  per role (``vega-mqtt-fleet``, ``vega-mqtt-stream``, ``vega-mqtt-monitor``,
  ``vega-mqtt-operator``): a pod mounts its own only;
- ``emqx/secrets/dashboard``: the EMQX dashboard's admin password (``emqx-dashboard``);
- ``tls/secrets/tls.crt``, ``tls.key``, ``ca.crt``: a generated CA and the broker's server
  certificate for ``mosquitto``, ``emqx`` and ``localhost`` (and their ``NS.svc`` names with
  ``--namespace``),
  the ``kubernetes.io/tls`` Secret ``vega-mqtt-tls``. With ``--no-tls`` none are made: use
  cert-manager instead (``deploy/k8s/cert-manager``, which writes a Secret of the same name).

``--root DIR`` writes into another copy of deploy/k8s. The files are ignored by git
(deploy/k8s/.gitignore); keep them as secret as the cluster's Secrets.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
PASSWORDS = (
    "base/secrets/fleet",
    "base/secrets/stream",
    "base/secrets/monitor",
    "base/secrets/operator",
)
DASHBOARD = "emqx/secrets/dashboard"
TLS_DIR = "tls/secrets"
BROKERS = ("mosquitto", "emqx")


def script(name: str, path: Path) -> ModuleType:
    """A script of deploy/ as a module (deploy/ is no package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def broker_hosts(namespace: str | None) -> list[str]:
    """The names clients may use for the broker: its Service, in ``namespace`` full names, and
    ``localhost`` (the operator's ``vega-emu ctl`` through ``kubectl port-forward``)."""
    hosts = [*BROKERS, "localhost"]
    if namespace:
        for broker in BROKERS:
            hosts += [f"{broker}.{namespace}.svc", f"{broker}.{namespace}.svc.cluster.local"]
    return hosts


def make(root: Path, namespace: str | None = None, tls: bool = True) -> list[Path]:
    """Every file under ``root`` (a copy of deploy/k8s); the ones it made."""
    secret = script("deploy_secret", HERE.parent / "secret.py")
    made = [root / name for name in (*PASSWORDS, DASHBOARD) if secret.ensure_secret(root / name)]
    if tls:
        tls_module = script("deploy_tls", HERE.parent / "mosquitto" / "tls.py")
        if tls_module.generate(root / TLS_DIR, broker_hosts(namespace)):
            made += [root / TLS_DIR / name for name in tls_module.FILES]
    return made


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="make-secrets.py", description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", help="the namespace the stack runs in (certificate names)")
    parser.add_argument("--no-tls", action="store_true", help="cert-manager makes vega-mqtt-tls")
    parser.add_argument("--root", type=Path, default=HERE, help="a copy of deploy/k8s")
    args = parser.parse_args(argv)
    made = make(args.root, args.namespace, tls=not args.no_tls)
    for path in made:
        print(f"made {path}")
    print(f"{len(made)} files made, the others kept, under {args.root}")


if __name__ == "__main__":
    main(sys.argv[1:])
