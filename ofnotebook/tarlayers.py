"""The layers of an engine-less image (:mod:`ofnotebook.layers`), built as files on this
machine: tar members, reproducible tar.gz writing, the local layer cache, and the layers
themselves (the pip-installed deps, the package's runtime and code, the build context).

Tarballs are reproducible (sorted entries, parents first, mtime 0, uid/gid 0, fixed modes,
gzip without name or time), so the same content has the same digest on any machine, and built
layers are cached under ``<cache_dir>/layers`` by the digest of their inputs: a layer whose
inputs did not change is neither rebuilt nor (being already in the registry) uploaded again.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Mapping

from . import config
from .errors import BuildError
from .package import Package
from .registry.reference import parse_platform

APP_DIR = "/app"
DEPS_DIR = "/app/deps"
#: bumped whenever the layout of a layer changes: part of every cache key
LAYER_FORMAT = "1"
#: the oldest glibc the wheels may need (pip also accepts every older manylinux tag)
MANYLINUX = "manylinux_2_28"
_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "ppc64le": "ppc64le", "s390x": "s390x",
         "386": "i686", "arm": "armv7l"}

OnLine = Callable[[str, str], None]


# --------------------------------------------------------------------------------------------
# Reproducible layer tarballs


@dataclass(frozen=True)
class Member:
    """One tar entry: ``kind`` is dir, file or symlink; ``source`` a path or the bytes."""

    path: str
    kind: str
    source: Path | bytes | None = None
    mode: int = 0o644
    link: str = ""


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def tree(members: Iterable[Member]) -> list[Member]:
    """Every member plus its parent directories, sorted so parents come first."""
    by_path: dict[str, Member] = {}
    for member in members:
        for parent in _parents(member.path):
            by_path.setdefault(parent, Member(parent, "dir", mode=0o755))
        by_path[member.path] = member
    return [by_path[p] for p in sorted(by_path, key=lambda p: p.split("/"))]


def files_members(files: Mapping[str, Path | bytes], prefix: str) -> list[Member]:
    """Tar members for ``files`` under ``prefix``, keeping only the executable bit of a
    file on disk: nothing else of the machine (owner, time) may change a layer's digest."""
    out = []
    for rel, source in files.items():
        executable = isinstance(source, Path) and os.access(source, os.X_OK)
        out.append(Member(f"{prefix}/{rel}", "file", source, 0o755 if executable else 0o644))
    return out


def dir_members(root: Path, prefix: str, *, follow_symlinks: bool = False,
                skip: Callable[[str], bool] = lambda rel: False) -> list[Member]:
    """The files, directories and (unless followed) symlinks under ``root``."""
    out = []
    for current, dirs, files in os.walk(root, followlinks=follow_symlinks):
        dirs.sort()
        here = Path(current)
        for name in list(dirs):
            rel = (here / name).relative_to(root).as_posix()
            if skip(rel):
                dirs.remove(name)
            elif (here / name).is_symlink() and not follow_symlinks:
                out.append(Member(f"{prefix}/{rel}", "symlink", link=os.readlink(here / name),
                                  mode=0o777))
            else:
                out.append(Member(f"{prefix}/{rel}", "dir", mode=0o755))
        for name in sorted(files):
            path = here / name
            rel = path.relative_to(root).as_posix()
            if skip(rel):
                continue
            if path.is_symlink() and not follow_symlinks:
                out.append(Member(f"{prefix}/{rel}", "symlink", link=os.readlink(path),
                                  mode=0o777))
            elif path.is_file():
                out.append(Member(f"{prefix}/{rel}", "file", path,
                                  0o755 if os.access(path, os.X_OK) else 0o644))
    return out


class _Hashing:
    """A write-through file wrapper that hashes and counts what passes."""

    def __init__(self, target: Any) -> None:
        self.target, self.hash, self.size = target, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self.target.write(data)
        return len(data)

    def flush(self) -> None:
        self.target.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def write_layer(members: Iterable[Member], out: IO[bytes]) -> tuple[str, str, int]:
    """Write a reproducible tar.gz of ``members`` to ``out``; return (digest, diff_id, size)."""
    compressed = _Hashing(out)
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed,
                       mtime=0, compresslevel=6) as gz:
        plain = _Hashing(gz)
        with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for member in members:
                info = tarfile.TarInfo(member.path)
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                info.mode = member.mode
                if member.kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif member.kind == "symlink":
                    info.type, info.linkname = tarfile.SYMTYPE, member.link
                    tar.addfile(info)
                elif isinstance(member.source, bytes):
                    info.size = len(member.source)
                    tar.addfile(info, io.BytesIO(member.source))
                else:
                    assert isinstance(member.source, Path)
                    with open(member.source, "rb") as handle:
                        info.size = os.fstat(handle.fileno()).st_size
                        tar.addfile(info, handle)
    compressed.flush()
    return compressed.digest, plain.digest, compressed.size


