"""A throwaway certificate authority for the TLS tests (``trustme``: made for exactly this), and
servers that speak HTTPS with its certificates.

Nothing here is a stand-in: the server is `torc-trio serve --tls-cert --tls-key` (Hypercorn's own
TLS), the clients are the real CLI, runner, websocket client and browser.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import trustme
from cli_helpers import ServerProcess
from cryptography import x509
from cryptography.hazmat.primitives import serialization


@dataclass(frozen=True)
class Pki:
    """Files of one CA and one server certificate it signed (for ``names``), and of a CA that
    signed nothing the server has (a wrong CA)."""

    ca: Path
    wrong_ca: Path
    cert: Path
    key: Path
    spki_sha256: str  # base64: what Chromium's --ignore-certificate-errors-spki-list pins


def make_pki(directory: Path, *names: str) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, wrong = trustme.CA(), trustme.CA()
    issued = ca.issue_cert(*names)
    paths = Pki(directory / "ca.pem", directory / "wrong-ca.pem", directory / "server.pem",
                directory / "server.key", "")
    ca.cert_pem.write_to_path(str(paths.ca))
    wrong.cert_pem.write_to_path(str(paths.wrong_ca))
    for i, blob in enumerate(issued.cert_chain_pems):
        blob.write_to_path(str(paths.cert), append=i > 0)
    issued.private_key_pem.write_to_path(str(paths.key))
    paths.key.chmod(0o600)
    leaf = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
    spki = leaf.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return Pki(paths.ca, paths.wrong_ca, paths.cert, paths.key,
               base64.b64encode(hashlib.sha256(spki).digest()).decode())


def htpasswd(path: Path, users: dict[str, str]) -> Path:
    path.write_text("".join(f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(4)).decode()}\n"
                            for u, p in users.items()))
    return path


def tls_server(db: Path, pki: Pki, *, host: str = "127.0.0.1", url_host: str = "127.0.0.1",
               more: tuple[str, ...] = ()) -> ServerProcess:
    """`serve` over HTTPS; its ``url`` is the https:// one (with ``url_host``), and
    ``printed_url`` what it printed on its second line."""
    srv = ServerProcess(db, flags=["--database", str(db), "--host", host, "--port", "0",
                                   "--tls-cert", str(pki.cert), "--tls-key", str(pki.key),
                                   *more])
    assert srv.proc.stdout is not None
    srv.printed_url = srv.proc.stdout.readline().strip()  # type: ignore[attr-defined]
    srv.url = f"https://{url_host}:{srv.port}/torc-service/v1"
    return srv
