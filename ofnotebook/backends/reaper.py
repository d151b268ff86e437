"""Remove a kernel's containers however the kernel ends, as testcontainers' Ryuk does.

``atexit`` removes the containers of a kernel that exits; a kernel killed with SIGKILL (a
JupyterHub culler, an out-of-memory kill, "Restart kernel" on a stuck one) or SIGTERM (which
Python does not turn into ``atexit``) would leave them running forever. Two nets catch them:

* **The reaper**: a small process (``python -m ofnotebook.backends.reaper``) started with the
  kernel's first container. It reads a pipe whose other end only the kernel holds; the end of
  the pipe (or the kernel's PID disappearing as its parent) means the kernel is gone, and it
  removes every container carrying the kernel's session label, then exits. It imports nothing
  heavy until then.
* **The sweep**: a kernel's first use of an engine removes containers whose kernel label names
  a process on this machine (same boot) that no longer exists: a reaper that was itself killed,
  or an engine that was down when the kernel died.

Containers of kernels on other machines (a shared remote ``DOCKER_HOST``) are never touched.
"""

from __future__ import annotations

import argparse
import atexit
import os
import select
import socket
import subprocess
import sys
import time
import uuid
from typing import Any

from .processes import child_env

SESSION = uuid.uuid4().hex[:12]
LABEL_SESSION = "io.ofnotebook.session"
LABEL_FUNCTION = "io.ofnotebook.function"
#: ``HOST/BOOT/PID/START``: which process on which machine (and boot) owns the container.
LABEL_KERNEL = "io.ofnotebook.kernel"

_reapers: dict[str, subprocess.Popen[bytes]] = {}
_swept: set[str] = set()


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return "-"


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (None: no such process), so a PID
    reused by another process does not pass for the kernel; "-" where it cannot be read (no
    ``/proc``, as on macOS, or ``/proc`` mounted ``hidepid``): then only ``kill(pid, 0)`` tells,
    and a process we may not signal (another user's) counts as alive."""
    if os.path.exists("/proc/self/stat"):
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                return f.read().rsplit(")", 1)[1].split()[19]
        except OSError:
            pass  # gone, or hidden from us: ask the kernel below
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return "-"
    return "-"


def kernel_identity(pid: int | None = None) -> str:
    """The :data:`LABEL_KERNEL` value of the process ``pid`` (default: this kernel)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}/{_boot_id()}/{pid}/{_start_ticks(pid) or '-'}"


def kernel_alive(identity: str) -> bool:
    """Whether the kernel a container's label names may still run. Only a kernel of this
    machine and boot whose process is gone (or is another process now) is dead: anything else,
    a malformed label included, counts as alive and is left alone."""
    parts = identity.split("/")
    if len(parts) != 4 or not parts[2].isdigit():
        return True
    host, boot, pid, start = parts
    if host != socket.gethostname() or boot != _boot_id():
        return True
    ticks = _start_ticks(int(pid))
    if ticks is None:
        return False
    return start in ("-", ticks) or ticks == "-"


def labels(function: str) -> dict[str, str]:
    """The labels of a container this kernel starts for ``function``."""
    return {LABEL_SESSION: SESSION, LABEL_FUNCTION: function, LABEL_KERNEL: kernel_identity()}


def sweep(client: Any) -> list[str]:
    """Remove the containers of kernels of this machine that are gone; the names removed.
    Once per engine and kernel: one list call, before the kernel's first container."""
    from ..images import engine_url  # the engine's address (base_url is one for all sockets)

    url = engine_url()
    if url in _swept:
        return []
    _swept.add(url)
    removed: list[str] = []
    try:  # the low-level list: one call, no inspect of each (which races with removals)
        found = client.api.containers(all=True, filters={"label": LABEL_KERNEL})
    except Exception:
        return removed  # the deploy that follows reports an engine that does not answer
    for container in found:
        found_labels = container.get("Labels") or {}
        if (found_labels.get(LABEL_SESSION) != SESSION
                and not kernel_alive(found_labels.get(LABEL_KERNEL, ""))):
            try:
                client.api.remove_container(container["Id"], force=True)
                removed.append(container["Names"][0].lstrip("/"))
            except Exception:
                pass  # another kernel's sweep got there first
    return removed


def ensure_reaper(engine_url: str) -> subprocess.Popen[bytes]:
    """Start this kernel's reaper for ``engine_url`` unless it runs already."""
    proc = _reapers.get(engine_url)
    if proc is not None and proc.poll() is None:
        return proc
    proc = subprocess.Popen(
        [sys.executable, "-m", "ofnotebook.backends.reaper", "--engine", engine_url,
         "--session", SESSION, "--kernel-pid", str(os.getpid())],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=child_env(), start_new_session=True)  # outlives the kernel's process group
    _reapers[engine_url] = proc
    return proc


def _release_reapers() -> None:
    """At a normal exit: close our end of each pipe (after the container target's own
    removal, registered later so run earlier); each reaper then sweeps what is left and exits."""
    for proc in _reapers.values():
        if proc.stdin is not None:
            proc.stdin.close()
    for proc in _reapers.values():  # nothing left to remove: each ends in a moment
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            pass  # still removing: it goes on alone (its own session)


atexit.register(_release_reapers)


def _wait_for_kernel_end(kernel_pid: int) -> None:
    """Block until the kernel's end of the pipe closes or the kernel stops being our parent."""
    while True:
        ready, _, _ = select.select([sys.stdin.buffer], [], [], 1.0)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            return  # EOF: the kernel exited, however it ended
        if os.getppid() != kernel_pid:
            return  # reparented: the kernel is gone


def remove_session(engine_url: str, session: str) -> int:
    """Remove every container labelled with ``session`` on the engine; how many."""
    import docker

    client = docker.APIClient(base_url=engine_url, timeout=60)
    count = 0
    try:
        for container in client.containers(all=True,
                                           filters={"label": f"{LABEL_SESSION}={session}"}):
            try:
                client.remove_container(container["Id"], force=True)
                count += 1
            except docker.errors.APIError:
                pass  # removed meanwhile (the kernel's own atexit)
    finally:
        client.close()
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ofnotebook.backends.reaper")
    parser.add_argument("--engine", required=True)
    parser.add_argument("--session", required=True)
    parser.add_argument("--kernel-pid", type=int, required=True)
    args = parser.parse_args(argv)
    _wait_for_kernel_end(args.kernel_pid)
    for attempt in range(3):  # the engine may be busy (the kernel's own atexit removals)
        try:
            remove_session(args.engine, args.session)
            return 0
        except Exception:
            time.sleep(1.0 + attempt)
    return 1


if __name__ == "__main__":
    sys.exit(main())
