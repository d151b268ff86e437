"""Images from build contexts, through the Docker Engine API (Docker, or Podman's service).

The build context of :mod:`ofnotebook.package` puts the locked dependencies before the code, so
the engine's layer cache keeps the dependency layers across code edits; the tag is the
package's content digest, so an image that exists for a digest is never rebuilt. Before a
build, the base image's Python is checked against the notebook's (cloudpickle is pinned in the
lock, so it matches by construction); labels record both on every image built here.
"""

from __future__ import annotations

import atexit
import io
import os
import re
import tarfile
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .errors import BackendUnavailableError, BuildError
from .package import Package, default_base_image
from .requirements import check_index, index_target

if TYPE_CHECKING:
    import docker

PODMAN_SOCKET = "/run/podman/podman.sock"
API_VERSION = "1.41"  # fixed: saves the version negotiation on every client
LABEL_PYTHON = "io.ofnotebook.python"
LABEL_CLOUDPICKLE = "io.ofnotebook.cloudpickle"
REPOSITORY = "ofnotebook/{name}"
_engines: dict[str, Any] = {}
_base_pythons: dict[str, str] = {}


def engine_url() -> str:
    """``DOCKER_HOST`` if set, else Podman's root socket where it exists, else Docker's."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    if os.path.exists(PODMAN_SOCKET):
        return f"unix://{PODMAN_SOCKET}"
    return "unix:///var/run/docker.sock"


def engine() -> "docker.DockerClient":
    """A client of the Docker-compatible engine, checked to answer; one per URL."""
    try:
        import docker
    except ImportError as exc:
        raise BackendUnavailableError(
            "Images need the docker SDK: pip install 'ofnotebook[docker]'.") from exc
    url = engine_url()
    client = _engines.get(url)
    if client is None:
        client = docker.DockerClient(base_url=url, version=API_VERSION, timeout=120)
        try:
            client.ping()
        except Exception as exc:
            client.close()
            raise BackendUnavailableError(
                f"No Docker-compatible engine answers at {url} ({type(exc).__name__}). Start "
                f"Docker, or Podman's service (podman system service --time=0 "
                f"unix://{PODMAN_SOCKET}), or point DOCKER_HOST at one.") from None
        _engines[url] = client
    return client


def close_engines() -> None:
    """Close every engine client (at exit, after the container target removed its containers)."""
    for client in list(_engines.values()):
        client.close()
    _engines.clear()


atexit.register(close_engines)


def image_tag(package: Package) -> str:
    return f"{REPOSITORY.format(name=package.spec.name)}:{package.digest[:16]}"


def base_image_for(package: Package) -> str:
    return package.base_image or default_base_image(package.capture.python_version)


def base_python(client: "docker.DockerClient", base: str) -> str:
    """The Python version inside ``base``: its label, else its ``PYTHON_VERSION`` env (as
    official python images have), else one quick run of the image."""
    import docker

    try:
        image = client.images.get(base)
    except docker.errors.ImageNotFound:
        raise BuildError(
            f"The base image {base!r} is not on this engine and ofnotebook does not pull "
            f"implicitly. Pull or build it (docker pull {base}), or choose another with "
            f"--base-image / OFNOTEBOOK_BASE_IMAGE.") from None
    if image.id in _base_pythons:
        return _base_pythons[image.id]
    version = (image.labels or {}).get(LABEL_PYTHON) or _env_python(image.attrs)
    if not version:
        out = client.containers.run(
            image.id, ["python3", "-c", "import platform; print(platform.python_version())"],
            remove=True, stdout=True, stderr=True, entrypoint=[], network_mode="none")
        version = out.decode().strip().splitlines()[-1]
    _base_pythons[image.id] = version
    return version


def _env_python(attrs: dict[str, Any]) -> str:
    """``PYTHON_VERSION`` from the image config's env (official python images set it)."""
    for item in (attrs.get("Config") or {}).get("Env") or []:
        key, _, value = str(item).partition("=")
        if key == "PYTHON_VERSION" and re.fullmatch(r"\d+\.\d+(\.\d+)?\S*", value):
            return value
    return ""


def check_python(package: Package, image_python: str, base: str) -> None:
    """Refuse a major.minor mismatch (cloudpickle payloads do not cross it); warn on micro."""
    mine = package.capture.python_version
    if image_python.split(".")[:2] != mine.split(".")[:2]:
        raise BuildError(
            f"The base image {base!r} has Python {image_python}, the notebook runs {mine}: a "
            f"function pickled by one cannot be loaded by the other. Use a python:"
            f"{'.'.join(mine.split('.')[:2])} base (--base-image / OFNOTEBOOK_BASE_IMAGE).")
    if image_python != mine:
        warnings.warn(f"The base image {base!r} has Python {image_python}, the notebook "
                      f"{mine}; same minor version, so the function loads.", stacklevel=3)


