"""Real registries for the engine-less build: Debian's ``docker-registry`` (CNCF distribution)
processes on free 127.0.0.1 ports, each with its own temporary config and storage:

* ``plain``: no auth;
* ``basic``: htpasswd (bcrypt) basic auth;
* ``token``: the registry's real ``auth: token`` mode, with :class:`TokenIssuer` (below) as its
  token service, signing RS256 JWTs with an ``x5c`` chain to a root the registry trusts
  (``rootcertbundle``);
* ``tls``: HTTPS with a certificate from a test CA (``OFNOTEBOOK_REGISTRY_CA``).

The registries live for the session; tests tell their calls apart with :meth:`Registry.mark`
and the registry's own access log. Without ``docker-registry`` the tests skip with the reason;
under ``CI`` they fail.
"""

from __future__ import annotations

import base64
import datetime
import http.server
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from ofnotebook import layers, tarlayers
from ofnotebook import registry as reg
from ofnotebook.registry import transport
from ofnotebook.registry.reference import FAMILY, MANIFEST_DOCKER, MANIFEST_OCI, sha256_digest
from tests.helpers import free_port, wait_for

USER = "ada"
PASSWORD = f"pw-{uuid.uuid4().hex}"  # distinctive: tests grep for it in every message
READER, READER_PASSWORD = "reader", f"rpw-{uuid.uuid4().hex}"
IDENTITY_TOKEN = f"idt-{uuid.uuid4().hex}"
SERVICE = "ofnotebook-test-registry"
ISSUER = "ofnotebook-test-issuer"
SHARED_REGISTRY = "127.0.0.1:5000"
SHARED_BASE = "library/python:3.11-slim"


def need(what: str, hint: str) -> None:
    message = f"{what} is not available here ({hint})"
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide it: {message}")
    pytest.skip(message)


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    status: int


_ACCESS = re.compile(r'"(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/[\d.]+" (\d{3}) ')


@dataclass
class Registry:
    """One ``docker-registry serve`` process."""

    root: Path
    name: str
    auth: dict[str, Any] | None = None
    tls: tuple[Path, Path] | None = None
    addr: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"{self.addr}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def start(self) -> "Registry":
        self.root.mkdir(parents=True, exist_ok=True)
        http_cfg: dict[str, Any] = {"addr": self.host, "secret": "ofnotebook-tests"}
        if self.tls:
            http_cfg["tls"] = {"certificate": str(self.tls[0]), "key": str(self.tls[1])}
        cfg = {"version": 0.1, "log": {"level": "info", "accesslog": {"disabled": False}},
               "storage": {"filesystem": {"rootdirectory": str(self.root / "data")},
                           "delete": {"enabled": True}},
               "http": http_cfg}
        if self.auth:
            cfg["auth"] = self.auth
        path = self.root / "config.yml"
        path.write_text(json.dumps(cfg))  # YAML is a superset of JSON
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(path)], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        def listening() -> bool:
            try:
                socket.create_connection((self.addr, self.port), timeout=1).close()
                return True
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError("exited") from None
                return False

        try:
            wait_for(listening, 15, interval=0.05)
        except AssertionError:
            self.stop()
            raise RuntimeError(f"docker-registry {self.name} did not start:\n"
                               + self.log_path.read_text()[-2000:]) from None
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def mark(self) -> int:
        return self.log_path.stat().st_size

    def calls(self, since: int = 0) -> list[Call]:
        """The API calls the registry logged since ``mark()`` (its access log)."""
        time.sleep(0.05)  # the access log line is written after the response
        with open(self.log_path, "rb") as handle:
            handle.seek(since)
            text = handle.read().decode(errors="replace")
        out = []
        for match in _ACCESS.finditer(text):
            parts = urllib.parse.urlsplit(match.group(2))
            out.append(Call(match.group(1), parts.path, urllib.parse.parse_qs(parts.query),
                            int(match.group(3))))
        return out

    def writes(self, since: int = 0) -> list[Call]:
        return [c for c in self.calls(since) if c.method in ("POST", "PUT", "PATCH")]

    def uploaded(self, since: int = 0) -> list[str]:
        """Digests of the blobs whose upload completed (PUT ...?digest=, 201)."""
        return [c.query["digest"][0] for c in self.calls(since)
                if c.method == "PUT" and "digest" in c.query and c.status == 201]


