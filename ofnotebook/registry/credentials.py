"""Who to be towards a registry, and which certificates to trust.

Credentials come from ``OFNOTEBOOK_REGISTRY_USER``/``OFNOTEBOOK_REGISTRY_PASSWORD`` (the
target registry only) or from docker's ``config.json`` (``auths``, ``credHelpers``,
``credsStore``; also a mounted ``kubernetes.io/dockerconfigjson`` Secret through
``DOCKER_CONFIG``). A password or token is never put in a log line, an exception message or a
repr: messages name the *source* of the credentials instead.

TLS is verified against the system CA bundle plus ``OFNOTEBOOK_REGISTRY_CA``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import config
from .reference import (DOCKER_HUB, DOCKER_HUB_API, DOCKER_HUB_AUTH_KEY, RegistryError,
                        split_registry)

ENV_SOURCE = "OFNOTEBOOK_REGISTRY_USER/OFNOTEBOOK_REGISTRY_PASSWORD"


@dataclass(frozen=True)
class Credentials:
    """Who to authenticate as, and where that came from (``source`` is safe to show)."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    source: str = "anonymous"

    @property
    def anonymous(self) -> bool:
        return not (self.password or self.identity_token)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, source={self.source!r})"

    __str__ = __repr__

    def basic(self) -> str:
        secret = self.password or self.identity_token
        user = self.username or ("<token>" if self.identity_token else "")
        return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()

    def describe(self) -> str:
        who = f" (user {self.username!r})" if self.username and self.username != "<token>" else ""
        return f"the credentials from {self.source}{who}"


def _docker_config_files() -> list[Path]:
    override = os.environ.get("DOCKER_CONFIG")
    if override:
        where = Path(override).expanduser()
        if where.is_file():
            return [where]
        return [p for p in (where / "config.json", where / ".dockerconfigjson") if p.is_file()]
    default = Path.home() / ".docker" / "config.json"
    return [default] if default.is_file() else []


def _auth_keys(host: str) -> list[str]:
    if host == DOCKER_HUB:
        return [DOCKER_HUB_AUTH_KEY, "index.docker.io", DOCKER_HUB, DOCKER_HUB_API]
    return [host]


def _normalise_key(key: str) -> str:
    """An ``auths``/``credHelpers`` key (``https://index.docker.io/v1/``, ``host:port``) as
    the host it is for."""
    host = split_registry(key)[0]
    return DOCKER_HUB if host == DOCKER_HUB_API else host


def _from_helper(helper: str, server: str, source: str) -> Credentials | None:
    program = f"docker-credential-{helper}"
    try:
        done = subprocess.run([program, "get"], input=server, capture_output=True, text=True,
                              timeout=60)
    except FileNotFoundError:
        raise RegistryError(f"The credential helper {program} ({source}) is not on PATH. "
                            f"Install it, or remove it from the docker config.") from None
    except subprocess.TimeoutExpired:
        raise RegistryError(f"The credential helper {program} ({source}) did not answer in "
                            f"60 s.") from None
    if done.returncode != 0:
        said = (done.stdout.strip() or done.stderr.strip()).splitlines()[:1]
        if said and "credentials not found" in said[0].lower():
            return None
        raise RegistryError(f"The credential helper {program} ({source}) failed with exit "
                            f"code {done.returncode}: {(said or ['no output'])[0][:200]}")
    try:
        answer = json.loads(done.stdout)
        user, secret = str(answer.get("Username") or ""), str(answer.get("Secret") or "")
    except (ValueError, AttributeError):
        raise RegistryError(f"The credential helper {program} ({source}) did not answer with "
                            f"JSON.") from None
    if not secret:
        return None
    if user == "<token>":
        return Credentials("<token>", identity_token=secret, source=source)
    return Credentials(user, secret, source=source)


