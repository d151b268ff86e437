"""Files a function reads (``--include``): collected, checked and sized before anything is built.

A function that opens ``data/labels.csv`` or renders a Flask ``templates/`` folder works in the
notebook because the kernel's working directory has them; in a container or a cluster it has
only what the package holds. So the files a user names are copied into the package (under
``function/files/``, the code layer of every image) at the same relative path, and the runtime
makes that folder its working directory on every target, the local one included: a relative
path that works once deployed works everywhere, and one that is missing fails on the first
target tried, with a message naming ``--include``.

Paths are relative to the notebook's working directory and may not leave it (``..``, absolute
paths): the relative path is what the function's code uses. The total size counts against the
same limits as the captured globals (``OFNOTEBOOK_WARN_GLOBAL_MB``, ``OFNOTEBOOK_MAX_GLOBAL_MB``):
every deploy ships them, so a large model file belongs in object storage or the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

from . import config
from .errors import CaptureError
from .runtime import FILES_DIR
#: Folder names never worth shipping: caches and version control.
SKIPPED = frozenset({"__pycache__", ".git", ".ipynb_checkpoints", ".mypy_cache",
                     ".pytest_cache", ".venv", "node_modules"})
_MB = 1024 * 1024


@dataclass(frozen=True)
class IncludedFile:
    """One file of ``--include``: its path as the function uses it, and its bytes."""

    path: str  # relative, with '/' separators
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


def _relative(given: str, root: Path) -> PurePosixPath:
    """``given`` as a clean relative path under ``root``, or a CaptureError with the fix."""
    if not isinstance(given, str) or not given.strip():
        raise CaptureError(f"--include {given!r} is not a path; name a file or folder "
                           f"relative to the notebook, such as templates/ or model.pkl.")
    path = Path(given).expanduser()
    if path.is_absolute():
        try:
            path = path.resolve().relative_to(root.resolve())
        except ValueError:
            raise CaptureError(
                f"--include {given!r} is outside the notebook's folder ({root}); the function "
                f"opens included files by their path relative to it. Copy the file beside the "
                f"notebook and include it by its relative path.") from None
    parts = PurePosixPath(path.as_posix())
    if ".." in parts.parts:
        raise CaptureError(
            f"--include {given!r} leaves the notebook's folder ({root}); include files by a "
            f"path inside it (copy the file beside the notebook).")
    clean = PurePosixPath(*[p for p in parts.parts if p not in ("", ".")])
    if not clean.parts:
        raise CaptureError(f"--include {given!r} names the notebook's whole folder; include "
                           f"the files or folders the function reads, such as templates/.")
    return clean


def collect(paths: Iterable[str], root: Path | None = None, *,
            max_mb: float | None = None) -> tuple[IncludedFile, ...]:
    """Read every file ``paths`` name (folders recursively, caches skipped), sorted by path.

    Raises :class:`CaptureError` naming the path for a missing or unreadable one, and when the
    total is over ``OFNOTEBOOK_MAX_GLOBAL_MB``.
    """
    root = Path.cwd() if root is None else root
    found: dict[str, bytes] = {}
    for given in paths:
        rel = _relative(given, root)
        source = root / Path(*rel.parts)
        if not source.exists():
            raise CaptureError(f"--include {given!r}: there is no {source}; check the path "
                               f"(relative to the notebook's folder, {root}).")
        files = [source] if source.is_file() else sorted(
            p for p in source.rglob("*")
            if p.is_file() and not SKIPPED.intersection(p.relative_to(source).parts))
        for file in files:
            name = (rel / file.relative_to(source).as_posix()).as_posix() if file != source \
                else rel.as_posix()
            try:
                found[name] = file.read_bytes()
            except OSError as exc:
                raise CaptureError(f"--include {given!r}: cannot read {file}: "
                                   f"{exc.strerror or exc}.") from None
    included = tuple(IncludedFile(name, data) for name, data in sorted(found.items()))
    total = sum(f.size for f in included)
    limit = float(config.get("max_global_mb", max_mb)) * _MB
    if total > limit:
        biggest = sorted(included, key=lambda f: -f.size)[:3]
        raise CaptureError(
            f"The included files are {human(total)}, over the limit of {human(int(limit))} "
            f"(largest: {', '.join(f'{f.path} {human(f.size)}' for f in biggest)}); every "
            f"deploy ships them. Put large files in the image or object storage, or raise "
            f"OFNOTEBOOK_MAX_GLOBAL_MB.")
    return included


def warnings(included: Iterable[IncludedFile], warn_mb: float | None = None) -> list[str]:
    """One warning per included file above ``OFNOTEBOOK_WARN_GLOBAL_MB``."""
    limit = float(config.get("warn_global_mb", warn_mb)) * _MB
    return [f"included file {f.path!r} is {human(f.size)}; every deploy ships it."
            for f in included if f.size > limit]


def report_lines(included: Iterable[IncludedFile]) -> list[str]:
    """The capture report's lines for the included files."""
    return [f"  file   {f.path:<44} {human(f.size):>9}" for f in included]


def package_files(included: Iterable[IncludedFile]) -> dict[str, bytes]:
    """The build context's entries for ``included`` (under :data:`FILES_DIR`)."""
    return {f"{FILES_DIR}/{f.path}": f.data for f in included}


def human(size: float) -> str:
    if size < 1024:
        return f"{int(size)} B"
    if size < _MB:
        return f"{size / 1024:.1f} kB"
    return f"{size / _MB:.1f} MB"


__all__ = ["FILES_DIR", "IncludedFile", "collect", "package_files", "report_lines", "warnings"]