# --------------------------------------------------------------------------------------------
# Certificates and the token service


@dataclass
class Pki:
    ca_pem: Path
    ca_key: Any
    ca_cert: Any


def make_ca(root: Path, name: str) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Pki(path, key, cert)


def issue(pki: Pki, common_name: str, *, ip: str | None = None) -> tuple[Any, Any]:
    """A leaf key and certificate signed by ``pki`` (with an IP SAN for a TLS server)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(pki.ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return key, builder.sign(pki.ca_key, hashes.SHA256())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """The registry's token service (distribution's token spec): ``GET /token`` with
    ``service`` and ``scope`` (Basic auth optional) and the OAuth2 ``POST /token`` form with a
    refresh token. Users get every action they ask for, ``reader`` only ``pull``, anonymous
    nothing. Every request is recorded in ``requests``."""

    def __init__(self, pki: Pki) -> None:
        from cryptography.hazmat.primitives import serialization

        self.key, self.cert = issue(pki, "ofnotebook token signer")
        self.x5c = [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER))
                    .decode()]
        self.requests: list[dict[str, Any]] = []
        self.denied: set[str] = set()  # repositories no token grants anything on
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(parts.query)
                user = issuer.check_basic(self.headers.get("Authorization", ""))
                issuer.answer(self, "GET", user, query.get("service", [""])[0],
                              query.get("scope", []))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                user: str | None = None
                if form.get("grant_type") == ["refresh_token"]:
                    user = USER if form.get("refresh_token") == [IDENTITY_TOKEN] else None
                    if user is None:
                        issuer.requests.append({"method": "POST", "user": None, "scopes": []})
                        self.send_response(401)
                        self.end_headers()
                        return
                scopes = " ".join(form.get("scope", [])).split()
                issuer.answer(self, "POST", user, form.get("service", [""])[0], scopes)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def check_basic(self, header: str) -> str | None | bool:
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        if (user, password) in ((USER, PASSWORD), (READER, READER_PASSWORD)):
            return user
        if password == IDENTITY_TOKEN:
            return USER
        return False

    def answer(self, handler: http.server.BaseHTTPRequestHandler, method: str,
               user: str | None | bool, service: str, scopes: list[str]) -> None:
        self.requests.append({"method": method, "user": user, "scopes": list(scopes)})
        if user is False:
            handler.send_response(401)
            handler.send_header("Content-Type", "application/json")
            handler.end_headers()
            handler.wfile.write(b'{"details":"incorrect username or password"}')
            return
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = actions.split(",")
            granted = [] if user is None or name in self.denied else (
                [a for a in wanted if a == "pull"] if user == READER else wanted)
            if granted:
                access.append({"type": kind, "name": name, "actions": granted})
        body = json.dumps({"token": self.sign(str(user or ""), service, access),
                           "expires_in": 300,
                           "issued_at": datetime.datetime.now(datetime.timezone.utc)
                           .isoformat()}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def sign(self, subject: str, audience: str, access: list[dict[str, Any]]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": self.x5c}
        claims = {"iss": ISSUER, "sub": subject, "aud": audience, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "." +
                         _b64url(json.dumps(claims).encode()))
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def registry_binary() -> str:
    found = shutil.which("docker-registry")
    if not found:
        need("docker-registry", "apt-get install docker-registry, or run .ci/setup-containers")
    return str(found)


@pytest.fixture(scope="session")
def registry_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("registries")


def _started(made: Registry) -> Iterator[Registry]:
    try:
        made.start()
        yield made
    finally:
        made.stop()


@pytest.fixture(scope="session")
def plain(registry_binary: str, registry_root: Path) -> Iterator[Registry]:
    yield from _started(Registry(registry_root / "plain", "plain"))


@pytest.fixture(scope="session")
def basic(registry_binary: str, registry_root: Path) -> Iterator[Registry]:
    import bcrypt

    htpasswd = registry_root / "htpasswd"
    htpasswd.write_text("".join(
        f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
        for user, password in ((USER, PASSWORD), (READER, READER_PASSWORD))))
    yield from _started(Registry(registry_root / "basic", "basic", auth={
        "htpasswd": {"realm": "ofnotebook-tests", "path": str(htpasswd)}}))


@pytest.fixture(scope="session")
def token_issuer(registry_root: Path) -> Iterator[tuple[TokenIssuer, Pki]]:
    pki = make_ca(registry_root / "token-pki", "token-root")
    issuer = TokenIssuer(pki)
    try:
        yield issuer, pki
    finally:
        issuer.close()


@pytest.fixture(scope="session")
def token(registry_binary: str, registry_root: Path,
          token_issuer: tuple[TokenIssuer, Pki]) -> Iterator[Registry]:
    issuer, pki = token_issuer
    made = Registry(registry_root / "token", "token", auth={"token": {
        "realm": issuer.realm, "service": SERVICE, "issuer": ISSUER,
        "rootcertbundle": str(pki.ca_pem)}})
    made.issuer = issuer  # type: ignore[attr-defined]
    yield from _started(made)


@pytest.fixture(scope="session")
def tls_ca(registry_root: Path) -> Pki:
    return make_ca(registry_root / "tls-pki", "registry-ca")


@pytest.fixture(scope="session")
def tls(registry_binary: str, registry_root: Path, tls_ca: Pki) -> Iterator[Registry]:
    from cryptography.hazmat.primitives import serialization

    key, cert = issue(tls_ca, "127.0.0.1", ip="127.0.0.1")
    cert_path, key_path = registry_root / "tls.crt", registry_root / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    yield from _started(Registry(registry_root / "tls", "tls", tls=(cert_path, key_path)))


def lan_address() -> str | None:
    """A non-loopback IPv4 address of this machine, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.123", 9))  # no packet is sent for UDP connect
            address = sock.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


