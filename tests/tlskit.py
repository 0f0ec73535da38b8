"""TLS for tests: a throwaway CA, certificates made with the ``openssl`` CLI, and a redis-server
that listens on TLS only."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis

from loadtest.harness.server import RedisServer

PASSWORD = "secret"  # the servers' requirepass: tests check it never shows in logs or errors


def openssl_binary() -> str | None:
    """Path of the openssl CLI, or None."""
    return shutil.which("openssl")


def _run(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Pki:
    """The files of one test PKI: a CA, a server certificate for 127.0.0.1 and localhost, a
    client certificate, another CA, and a client certificate of that other CA ("stranger")."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    stranger_cert: Path
    stranger_key: Path


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _run("req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN=redis-bus {name}",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    return cert, key


def _make_leaf(directory: Path, name: str, ca: tuple[Path, Path], usage: str, san: str) -> None:
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    ext = directory / f"{name}.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n" + (f"subjectAltName={san}\n" if san else "")
    )
    _run("req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-keyout", str(key), "-out", str(csr), "-subj", f"/CN=redis-bus {name}")  # fmt: skip
    _run("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
         "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip


def make_pki(directory: Path) -> Pki:
    """Create the CA, the server and client certificates and another CA in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _make_ca(directory, "ca")
    other_ca = _make_ca(directory, "other-ca")
    _make_leaf(directory, "server", ca, "serverAuth", "IP:127.0.0.1,DNS:localhost")
    _make_leaf(directory, "client", ca, "clientAuth", "")
    _make_leaf(directory, "stranger", other_ca, "clientAuth", "")
    for key in directory.glob("*.key"):
        key.chmod(0o600)
    return Pki(
        ca=ca[0],
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        other_ca=other_ca[0],
        stranger_cert=directory / "stranger.crt",
        stranger_key=directory / "stranger.key",
    )


class TlsRedisServer(RedisServer):
    """A redis-server with TLS on its port and no plain-text port, requiring ``PASSWORD``;
    ``auth_clients``: whether it requires a client certificate (``tls-auth-clients``)."""

    def __init__(self, workdir: Path, pki: Pki, *args: str, auth_clients: bool = True) -> None:
        self.pki = pki
        self.auth_clients = auth_clients
        super().__init__(workdir)
        self.args = [
            "--tls-port", str(self.port), "--port", "0", *args,
            "--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key),
            "--tls-ca-cert-file", str(pki.ca),
            "--tls-auth-clients", "yes" if auth_clients else "no",
            "--requirepass", PASSWORD,
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"rediss://:{PASSWORD}@127.0.0.1:{self.port}/0"

    def tls_env(self) -> dict[str, str]:
        """The BUS_TLS_* variables of a client with the right CA and a client certificate."""
        return {
            "BUS_TLS_CA_FILE": str(self.pki.ca),
            "BUS_TLS_CERT_FILE": str(self.pki.client_cert),
            "BUS_TLS_KEY_FILE": str(self.pki.client_key),
        }

    def client(self, **kwargs: object) -> redis.Redis:
        """An admin client over TLS with the client certificate, authenticated."""
        opts: dict[str, object] = {
            "ssl": True,
            "ssl_ca_certs": str(self.pki.ca),
            "ssl_certfile": str(self.pki.client_cert),
            "ssl_keyfile": str(self.pki.client_key),
            "password": PASSWORD,
        }
        opts.update(kwargs)
        return super().client(**opts)
