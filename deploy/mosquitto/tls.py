"""TLS for the deployed Mosquitto: a generated CA and server certificate, and the listener's lines.

    python tls.py generate TLS_DIR --host mosquitto [--host localhost] [--owner UID] [--ca-out DIR]
    python tls.py configure MOSQUITTO_CONF --dir DIR

``generate`` (compose's ``mosquitto-tls`` service; ``deploy/k8s/make-secrets.py`` without
cert-manager) writes the files of a ``kubernetes.io/tls`` Secret as cert-manager names them:
``TLS_DIR/tls.crt`` (the server certificate, naming every ``--host`` in its subjectAltName),
``TLS_DIR/tls.key`` (its key) and ``TLS_DIR/ca.crt`` (the CA that signed it, the one file every
client needs: ``VEGA_EMU_MQTT_CA_FILE``). EC P-256 keys, valid ``--days`` (825). The CA's key is
thrown away once the server certificate is signed: nobody can mint another certificate the
clients trust. The files are kept while the certificate names every host and is valid for 30
more days; otherwise all three are made anew (the clients then need the new ``ca.crt``: restart
them). Every file is created private (umask 077, in a 0700 scratch directory, moved into place);
the key stays 0600, the two certificates become 0644; ``--owner`` (when run as root) gives all
three to the broker's uid. ``--ca-out DIR`` also copies ``ca.crt`` there (compose: the volume
the clients mount, which must not hold the key).

``configure`` appends the listener's TLS lines to the ``mosquitto.conf`` that
``deploy/mosquitto/init.py`` wrote (one ``listener``; the lines that follow it apply to it):
``certfile``, ``keyfile``, ``cafile`` under ``--dir`` as the broker sees them, and TLS 1.2 or
later. The listener then speaks TLS only. It refuses a config with no or several listeners, or
one that has TLS lines of its own; run after ``init.py``, which rewrites the file on each start.

Needs the ``openssl`` command (Debian's ``ca-certificates`` depends on it, so the image has it).
Exit status 0: done; 1: a check failed (the reason on stderr).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["FILES", "configure", "generate", "tls_lines", "up_to_date"]

CA, CERT, KEY = "ca.crt", "tls.crt", "tls.key"
FILES = (CERT, KEY, CA)  # the keys of a kubernetes.io/tls Secret with its CA (cert-manager's)
VALID_DAYS = 825
RENEW_BEFORE_S = 30 * 24 * 3600
MARKER = "# TLS: deploy/mosquitto/tls.py"


def openssl(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def up_to_date(directory: Path, hosts: Sequence[str]) -> bool:
    """Whether ``directory`` holds a key, a CA and a certificate that names every host and is
    valid for :data:`RENEW_BEFORE_S` more."""
    cert = directory / CERT
    if not all((directory / name).is_file() for name in FILES):
        return False
    if openssl("x509", "-in", str(cert), "-noout", "-checkend", str(RENEW_BEFORE_S)).returncode:
        return False
    for host in hosts:
        if (
            openssl("x509", "-in", str(cert), "-noout", "-checkhost", host).stdout.find(
                "does match"
            )
            < 0
        ):
            return False
    verify = openssl("verify", "-CAfile", str(directory / CA), str(cert))
    return verify.returncode == 0


def _run(step: str, result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode != 0:
        raise SystemExit(f"openssl {step} failed: {result.stderr.strip()}")


def _sign(work: Path, hosts: Sequence[str], days: int) -> None:
    """CA and server certificate in ``work`` (keys included; the caller keeps what it needs)."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _run(
        "CA",
        openssl(
            "req", "-x509", *ec, "-days", str(days), "-keyout", "ca.key", "-out", CA,
            "-subj", "/CN=vega-emu MQTT CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=work,
        ),
    )  # fmt: skip
    _run(
        "request",
        openssl("req", "-new", *ec, "-keyout", KEY, "-out", "server.csr",
                "-subj", f"/CN={hosts[0]}", cwd=work),
    )  # fmt: skip
    names = ",".join(f"DNS:{h}" for h in hosts)
    (work / "server.ext").write_text(
        f"subjectAltName={names}\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature,keyAgreement\nbasicConstraints=CA:FALSE\n",
        encoding="utf-8",
    )
    _run(
        "sign",
        openssl(
            "x509", "-req", "-in", "server.csr", "-CA", CA, "-CAkey", "ca.key",
            "-set_serial", f"0x{secrets.token_hex(16)}", "-days", str(days),
            "-extfile", "server.ext", "-out", CERT,
            cwd=work,
        ),
    )  # fmt: skip


