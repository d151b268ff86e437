"""Turn a capture and a spec into a build context: one directory named by its content digest.

The same directory is what every target uses: the local target runs the runtime copy on its
payload, the container target builds it as an image (dependencies layer before code layer),
and the yaml target writes it out for GitOps. Files are assembled in memory and the digest is
computed first, so an unchanged cell costs no disk writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import config
from .capture import Capture
from .context import context_env
from .errors import PackageError
from .includes import IncludedFile, package_files
from .runtime import FILES_DIR
from .spec import FunctionSpec

_RUNTIME_SRC = Path(__file__).parent / "runtime"
_RUNTIME_FILES: dict[str, bytes] | None = None
DEFAULT_BASE_IMAGE = "python:{major}.{minor}-slim"
#: A package holds the function's captured globals (which may be secrets the user did not
#: mean to ship): readable by its owner only, as the exported yaml bundles are.
PRIVATE_FILE, PRIVATE_DIR = 0o600, 0o700

_DOCKERFILE = """\
# Build context written by ofnotebook for function {name!r}.
# Settings first, then dependencies, then code: a code edit rebuilds only the last layer.
FROM {base_image}
LABEL io.ofnotebook.python="{python}" io.ofnotebook.cloudpickle="{cloudpickle}"
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    OFNOTEBOOK_PACKAGE=/app
WORKDIR /app
EXPOSE {port}
STOPSIGNAL SIGINT
ENTRYPOINT ["python", "-m", "ofnotebook.runtime"]
COPY requirements.txt /app/requirements.txt
RUN pip install --no-cache-dir -r /app/requirements.txt
COPY ofnotebook /app/ofnotebook
COPY function /app/function
"""
_STUB_INIT = b'"""Only the runtime of ofnotebook ships in the image."""\n'


def _runtime_files() -> dict[str, bytes]:
    global _RUNTIME_FILES
    if _RUNTIME_FILES is None:
        files = {"ofnotebook/__init__.py": _STUB_INIT}
        for path in sorted(_RUNTIME_SRC.glob("*.py")):
            files[f"ofnotebook/runtime/{path.name}"] = path.read_bytes()
        _RUNTIME_FILES = files
    return _RUNTIME_FILES


def default_base_image(python_version: str) -> str:
    major, minor = python_version.split(".")[:2]
    return DEFAULT_BASE_IMAGE.format(major=major, minor=minor)


@dataclass(frozen=True)
class Package:
    """A build context on disk and its content digest (sha256 over paths and contents)."""

    path: Path
    digest: str
    spec: FunctionSpec
    capture: Capture = field(repr=False, compare=False)
    base_image: str = ""  # the Dockerfile's FROM
    included: tuple[IncludedFile, ...] = field(default=(), repr=False, compare=False)

    @property
    def short_digest(self) -> str:
        return self.digest[:12]

    @property
    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.is_file())


def manifest_for(capture: Capture, spec: FunctionSpec) -> dict[str, object]:
    """The package's ``function/manifest.json``: what the runtime reads in the process or the
    image (``batch`` only for a batch function, so other packages keep their digest)."""
    manifest: dict[str, object] = {
        "format": 1,
        "name": spec.name,
        "runtime": spec.runtime,
        "entry": capture.entry,
        "signature": capture.signature,
        "payload_sha256": capture.payload_sha256,
        "python": capture.python_version,
        "cloudpickle": capture.cloudpickle_version,
        "lock": capture.requirements,
        "local_modules": list(capture.local_modules),
        "globals": [{"name": g.name, "type": g.type_name, "size": g.size, "by": g.by,
                     "owner": g.owner} for g in capture.globals],
    }
    if spec.batch is not None:
        manifest["batch"] = spec.batch.manifest()
    return manifest


def build_files(capture: Capture, spec: FunctionSpec, *, base_image: str | None = None,
                included: tuple[IncludedFile, ...] = ()) -> dict[str, bytes]:
    """Every file of the build context, by relative path (``--include`` files under
    ``function/files``, the code layer)."""
    files = dict(_runtime_files())
    files.update(package_files(included))
    files["requirements.txt"] = ("\n".join(capture.requirements) + "\n").encode()
    files["Dockerfile"] = _DOCKERFILE.format(
        name=spec.name, base_image=base_image or default_base_image(capture.python_version),
        python=capture.python_version, cloudpickle=capture.cloudpickle_version,
        port=spec.port).encode()
    files["function/payload.pkl"] = capture.payload
    files["function/manifest.json"] = json.dumps(manifest_for(capture, spec), indent=1,
                                                 sort_keys=True).encode()
    files["function/context.json"] = json.dumps(context_env(spec), indent=1).encode()
    if capture.sources:
        files["function/sources.json"] = json.dumps(capture.sources, sort_keys=True).encode()
    return files


def write_private(root: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` under ``root`` (made if missing), folders 0o700 and files 0o600 whatever
    the umask (the images' layers set their own modes)."""
    root.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    os.chmod(root, PRIVATE_DIR)
    for rel, data in files.items():
        path = root / rel
        for parent in reversed(path.relative_to(root).parents[:-1]):
            (root / parent).mkdir(mode=PRIVATE_DIR, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(path, PRIVATE_FILE)


def make_private(root: Path) -> None:
    """Folders under ``root`` (and ``root``) 0o700, files 0o600: for a tree copied in."""
    os.chmod(root, PRIVATE_DIR)
    for path in root.rglob("*"):
        os.chmod(path, PRIVATE_DIR if path.is_dir() else PRIVATE_FILE)


def digest_files(files: dict[str, bytes]) -> str:
    outer = hashlib.sha256()
    for rel in sorted(files):
        outer.update(rel.encode() + b"\0" + hashlib.sha256(files[rel]).digest())
    return outer.hexdigest()


def package(capture: Capture, spec: FunctionSpec, *, cache_dir: Path | None = None,
            base_image: str | None = None, included: tuple[IncludedFile, ...] = ()) -> Package:
    """Write (or reuse) the build context for ``capture`` + ``spec`` (and the ``--include``
    files) and return it."""
    base_image = base_image or str(config.get("base_image") or "") or \
        default_base_image(capture.python_version)
    files = build_files(capture, spec, base_image=base_image, included=included)
    digest = digest_files(files)
    root = Path(config.get("cache_dir", cache_dir)) / "packages" / spec.name
    target = root / digest[:16]
    if not (target / "function" / "manifest.json").exists():
        try:
            root.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
            try:
                write_private(staging, files)
                # the runtime works in it (made at start when missing, with the umask's mode)
                (staging / FILES_DIR).mkdir(mode=PRIVATE_DIR, exist_ok=True)
                os.replace(staging, target)
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
                if not (target / "function" / "manifest.json").exists():
                    raise
        except OSError as exc:
            raise PackageError(
                f"Cannot write the build context for {spec.name!r} under {root}: {exc}. "
                f"Point OFNOTEBOOK_CACHE_DIR at a writable directory.") from exc
    return Package(path=target, digest=digest, spec=spec, capture=capture,
                   base_image=base_image, included=included)
