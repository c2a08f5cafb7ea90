"""Nodes over TLS with client certificates: a real ``modeldeck-backend --tls-…`` and the local backend's node client."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import stat
import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.backend_process import BackendProcess
from tests.support.live_server import free_port
from tests.support.waiting import wait_until


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Ca:
    """A certificate authority made for the test (EC P-256), issuing server and client certificates."""

    def __init__(self, cn: str):
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, cn: str, *, server_ips: list[str] | None = None) -> tuple[str, str]:
        """(certificate PEM, key PEM): a server certificate for ``server_ips``, else a client one."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1)))
        if server_ips:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]), critical=False)
            usage = ExtendedKeyUsageOID.SERVER_AUTH
        else:
            usage = ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key).decode()


def non_loopback_ip() -> str | None:
    """An address of this machine that is not loopback (docker0, eth0), to serve on as another machine would."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            return parts[parts.index("inet") + 1].split("/")[0]
    return None


class TlsNode:
    """``modeldeck-backend`` serving HTTPS with required client certificates on ``ip``."""

    def __init__(self, folder: Path, ca: Ca, ip: str):
        self.folder = folder
        self.home = folder / "home"
        folder.mkdir(parents=True)
        self.ip = ip
        self.port = free_port()
        self.url = f"https://{ip}:{self.port}"
        cert, key = ca.issue("node", server_ips=[ip, "127.0.0.1"])
        (folder / "server.pem").write_text(cert)
        (folder / "server.key").write_text(key)
        (folder / "clients-ca.pem").write_text(ca.pem)
        self.proc: subprocess.Popen | None = None
        self.log = folder / "backend.log"

    def start(self, ca: Ca, client: tuple[str, str]) -> None:
        env = {**os.environ, "MODELDECK_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        env.pop("MODELDECK_TOKEN", None)
        argv = [*BackendProcess.command(), "--host", self.ip, "--port", str(self.port),
                "--tls-cert", str(self.folder / "server.pem"), "--tls-key", str(self.folder / "server.key"),
                "--tls-client-ca", str(self.folder / "clients-ca.pem")]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        ctx = ssl.create_default_context(cadata=ca.pem)
        (self.folder / "c.pem").write_text(client[0])
        (self.folder / "c.key").write_text(client[1])
        ctx.load_cert_chain(self.folder / "c.pem", self.folder / "c.key")
        self.ctx = ctx

        def answers() -> bool:
            assert self.proc.poll() is None, self.log.read_text()
            return httpx.get(self.url + "/api/health", verify=ctx, timeout=2).status_code == 200
        wait_until(answers, 60, what="the TLS backend to answer")

    @property
    def token(self) -> str:
        return (self.home / "token").read_text().strip()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


@pytest.fixture
def local(tmp_path):
    backend = BackendProcess(tmp_path / "local-home", env={"HOME": str(tmp_path)})
    backend.start()
    yield backend
    backend.stop()


def test_tls_node_with_client_certificate(local, tmp_path):
    ca = Ca("ModelDeck test CA")
    ip = non_loopback_ip() or "127.0.0.1"
    node = TlsNode(tmp_path / "node", ca, ip)
    client_cert, client_key = ca.issue("laptop")
    node.start(ca, (client_cert, client_key))
    try:
        # Without a client certificate the server refuses the connection itself.
        with pytest.raises(httpx.HTTPError):
            httpx.get(node.url + "/api/health", verify=ssl.create_default_context(cadata=ca.pem), timeout=5)

        tls = {"url": node.url, "ca_cert": ca.pem, "client_cert": client_cert, "client_key": client_key,
               "token": node.token}
        r = local.post("/api/nodes", json={"name": "tls1", "transport": "tls", "tls": tls})
        assert r.status_code == 201, r.text
        got = r.json()
        assert got["state"] == "connected" and got["transport"] == "tls" and got["address"] == node.url
        assert got["engine"]["reachable"] is True and got["rtt_ms"] > 0
        everything = local.get("/api/nodes").text
        assert "PRIVATE KEY" not in everything and node.token not in everything
        key_file = local.home / "nodes" / "tls1" / "client.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and "PRIVATE KEY" in key_file.read_text()
        assert "PRIVATE KEY" not in (local.home / "nodes.json").read_text()

        # A certificate from another CA: refused by the node.
        other = Ca("someone else")
        bad_cert, bad_key = other.issue("intruder")
        r = local.post("/api/nodes", json={"name": "tls2", "transport": "tls",
                                           "tls": {**tls, "client_cert": bad_cert, "client_key": bad_key}})
        assert r.status_code == 502 and r.json()["error"]["code"] == "node_auth_failed", r.text
        # The right certificate with a wrong token: the node's API refuses it.
        r = local.post("/api/nodes", json={"name": "tls2", "transport": "tls", "tls": {**tls, "token": "wrong"}})
        assert r.status_code == 502 and r.json()["error"]["code"] == "node_auth_failed", r.text
        # A server certificate the given CA did not sign: refused by this side.
        r = local.post("/api/nodes", json={"name": "tls2", "transport": "tls", "tls": {**tls, "ca_cert": other.pem}})
        assert r.status_code == 502 and r.json()["error"]["code"] == "node_auth_failed", r.text
        assert [n["name"] for n in local.get("/api/nodes").json()["nodes"]] == ["local", "tls1"]

        # The node's /v1 data plane on its TLS listener: the token is still required; with it, the hot routes
        # answer (their Host is the node's address, which the data plane checks as the loopback one inside).
        with httpx.Client(base_url=node.url, verify=node.ctx, timeout=10) as direct:
            assert direct.get("/v1/models").status_code == 401
            assert direct.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
            auth = {"Authorization": f"Bearer {node.token}"}
            listed = direct.get("/v1/models", headers=auth)
            assert listed.status_code == 200 and listed.json()["object"] == "list", listed.text
            r = direct.post("/v1/chat/completions", headers=auth, json={"model": "nobody", "messages": []})
            assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", r.text
    finally:
        node.stop()


@pytest.mark.parametrize("args", [["--host", "0.0.0.0"], ["--host", "0.0.0.0", "--tls-cert", "/etc/hostname"]])
def test_non_loopback_without_tls_and_client_certs_is_refused(tmp_path, args):
    env = {**os.environ, "MODELDECK_HOME": str(tmp_path)}
    done = subprocess.run([*BackendProcess.command(), *args, "--port", str(free_port())], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "--tls-client-ca" in done.stderr
    assert not (tmp_path / "token").exists()
