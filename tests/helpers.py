"""Helpers shared by the tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import linecache
import os
import socket
import textwrap
import time
import types
import uuid
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")

import psutil
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


def make_function(source: str, namespace: dict[str, Any] | None = None,
                  name: str = "f") -> types.FunctionType:
    """Define functions the way a notebook does: code executed in a ``__main__``-like dict,
    its text in linecache under a cell-like file name."""
    ns: dict[str, Any] = {"__name__": "__main__"} if namespace is None else namespace
    ns.setdefault("__name__", "__main__")
    text = textwrap.dedent(source)
    filename = f"<cell-{len(linecache.cache)}-{hash(text)}>"
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    exec(compile(text, filename, "exec"), ns)
    return ns[name]  # type: ignore[no-any-return]


def runtime_children() -> list[psutil.Process]:
    """Runtime processes started by this test process that are still alive."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "ofnotebook.runtime" in " ".join(child.cmdline()) and child.status() != "zombie":
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def wait_for(predicate: Callable[[], T], timeout: float = 10.0,
             message: str | Callable[[], str] = "condition not met in time", *,
             ignoring: tuple[type[BaseException], ...] = (), interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something true, and return that; after ``timeout``
    seconds fail with ``message`` (a callable is called then, so it can show fresh logs).

    The one polling loop of the tests: things here happen in other threads and processes, so
    a test waits for a state, never for a fixed time. An exception in ``ignoring`` counts as
    "not yet" (a server that does not answer yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except ignoring:
            value = None  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(message() if callable(message) else message)
        time.sleep(interval)


def uid(length: int = 8) -> str:
    """A random hex id, for names that must not meet another test's (topics, streams, apps)."""
    return uuid.uuid4().hex[:length]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def shared_file(relative: str) -> Path:
    """A file from ../shared; fail under CI when it is missing, skip with the reason elsewhere."""
    path = SHARED / relative
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing; CI must provide ../shared")
        pytest.skip(f"{path} is not available outside CI (needs ../shared)")
    return path


LOCAL_REGISTRY = "127.0.0.1:5000"
LOCAL_BASE = f"{LOCAL_REGISTRY}/library/python:3.11-slim"
MANIFEST_ACCEPT = ("application/vnd.docker.distribution.manifest.v2+json, "
                   "application/vnd.oci.image.manifest.v1+json")


def require_local_registry() -> None:
    """The registry of .ci/setup-containers with the base pushed into it: fail under CI when
    it is missing, skip with the reason elsewhere."""
    import requests

    try:
        ok = requests.head(f"http://{LOCAL_REGISTRY}/v2/library/python/manifests/3.11-slim",
                           headers={"Accept": MANIFEST_ACCEPT}, timeout=5).status_code == 200
    except requests.RequestException:
        ok = False
    if not ok:
        why = f"no registry with {LOCAL_BASE} at {LOCAL_REGISTRY} (.ci/setup-containers)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide it: {why}")
        pytest.skip(why)