@dataclass(frozen=True)
class Layer:
    """A built layer in the cache: ``digest`` of the .tar.gz, ``diff_id`` of the tar."""

    kind: str
    path: Path
    digest: str
    diff_id: str
    size: int
    created_by: str
    cached: bool = False


def cache_root() -> Path:
    """Where built layers are kept, under the package cache: a layer already built for the
    same inputs is reused instead of built again."""
    return Path(config.get("cache_dir")) / "layers"


def _disk_error(exc: OSError, where: Path, what: str) -> BuildError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return BuildError(
            f"The disk is full: writing the {what} layer under {where} failed (no space left "
            f"on device). Free space there, or point OFNOTEBOOK_CACHE_DIR at a disk with room "
            f"(built layers are cached under <OFNOTEBOOK_CACHE_DIR>/layers).")
    return BuildError(f"Cannot write the {what} layer under {where}: {exc.strerror or exc}. "
                      f"Point OFNOTEBOOK_CACHE_DIR at a writable directory.")


@contextlib.contextmanager
def _locked(path: Path) -> Any:
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_layer(kind: str, key: str, members: Callable[[], Iterable[Member]],
                 created_by: str) -> Layer:
    """The layer for input digest ``key``: from the cache, else built by ``members()``."""
    root = cache_root()
    final, meta = root / f"{key}.tar.gz", root / f"{key}.json"

    def load() -> Layer | None:
        try:
            data = json.loads(meta.read_text())
            if final.stat().st_size == data["size"]:
                return Layer(kind, final, data["digest"], data["diff_id"], data["size"],
                             data.get("created_by", created_by), cached=True)
        except (OSError, ValueError, KeyError):
            pass
        return None

    found = load()
    if found:
        return found
    try:
        root.mkdir(parents=True, exist_ok=True)
        with _locked(root / f"{key}.lock"):
            found = load()
            if found:
                return found
            partial = root / f"{key}.tar.gz.partial"
            try:
                with open(partial, "wb") as out:
                    digest, diff_id, size = write_layer(members(), out)
                meta_partial = root / f"{key}.json.partial"
                meta_partial.write_text(json.dumps({
                    "kind": kind, "digest": digest, "diff_id": diff_id, "size": size,
                    "created_by": created_by}))
                os.replace(partial, final)
                os.replace(meta_partial, meta)
            finally:
                for leftover in (partial, root / f"{key}.json.partial"):
                    with contextlib.suppress(OSError):
                        os.unlink(leftover)
    except OSError as exc:
        raise _disk_error(exc, root, kind) from None
    return Layer(kind, final, digest, diff_id, size, created_by)


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps([LAYER_FORMAT, *parts], sort_keys=True,
                                     default=str).encode()).hexdigest()


def _package_files(package: Package, top: str) -> dict[str, Path]:
    """The files under ``top`` of the package ("": all of it), by path in the package."""
    root = package.path / top
    return {p.relative_to(package.path).as_posix(): p for p in sorted(root.rglob("*"))
            if p.is_file()}


def _files_digest(files: dict[str, Path]) -> str:
    outer = hashlib.sha256()
    for rel in sorted(files):
        outer.update(rel.encode() + b"\0" + hashlib.sha256(files[rel].read_bytes()).digest())
    return outer.hexdigest()


def files_layer(package: Package, kind: str, top: str) -> Layer:
    """``top`` of the package (``ofnotebook`` or ``function``) under /app."""
    files = _package_files(package, top)
    key = _key(kind, _files_digest(files))
    return cached_layer(kind, key, lambda: tree(files_members(files, APP_DIR.strip("/"))),
                        f"COPY {top} {APP_DIR}/{top} # ofnotebook {kind} layer")


# --------------------------------------------------------------------------------------------
# The dependencies layer


def pip_platforms(platform: str) -> list[str]:
    """pip's ``--platform`` tags for an image platform: the wheels are chosen for the
    cluster's nodes, not for this machine; a platform pip cannot target is a ``BuildError``.
    """
    os_, arch, _variant = parse_platform(platform)
    if os_ != "linux" or arch not in _ARCH:
        raise BuildError(f"The registry build makes Linux images for {', '.join(_ARCH)}; "
                         f"{platform} is not one of them. Use --build engine or --build cluster.")
    machine = _ARCH[arch]
    newest = 31 if machine == "armv7l" else 17 if machine in ("i686", "ppc64le", "s390x") \
        else int(MANYLINUX.rsplit("_", 1)[1])
    # pip (23.x) takes --platform literally: every glibc level it may use is listed, newest
    # first, with the legacy aliases (manylinux2014 = 2_17, 2010 = 2_12, 1 = 2_5)
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(newest, 16, -1)]
    if machine != "armv7l":
        tags.append(f"manylinux2014_{machine}")
    if machine in ("x86_64", "i686"):
        tags += [f"manylinux_2_12_{machine}", f"manylinux2010_{machine}",
                 f"manylinux_2_5_{machine}", f"manylinux1_{machine}"]
    return tags