def generate(
    directory: Path,
    hosts: Sequence[str],
    *,
    owner: int | None = None,
    ca_out: Path | None = None,
    days: int = VALID_DAYS,
) -> bool:
    """Make (or keep) the CA and server certificate in ``directory``; ``True`` when made anew."""
    if not hosts:
        raise SystemExit("at least one --host: the name the clients connect to")
    fresh = not up_to_date(directory, hosts)
    if fresh:
        old_umask = os.umask(0o077)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=directory, prefix=".tls-") as scratch:
                work = Path(scratch)
                _sign(work, hosts, days)
                for name in FILES:
                    os.chmod(work / name, 0o600 if name == KEY else 0o644)
                    if owner is not None and os.geteuid() == 0:
                        os.chown(work / name, owner, owner)
                    os.replace(work / name, directory / name)
        finally:
            os.umask(old_umask)
    if ca_out is not None:
        ca_out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(directory / CA, ca_out / f".{CA}.new")
        os.chmod(ca_out / f".{CA}.new", 0o644)
        os.replace(ca_out / f".{CA}.new", ca_out / CA)
    return fresh


def tls_lines(directory: str) -> list[str]:
    """The lines that make the one listener above them TLS only."""
    where = directory.rstrip("/")
    return [
        MARKER,
        f"certfile {where}/{CERT}",
        f"keyfile {where}/{KEY}",
        f"cafile {where}/{CA}",
        "tls_version tlsv1.2",  # the lowest version accepted
        "require_certificate false",  # clients log in with passwords
        "",
    ]


def configure(conf: Path, directory: str) -> None:
    """Append :func:`tls_lines` to ``conf`` (kept private: appending keeps its mode)."""
    lines = conf.read_text(encoding="utf-8").splitlines()
    listeners = [line for line in lines if line.split()[:1] == ["listener"]]
    if len(listeners) != 1:
        raise SystemExit(f"{conf}: expected one listener line, found {len(listeners)}")
    taken = [line for line in lines if line.split()[:1] in (["certfile"], ["keyfile"])]
    if taken:
        raise SystemExit(f"{conf}: already has TLS lines ({taken[0]!r}): run init.py first")
    with conf.open("a", encoding="utf-8") as f:
        f.write("\n".join(["", *tls_lines(directory)]))


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="tls.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("generate", help="a CA and a server certificate")
    make.add_argument("directory", type=Path)
    make.add_argument("--host", action="append", required=True, dest="hosts")
    make.add_argument("--owner", type=int)
    make.add_argument("--ca-out", type=Path)
    make.add_argument("--days", type=int, default=VALID_DAYS)
    conf = commands.add_parser("configure", help="TLS lines for init.py's listener")
    conf.add_argument("conf", type=Path)
    conf.add_argument("--dir", required=True, dest="tls_dir")
    args = parser.parse_args(argv)
    if args.command == "generate":
        made = generate(
            args.directory, args.hosts, owner=args.owner, ca_out=args.ca_out, days=args.days
        )
        print(f"TLS files in {args.directory}: {'made' if made else 'kept'} for {args.hosts}")
    else:
        configure(args.conf, args.tls_dir)
        print(f"{args.conf}: the listener speaks TLS ({args.tls_dir})")


if __name__ == "__main__":
    main(sys.argv[1:])
