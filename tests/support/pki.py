"""Certificates for TLS tests, made with the ``openssl`` command (EC P-256 keys, a few ms each):
a CA, a server certificate for ``IP:127.0.0.1`` signed by it, a client certificate for mutual
TLS, and a second CA that signed nothing the broker uses."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["PKI", "make_pki"]


@dataclass(frozen=True, slots=True)
class PKI:
    """The files :func:`make_pki` wrote."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path  # CN: the client name given to make_pki, signed by ``ca``
    client_key: Path
    other_ca: Path  # a CA the broker knows nothing about


def make_pki(where: Path, client: str = "node-0000") -> PKI:
    """A CA, a server certificate for 127.0.0.1, a client certificate and a second CA."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=30)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def make_ca(name: str) -> tuple[Path, Path]:
        cert, key = where / f"{name}.crt", where / f"{name}.key"
        run("req", "-x509", *ec, "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", f"/CN=vega-emu test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
        return cert, key

    def make_leaf(name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
        cert, key, csr = (where / f"{name}.{ext}" for ext in ("crt", "key", "csr"))
        ext_file = where / f"{name}.ext"
        ext_file.write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            f"subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n{extensions}\n"
        )
        run("req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
        run("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
            "-CAcreateserial", "-out", str(cert), "-days", "2",
            "-extfile", str(ext_file))  # fmt: skip
        return cert, key

    ca = make_ca("ca")
    server = make_leaf("127.0.0.1", ca, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth")
    leaf = make_leaf(client, ca, "extendedKeyUsage=clientAuth")
    other_ca, _ = make_ca("other-ca")
    return PKI(ca[0], *server, *leaf, other_ca)