def _from_auths(auths: dict[str, Any], host: str, path: Path) -> Credentials | None:
    wanted = set(_auth_keys(host))
    for key, entry in auths.items():
        if not isinstance(entry, dict) or (key not in wanted and _normalise_key(key) != host):
            continue
        user, password = str(entry.get("username") or ""), str(entry.get("password") or "")
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise RegistryError(f"The auths entry for {key!r} in {path} is not base64 of "
                                    f"user:password.") from None
        source = f"{path} (auths {key!r})"
        if entry.get("identitytoken"):
            return Credentials(user or "<token>", identity_token=str(entry["identitytoken"]),
                               source=source)
        if password:
            return Credentials(user, password, source=source)
    return None


def credentials_for(host: str, *, use_env: bool = True) -> Credentials:
    """Credentials for registry ``host``: the OFNOTEBOOK_REGISTRY_* variables (when ``use_env``),
    else docker's config: ``credHelpers`` for the host, then ``credsStore``, then ``auths``."""
    host = _normalise_key(host)
    if use_env:
        user, password = config.get("registry_user"), config.get("registry_password")
        if user or password:
            if not (user and password):
                raise RegistryError(f"Set both {ENV_SOURCE.replace('/', ' and ')}, or neither.")
            return Credentials(str(user), str(password), source=ENV_SOURCE)
    server = DOCKER_HUB_AUTH_KEY if host == DOCKER_HUB else host
    for path in _docker_config_files():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"Cannot read the docker config {path}: "
                                f"{type(exc).__name__}. Fix or remove it.") from None
        if not isinstance(data, dict):
            continue
        auths = data.get("auths") if isinstance(data.get("auths"), dict) else {
            k: v for k, v in data.items() if isinstance(v, dict) and "auth" in v}  # .dockercfg
        helpers = data.get("credHelpers") or {}
        helper = next((helpers[k] for k in helpers if _normalise_key(k) == host), None)
        if helper:
            return _from_helper(helper, server, f"docker-credential-{helper}, credHelpers in "
                                f"{path}") or Credentials(source=f"credHelpers in {path} "
                                                          f"(nothing stored)")
        if data.get("credsStore"):
            store = str(data["credsStore"])
            found = _from_helper(store, server, f"docker-credential-{store}, credsStore in {path}")
            if found:
                return found
        found = _from_auths(auths or {}, host, path)
        if found:
            return found
    return Credentials()


# --------------------------------------------------------------------------------------------
# TLS


_SYSTEM_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                   "/etc/ssl/cert.pem", "/etc/ssl/ca-bundle.pem")


def _system_bundle() -> str | None:
    candidates = list(_SYSTEM_BUNDLES) + [ssl.get_default_verify_paths().cafile or ""]
    return next((c for c in candidates if c and os.path.isfile(c)), None)


def tls_verify() -> str | bool:
    """What ``requests`` gets as ``verify``: the system bundle, plus OFNOTEBOOK_REGISTRY_CA."""
    system = _system_bundle()
    extra = str(config.get("registry_ca") or "")
    if not extra:
        return system or True
    try:
        pem = Path(extra).expanduser().read_bytes()
    except OSError as exc:
        raise RegistryError(f"OFNOTEBOOK_REGISTRY_CA={extra} cannot be read "
                            f"({exc.strerror or exc}).") from None
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise RegistryError(f"OFNOTEBOOK_REGISTRY_CA={extra} holds no PEM certificate.")
    if system is None:
        try:
            import certifi

            system = certifi.where()
        except ImportError:
            system = None
    combined = (Path(system).read_bytes() + b"\n" if system else b"") + pem
    target = Path(config.get("cache_dir")) / "tls" / f"ca-{hashlib.sha256(combined).hexdigest()[:16]}.pem"
    if not target.exists():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + f".{os.getpid()}.partial")
            partial.write_bytes(combined)
            os.replace(partial, target)
        except OSError as exc:
            raise RegistryError(f"Cannot write the CA bundle for OFNOTEBOOK_REGISTRY_CA under "
                                f"{target.parent} ({exc.strerror or exc}); point "
                                f"OFNOTEBOOK_CACHE_DIR at a writable disk with room.") from None
    return str(target)