@dataclass(frozen=True)
class BuiltImage:
    """An image for a package: ``tag``, engine ``id``, and whether this call built it."""

    tag: str
    id: str
    built: bool


CODE_STEP = "COPY function /app/function"


def split_context(package: Package) -> tuple[str, dict[str, bytes], dict[str, bytes]]:
    """The package's build context as two: the dependencies image (everything but the code,
    tagged by its own content digest, so code edits and other functions with the same lock
    share it) and the code on top of it (one ``COPY``)."""
    from .package import digest_files

    root = package.path
    dockerfile = (root / "Dockerfile").read_text()
    deps = {"Dockerfile": "".join(line for line in dockerfile.splitlines(True)
                                  if line.strip() != CODE_STEP).encode(),
            "requirements.txt": (root / "requirements.txt").read_bytes()}
    code: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            rel = str(path.relative_to(root))
            if rel.startswith("ofnotebook/"):
                deps[rel] = path.read_bytes()
            elif rel.startswith("function/"):
                code[rel] = path.read_bytes()
    deps_tag = f"ofnotebook/deps:{digest_files(deps)[:16]}"
    code["Dockerfile"] = f"FROM {deps_tag}\n{CODE_STEP}\n".encode()
    return deps_tag, deps, code


def _tar(files: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for rel, data in sorted(files.items()):
            info = tarfile.TarInfo(rel)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def build(package: Package, on_line: Callable[[str], None] = lambda line: None,
          client: "docker.DockerClient | None" = None, *, nocache: bool = False) -> BuiltImage:
    """The image for ``package``, built only if no image has its digest tag yet
    (``nocache``: build every layer afresh, even then; benchmarks use it as the baseline).

    Two builds: the dependencies image (reused whenever it exists), then the code layer.
    Raises :class:`BuildError` quoting the failing step and its last log lines; a failed
    build leaves no tag behind. Before the first step, the requirements are checked against
    the package index (:func:`ofnotebook.requirements.check_index`).
    """
    import docker

    client = client or engine()
    tag = image_tag(package)
    if not nocache:
        try:
            return BuiltImage(tag, client.images.get(tag).id, built=False)
        except docker.errors.ImageNotFound:
            pass
    # a requirement the index cannot satisfy fails here, not minutes later in the pip step;
    # asked for the engine's Linux (this machine's architecture) and the image's Python (the
    # base's must match the kernel's major.minor, all pip's filter uses: check_python)
    check_index(package.capture.requirements, package.spec.name,
                index_target(None, package.capture.python_version))
    base = base_image_for(package)
    check_python(package, base_python(client, base), base)
    deps_tag, deps, code = split_context(package)
    try:
        exists = not nocache and bool(client.images.get(deps_tag))
    except docker.errors.ImageNotFound:
        exists = False
    if not exists:
        _stream_build(client, package, deps, deps_tag, on_line, nocache)
    image_id = _stream_build(client, package, code, tag, on_line, nocache)
    return BuiltImage(tag, image_id, built=True)


def _stream_build(client: "docker.DockerClient", package: Package, files: dict[str, bytes],
                  tag: str, on_line: Callable[[str], None], nocache: bool) -> str:
    import docker

    lines: list[str] = []
    try:  # RUN steps use the host's network, as Podman's API builds always do: pip reaches
        # what the host reaches (its proxy, its DNS), with no bridge NAT needed on Docker
        for chunk in client.api.build(fileobj=_tar(files), custom_context=True, tag=tag,
                                      decode=True, rm=True, forcerm=True, pull=False,
                                      nocache=nocache, network_mode="host"):
            if "error" in chunk:
                raise BuildError(_build_failure(package, str(chunk["error"]), lines),
                                 function_name=package.spec.name)
            text = chunk.get("stream")
            if text:
                for line in _ANSI.sub("", text).splitlines():
                    if line.strip():
                        lines.append(line.rstrip())
                        on_line(line.rstrip())
    except docker.errors.APIError as exc:
        _untag(client, tag)
        raise BuildError(_build_failure(package, exc.explanation or str(exc), lines),
                         function_name=package.spec.name) from None
    except BuildError:
        _untag(client, tag)
        raise
    try:
        return str(client.images.get(tag).id)
    except docker.errors.ImageNotFound:
        raise BuildError(_build_failure(package, "the engine reported no image", lines),
                         function_name=package.spec.name) from None


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # Docker colours a RUN step's stderr
_STEP = re.compile(r"^(STEP \d+/\d+:|Step \d+/\d+ :)")


def _build_failure(package: Package, error: str, lines: list[str]) -> str:
    steps = [line for line in lines if _STEP.match(line)]
    step = steps[-1] if steps else "(before the first step)"
    tail = "\n".join(lines[-12:]) or "(no output)"
    return (f"Building the image for {package.spec.name!r} failed at {step}\n{error.strip()}\n"
            f"Last build lines:\n{tail}")


def _untag(client: "docker.DockerClient", tag: str) -> None:
    import docker

    try:
        client.images.remove(tag, force=True)
    except docker.errors.APIError:
        pass


def layers(tag: str, client: "docker.DockerClient | None" = None) -> list[str]:
    """The image's layer digests, bottom first (what a code-only edit must leave alone)."""
    client = client or engine()
    return list(client.images.get(tag).attrs["RootFS"]["Layers"])


def push(built: BuiltImage, registry: str, client: "docker.DockerClient | None" = None,
         on_line: Callable[[str], None] = lambda line: None) -> str:
    """Push to ``registry`` (host:port) with docker's own credentials; return the digest
    reference (``registry/repo@sha256:...``) deployments use."""
    import docker

    client = client or engine()
    repository, _, version = built.tag.partition(":")
    remote = f"{registry.rstrip('/')}/{repository}"
    client.images.get(built.id).tag(remote, version)
    digest = ""
    try:
        for chunk in client.api.push(remote, tag=version, stream=True, decode=True):
            if "error" in chunk:
                raise BuildError(f"Pushing {remote}:{version} failed: {chunk['error']}. Check "
                                 f"that the registry runs and that docker login was done.")
            text = str(chunk.get("status") or chunk.get("stream") or "").strip()
            if text:
                on_line(text)
                found = _DIGEST.search(text)
                digest = found.group(0) if found and "digest" in text.lower() else digest
            digest = (chunk.get("aux") or {}).get("Digest", digest)
        if not digest:  # Podman's stream does not name it: ask the registry
            digest = _registry_digest(registry, repository, version)
    except docker.errors.APIError as exc:
        raise BuildError(f"Pushing {remote}:{version} failed: {exc.explanation or exc}. "
                         f"Check that the registry runs and that docker login was done."
                         ) from None
    finally:
        # only our own tag stays (Docker Engine then forgets the digest reference: runnable)
        _untag(client, f"{remote}:{version}")
    return f"{remote}@{digest}"


def runnable(client: "docker.DockerClient", reference: str,
             on_line: Callable[[str], None] = lambda line: None) -> str:
    """``reference`` made sure to be on the engine before a container is created from it.

    A digest reference (``registry/repo@sha256:...``) the engine does not know is pulled by
    that digest, with its progress lines; the engine then knows it by that very reference.
    Docker Engine forgets the digest reference of a push once the pushed tag is removed
    (Podman keeps it), so there this pull follows a push; its layers are already here, so it
    fetches the manifest and config only. A local tag that is missing is an error rather than
    the SDK's implicit pull of a name no registry has.
    """
    import docker

    try:
        client.images.get(reference)
        return reference
    except docker.errors.ImageNotFound:
        pass
    if "@sha256:" not in reference:
        raise BuildError(f"The image {reference!r} is no longer on this engine (removed "
                         f"after it was built?); deploy again to rebuild it.")
    repository, _, digest = reference.partition("@")
    try:
        for chunk in client.api.pull(repository, tag=digest, stream=True, decode=True):
            if "error" in chunk:
                raise BuildError(f"Pulling {reference} failed: {chunk['error']}")
            text = str(chunk.get("status") or "").strip()
            if text and not chunk.get("progressDetail"):
                on_line(text)
        client.images.get(reference)
    except docker.errors.APIError as exc:
        raise BuildError(f"Pulling {reference} failed: {exc.explanation or exc}. Check that "
                         f"the registry runs and that docker login was done.") from None
    return reference


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_MANIFEST_TYPES = ", ".join((
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json"))


def _registry_digest(registry: str, repository: str, tag: str) -> str:
    """The manifest digest the registry serves for ``repository:tag`` (Registry API v2)."""
    import requests

    session = requests.Session()
    session.trust_env = registry.split(":")[0] not in ("127.0.0.1", "localhost")
    last = ""
    for scheme in ("https", "http"):
        try:
            response = session.head(f"{scheme}://{registry}/v2/{repository}/manifests/{tag}",
                                    headers={"Accept": _MANIFEST_TYPES}, timeout=10)
        except requests.RequestException as exc:
            last = str(exc)
            continue
        digest = response.headers.get("Docker-Content-Digest", "")
        if response.ok and digest:
            return digest
        last = f"HTTP {response.status_code}"
    raise BuildError(f"Pushed {registry}/{repository}:{tag}, but the registry did not tell "
                     f"its digest ({last}).")
