"""Names in the OCI Distribution world: media types, image references (normalised as docker
does), digests, platforms and the choice of one in an index, and which hosts may be spoken
to over plain HTTP.

The bottom layer of :mod:`ofnotebook.registry`: it talks to no registry and reads no
credentials, so :class:`RegistryError` (which every layer raises) lives here too.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .. import config
from ..errors import BuildError

MANIFEST_OCI = "application/vnd.oci.image.manifest.v1+json"
MANIFEST_DOCKER = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_OCI = "application/vnd.oci.image.index.v1+json"
LIST_DOCKER = "application/vnd.docker.distribution.manifest.list.v2+json"
CONFIG_OCI = "application/vnd.oci.image.config.v1+json"
CONFIG_DOCKER = "application/vnd.docker.container.image.v1+json"
LAYER_OCI = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_DOCKER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
ACCEPT = ", ".join((MANIFEST_OCI, MANIFEST_DOCKER, INDEX_OCI, LIST_DOCKER))
INDEX_TYPES = (INDEX_OCI, LIST_DOCKER)
#: per manifest family: the config and gzip layer media types that go with it
FAMILY = {MANIFEST_OCI: (CONFIG_OCI, LAYER_OCI), MANIFEST_DOCKER: (CONFIG_DOCKER, LAYER_DOCKER)}
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class RegistryError(BuildError):
    """A registry call failed: unreachable, refused credentials, or an error the registry named.

    ``code`` is the registry's first error code (``MANIFEST_BLOB_UNKNOWN``, ``DENIED``...) when
    it sent one, ``status`` the HTTP status when there was a response.
    """

    def __init__(self, message: str, *, code: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.code, self.status = code, status


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# References


def _is_registry_component(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost" or part.startswith("[")


def api_host(host: str) -> str:
    """The host a registry's API is served on (Docker Hub's differs from its name)."""
    return DOCKER_HUB_API if host == DOCKER_HUB else host


@dataclass(frozen=True)
class Reference:
    """An image reference, normalised as docker does (``python`` -> ``docker.io/library/python``)."""

    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    @classmethod
    def parse(cls, text: str) -> "Reference":
        raw = text.strip()
        rest, _, digest = raw.partition("@")
        if digest and not _DIGEST.match(digest):
            raise RegistryError(f"{text!r} is not a valid image reference: the digest must be "
                                f"sha256: and 64 hex digits.")
        first, slash, remainder = rest.partition("/")
        if slash and _is_registry_component(first):
            registry, path = first, remainder
        else:
            registry, path = DOCKER_HUB, rest
        if registry == "index.docker.io":
            registry = DOCKER_HUB
        tag = ""
        last = path.rsplit("/", 1)[-1]
        if ":" in last:
            path, tag = path.rsplit(":", 1)
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        if not _REPO.match(path) or (tag and not _TAG.match(tag)):
            raise RegistryError(f"{text!r} is not a valid image reference (registry/name[:tag]"
                                f"[@sha256:...], lowercase name).")
        return cls(registry, path, tag, digest)

    @property
    def api_host(self) -> str:
        """The host the API is served on (Docker Hub's differs from its name)."""
        return api_host(self.registry)

    @property
    def ref(self) -> str:
        """What to ask the manifests endpoint for: the digest, else the tag, else latest."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def split_registry(registry: str) -> tuple[str, str]:
    """``host[:port][/prefix]`` -> (host, prefix with a trailing ``/`` or ""). The name is
    checked where it enters (``--registry``, ``target_options['registry']``,
    OFNOTEBOOK_REGISTRY: all read through ``config.get``) by ``config.registry_name``, which
    lives in the bottom layer because config may import nothing of this package; a scheme
    is still dropped here for names from elsewhere (docker's config keys)."""
    text = re.sub(r"^[a-z]+://", "", registry.strip()).rstrip("/")
    host, _, prefix = text.partition("/")
    if host == "index.docker.io":
        host = DOCKER_HUB
    return host, (prefix + "/" if prefix else "")


# --------------------------------------------------------------------------------------------
# Hosts spoken to over plain HTTP


def _host_only(host: str) -> str:
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    name = _host_only(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_insecure(host: str) -> bool:
    """Whether OFNOTEBOOK_INSECURE_REGISTRIES lists ``host`` (with or without its port)."""
    listed = {h.strip() for h in str(config.get("insecure_registries") or "").split(",")
              if h.strip()}
    return host in listed or _host_only(host) in listed


# --------------------------------------------------------------------------------------------
# Manifests and platforms


@dataclass(frozen=True)
class Manifest:
    """A manifest as the registry stores it: exact bytes, media type and digest."""

    media_type: str
    body: bytes = field(repr=False)
    digest: str

    @property
    def data(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def parse_platform(text: str) -> tuple[str, str, str]:
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise RegistryError(f"Platform {text!r} is not os/architecture[/variant], e.g. "
                            f"linux/amd64 or linux/arm64/v8.")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else ""


def select_platform(index: Manifest, platform: str, where: str) -> str:
    """The digest of ``index``'s manifest for ``platform`` (os/arch[/variant])."""
    os_, arch, variant = parse_platform(platform)
    offered = []
    candidates = []
    for entry in index.data.get("manifests") or []:
        plat = entry.get("platform") or {}
        got = (plat.get("os", ""), plat.get("architecture", ""), plat.get("variant", ""))
        if got[0] == "unknown":
            continue  # attestations
        offered.append("/".join(p for p in got if p))
        if got[:2] == (os_, arch) and (not variant or got[2] in (variant, "")):
            candidates.append((got[2] != variant, entry))
    if not candidates:
        raise RegistryError(f"{where} has no image for {platform} (it offers "
                            f"{', '.join(offered) or 'none'}). Choose another --platform or "
                            f"base image.")
    candidates.sort(key=lambda c: c[0])
    return str(candidates[0][1]["digest"])
