"""A certificate authority of the test's own, made with openssl, and a server certificate it signs.

`make_ca(directory)` writes `ca.pem` (the CA's certificate: what a client is told to trust) and
`server.pem` / `server-key.pem` (a certificate for 127.0.0.1 and localhost, signed by that CA), so
that a TLS server started with them is verified for real, the same way a client verifies AWS. A
second CA (`make_ca` again, elsewhere) is the "wrong CA": it signed nothing the server presents.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CertificateAuthority:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("openssl is not installed; run scripts/test, which installs it")
    subprocess.run([binary, *args], check=True, capture_output=True)


def make_ca(directory: Path) -> CertificateAuthority:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca-key.pem", directory / "ca.pem"
    key, csr = directory / "server-key.pem", directory / "server.csr"
    cert = directory / "server.pem"
    extensions = directory / "server.ext"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
        "-out", str(ca_cert), "-days", "2", "-subj", "/CN=tusd-py test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1",
    )  # fmt: skip
    extensions.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extensions),
    )  # fmt: skip
    return CertificateAuthority(ca_cert, cert, key)