_NO_WHEEL = re.compile(r"(?:No matching distribution found for|Could not find a version that "
                       r"satisfies the requirement) (\S+)")


def _pip_failure(lines: list[str], platform: str, python: str, where: Path) -> BuildError:
    text = "\n".join(lines)
    tail = "\n".join(lines[-8:]) or "(no output)"
    if "No space left on device" in text or "[Errno 28]" in text:
        return BuildError(
            f"The disk is full: pip could not install the dependencies under {where} (no "
            f"space left on device). Free space there, or point OFNOTEBOOK_CACHE_DIR at a disk "
            f"with room.\npip said:\n{tail}")
    found = _NO_WHEEL.findall(text)
    if found:
        requirement = found[-1]
        name = re.split(r"[<>=!~;\[ (]", requirement, maxsplit=1)[0]
        return BuildError(
            f"No wheel of {name!r} ({requirement}) for {platform} and CPython {python}: the "
            f"registry build installs wheels only (pip --only-binary=:all:) and cannot compile "
            f"a source distribution. Use --build engine (pip runs inside the image) or --build "
            f"cluster (OpenFunction builds it in the cluster), or pin a version of {name} that "
            f"ships a wheel for this platform.\npip said:\n{tail}")
    return BuildError(f"pip could not install the dependencies for {platform}, CPython "
                      f"{python}:\n{tail}")


def _strip_scripts(target: Path) -> None:
    """Console scripts carry this machine's interpreter path: drop them (and their RECORD
    lines) so the layer is the same everywhere; the runtime imports, it runs no scripts."""
    shutil.rmtree(target / "bin", ignore_errors=True)
    for record in target.glob("*.dist-info/RECORD"):
        lines = record.read_text().splitlines(True)
        kept = [line for line in lines if not line.startswith("../")]
        if kept != lines:
            record.write_text("".join(kept))


def deps_layer(package: Package, python: str, platform: str, on_line: OnLine) -> Layer:
    """The dependency layer (pip's install of ``requirements.txt`` for the image's Python and
    platform), cached by those inputs: the slow layer, rebuilt only when they change."""
    requirements = (package.path / "requirements.txt").read_bytes()
    major_minor = ".".join(python.split(".")[:2])
    platforms = pip_platforms(platform)
    key = _key("deps", hashlib.sha256(requirements).hexdigest(), platform, major_minor,
               platforms)
    created_by = (f"pip install --target {DEPS_DIR} --platform {platforms[0]} (and older) "
                  f"--python-version {major_minor} --only-binary=:all: -r requirements.txt "
                  f"# ofnotebook deps layer")
    root = cache_root()
    work: list[Path] = []

    def members() -> list[Member]:
        on_line("build", f"installing the dependencies for {platform}, CPython {major_minor}")
        work.append(Path(tempfile.mkdtemp(prefix="pip-", dir=root)))
        target = work[0] / "deps"
        abi = "cp" + major_minor.replace(".", "")
        command = [sys.executable, "-m", "pip", "install", "--target", str(target)]
        for tag in platforms:
            command += ["--platform", tag]
        command += ["--python-version", major_minor, "--implementation", "cp", "--abi", abi,
                    "--only-binary=:all:", "--no-compile", "--no-warn-script-location",
                    "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
                    "-r", str(package.path / "requirements.txt")]
        env = dict(os.environ, PIP_NO_INPUT="1", PYTHONUNBUFFERED="1")
        lines: list[str] = []
        try:
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, env=env, cwd=work[0])
        except OSError as exc:
            raise BuildError(f"Cannot run pip ({sys.executable} -m pip): {exc}.") from None
        with proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip():
                    lines.append(line.rstrip())
                    on_line("build", line.rstrip())
        if proc.returncode != 0:
            raise _pip_failure(lines, platform, major_minor, root)
        _strip_scripts(target)
        return tree([Member(f"{APP_DIR.strip('/')}/requirements.txt", "file", requirements)]
                    + dir_members(target, DEPS_DIR.strip("/")))

    try:
        return cached_layer("deps", key, members, created_by)
    finally:
        for path in work:
            shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The build context (a Shipwright source bundle)


def bundle_layer(package: Package) -> Layer:
    """The build context under ``workspace/``: directories and regular files only."""
    files = _package_files(package, "")
    key = _key("bundle", _files_digest(files))

    def members() -> list[Member]:
        # read the bytes (a symlinked file is stored as its content, as Shipwright does)
        return tree(Member(f"workspace/{rel}", "file", path.read_bytes(), 0o644)
                    for rel, path in files.items())

    return cached_layer("bundle", key, members, "ofnotebook build context")