@pytest.fixture(scope="session")
def lan(registry_binary: str, registry_root: Path) -> Iterator[Registry]:
    """A plain-HTTP registry on a non-loopback address (for OFNOTEBOOK_INSECURE_REGISTRIES)."""
    address = lan_address()
    if not address:
        need("a non-loopback IPv4 address", "the machine has only loopback")
    yield from _started(Registry(registry_root / "lan", "lan", addr=str(address)))


@pytest.fixture(autouse=True)
def registry_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No developer docker login leaks in: an empty DOCKER_CONFIG; no engine reachable."""
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    transport._SCHEMES.clear()
    return config_dir


def login(monkeypatch: pytest.MonkeyPatch, user: str = USER, password: str = PASSWORD) -> None:
    monkeypatch.setenv("OFNOTEBOOK_REGISTRY_USER", user)
    monkeypatch.setenv("OFNOTEBOOK_REGISTRY_PASSWORD", password)


# --------------------------------------------------------------------------------------------
# A small synthetic base image (a few files, a config that says which Python it has)


def python_version() -> str:
    return ".".join(map(str, sys.version_info[:3]))


def push_fake_base(client: reg.RegistryClient, repository: str, tag: str, *,
                   family: str = MANIFEST_DOCKER, python: str | None = None,
                   arch: str = "amd64", label: bool = False, extra: bytes = b"") -> str:
    """Push a tiny base image; return its manifest digest."""
    members = tarlayers.tree([
        tarlayers.Member("etc/os-release", "file", b"ID=ofnotebook-test\n" + extra),
        tarlayers.Member("usr/bin/python3", "file", b"#!/bin/false\n", 0o755)])
    buffer = io.BytesIO()
    digest, diff_id, size = tarlayers.write_layer(members, buffer)
    client.upload(repository, digest, size, lambda: io.BytesIO(buffer.getvalue()))
    env = ["PATH=/usr/local/bin:/usr/bin:/bin"]
    labels = {}
    version = python if python is not None else python_version()
    if version and label:
        labels["io.ofnotebook.python"] = version
    elif version:
        env.append(f"PYTHON_VERSION={version}")
    config_type, layer_type = FAMILY[family]
    cfg = json.dumps({"architecture": arch, "os": "linux", "created": layers.EPOCH,
                      "config": {"Env": env, "Cmd": ["python3"], "Labels": labels or None},
                      "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                      "history": [{"created": layers.EPOCH, "created_by": "test base"}]}
                     ).encode()
    cfg_digest = sha256_digest(cfg)
    client.upload(repository, cfg_digest, len(cfg), lambda: io.BytesIO(cfg))
    manifest = json.dumps({"schemaVersion": 2, "mediaType": family,
                           "config": {"mediaType": config_type, "digest": cfg_digest,
                                      "size": len(cfg)},
                           "layers": [{"mediaType": layer_type, "digest": digest,
                                       "size": size}]}).encode()
    return client.put_manifest(repository, tag, manifest)


@pytest.fixture(scope="session")
def fake_bases(plain: Registry) -> dict[str, str]:
    """Bases in the plain registry: Docker- and OCI-typed, a wrong Python, a micro mismatch,
    one that does not say its Python."""
    major, minor, micro = sys.version_info[:3]
    with reg.RegistryClient(plain.host) as client:
        push_fake_base(client, "base/python", "docker")
        push_fake_base(client, "base/python", "oci", family=MANIFEST_OCI)
        push_fake_base(client, "base/python", "label", label=True)
        push_fake_base(client, "base/python", "old", python="3.9.18")
        push_fake_base(client, "base/python", "micro", python=f"{major}.{minor}.{micro + 1}")
        push_fake_base(client, "base/python", "silent", python="")
    return {tag: f"{plain.host}/base/python:{tag}"
            for tag in ("docker", "oci", "label", "old", "micro", "silent")}


# --------------------------------------------------------------------------------------------
# The real base (what .ci/setup-containers builds), in the shared registry on 127.0.0.1:5000


@pytest.fixture(scope="session")
def real_base() -> str:
    """``127.0.0.1:5000/...`` of the CI base image, with a ``PYTHON_VERSION`` env. When the
    registry copy lacks it (the CI base is built from Debian's packages), a derived base is
    pushed beside it: the same layers, plus that env (the version read by running the image
    once with Podman; only the test does that, the product never runs a base)."""
    try:
        requests.get(f"http://{SHARED_REGISTRY}/v2/", timeout=2).raise_for_status()
    except requests.RequestException as exc:
        need(f"a registry on {SHARED_REGISTRY}", f"run .ci/setup-containers: {exc}")
    source = f"{SHARED_REGISTRY}/{SHARED_BASE}"
    with reg.RegistryClient(SHARED_REGISTRY) as client:
        repository, tag = SHARED_BASE.split(":")
        if client.manifest_digest(repository, tag) is None:
            if not shutil.which("podman"):
                need(f"the base {source}", "podman push it there (.ci/setup-containers)")
            pushed = subprocess.run(["podman", "push", "--tls-verify=false",
                                     f"docker.io/{SHARED_BASE}", source],
                                    capture_output=True, text=True)
            if pushed.returncode:
                need(f"the base {source}", pushed.stderr.strip()[-300:])
        manifest = client.get_manifest(repository, tag)
        config = json.loads(client.get_blob(repository, manifest.data["config"]["digest"]))
    if layers.base_python(config):
        return source
    if not shutil.which("podman"):
        need("podman", "to read the CI base's Python once")
    ran = subprocess.run(["podman", "run", "--rm", "--network=none", "--tls-verify=false",
                          source, "python3", "-c",
                          "import platform; print(platform.python_version())"],
                         capture_output=True, text=True, timeout=120)
    if ran.returncode:
        need("the CI base image in Podman", ran.stderr.strip()[-300:])
    derived = f"{SHARED_REGISTRY}/ofnotebook-test/python:3.11-slim"
    layers.derive(source, derived, env={"PYTHON_VERSION": ran.stdout.strip()})
    return derived
