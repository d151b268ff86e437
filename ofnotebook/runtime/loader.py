"""Load a package's function: check the manifest, the payload digest and the versions, unpickle.

A cloudpickle payload only loads safely under the same Python major.minor and the same
cloudpickle version it was written with, so a mismatch is refused with a message that says
which side to change, instead of a confusing unpickling error later.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

MANIFEST = "function/manifest.json"
PAYLOAD = "function/payload.pkl"
SOURCES = "function/sources.json"
CONTEXT = "function/context.json"


class PackageLoadError(RuntimeError):
    """Raised when a package cannot be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class LoadedFunction:
    """The unpickled function and what the manifest says about it."""

    function: Callable[..., Any]
    entry: str
    signature: str
    manifest: dict[str, Any]
    sources: dict[str, list[str]]


def read_manifest(package: Path) -> dict[str, Any]:
    path = package / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise PackageLoadError(f"{path} is missing: {package} is not an ofnotebook package") from None
    except json.JSONDecodeError as exc:
        raise PackageLoadError(f"{path} is not valid JSON: {exc}") from exc
    return manifest


def check_versions(manifest: dict[str, Any]) -> list[str]:
    """Refuse a Python major.minor or cloudpickle mismatch; return warnings (micro mismatch)."""
    import cloudpickle

    here = ".".join(map(str, sys.version_info[:3]))
    built = str(manifest.get("python", ""))
    if built.split(".")[:2] != here.split(".")[:2]:
        raise PackageLoadError(
            f"the payload was pickled by Python {built} but this runtime is Python {here}; "
            f"use a base image with Python {'.'.join(built.split('.')[:2])}")
    if manifest.get("cloudpickle") != cloudpickle.__version__:
        raise PackageLoadError(
            f"the payload was pickled with cloudpickle {manifest.get('cloudpickle')} but this "
            f"runtime has cloudpickle {cloudpickle.__version__}; pin cloudpickle=="
            f"{manifest.get('cloudpickle')} in the image")
    if built != here:
        return [f"payload pickled by Python {built}, running on {here}"]
    return []


def read_sources(package: Path) -> dict[str, list[str]]:
    """Source lines of the by-value functions, keyed by function name (for tracebacks)."""
    path = package / SOURCES
    if not path.exists():
        return {}
    return {name: text.splitlines() for name, text in json.loads(path.read_text()).items()}


def load_function(package: Path) -> LoadedFunction:
    """Load the function of ``package`` after checking its digest and versions."""
    import cloudpickle

    manifest = read_manifest(package)
    for warning in check_versions(manifest):
        print(f"ofnotebook runtime: warning: {warning}", file=sys.stderr, flush=True)
    payload = (package / PAYLOAD).read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != manifest.get("payload_sha256"):
        raise PackageLoadError(
            f"payload digest {digest[:12]} does not match the manifest's "
            f"{str(manifest.get('payload_sha256'))[:12]}: the package was modified or truncated; "
            f"deploy the function again")
    try:
        function = cloudpickle.loads(payload)
    except Exception as exc:
        raise PackageLoadError(
            f"the payload could not be unpickled ({type(exc).__name__}: {exc}); a module it "
            f"imports may be missing from the image's requirements") from exc
    return LoadedFunction(function=function, entry=str(manifest.get("entry", "")),
                          signature=str(manifest.get("signature", "request")), manifest=manifest,
                          sources=read_sources(package))


def context_from_package(package: Path) -> dict[str, str]:
    """The context variables written into the package, used when the environment has none."""
    path = package / CONTEXT
    if not path.exists():
        return {}
    data: dict[str, str] = json.loads(path.read_text())
    return data
