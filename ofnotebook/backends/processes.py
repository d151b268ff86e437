"""Child processes of the kernel: the environment they start with and how they are stopped,
and the local target's runtime processes with their readiness probes and restart backoff.

Shared by the local target's runtime processes (:mod:`.local`) and the Dapr stand-in
(:mod:`.standin`), so both follow one rule: a child imports this very ofnotebook, and stopping
is SIGTERM, then SIGKILL after :data:`STOP_GRACE` seconds, always reaped. No runtime process
outlives the kernel, a restarted one neither: each is stopped at exit (atexit), and each watches
its parent PID and exits on its own if the kernel is killed.
"""

from __future__ import annotations

import atexit
import collections
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from ..errors import DeployError
from ..runtime import HEALTH_PATH
from .base import LogBuffer

#: Seconds a child gets between SIGTERM and SIGKILL.
STOP_GRACE = 3.0


def child_env() -> dict[str, str]:
    """The kernel's environment for a child, unbuffered and marked local; the child must
    import this very ofnotebook, even when it is not installed."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["OFNOTEBOOK_LOCAL"] = "1"
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def terminate(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL after a grace period; always reaps the process."""
    try:
        if proc.stdin:
            proc.stdin.close()
    except OSError:  # a broken pipe to a process that already died
        pass
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


#: Restart backoff of a runtime that died (as the kubelet's CrashLoopBackOff, shorter): the
#: first restart waits RESTART_FIRST s, each next one twice as long up to RESTART_MAX; a
#: process that stayed up RESTART_RESET s starts the sequence again.
RESTART_FIRST, RESTART_MAX, RESTART_RESET = 0.5, 30.0, 60.0

#: How the runtime's line saying it serves begins (``runtime/__main__``, ``callbacks``).
SERVING = "ofnotebook runtime: serving"

#: What the runtime writes when it cannot listen on its port (``runtime/__main__``, gRPC).
_PORT_IN_USE = re.compile("failed to bind|address already in use|cannot listen on",
                          re.IGNORECASE)

_LIVE_PROCESSES: "weakref.WeakSet[RuntimeProcess]" = weakref.WeakSet()
_exiting = threading.Event()


def kernel_exiting() -> bool:
    """True once the kernel's exit began (:func:`stop_all_processes`): nothing restarts."""
    return _exiting.is_set()


class Backoff:
    """The delay before each restart: doubling from ``first`` to ``cap``, back to ``first``
    once a process lived ``reset`` seconds (a crash an hour later is not a crash loop)."""

    def __init__(self, first: float = RESTART_FIRST, cap: float = RESTART_MAX,
                 reset: float = RESTART_RESET) -> None:
        self.first, self.cap, self.reset = first, cap, reset
        self._next = first

    def next_delay(self, uptime: float) -> float:
        if uptime >= self.reset:
            self._next = self.first
        delay, self._next = self._next, min(self._next * 2, self.cap)
        return delay


class RuntimeProcess:
    """One ``python -m ofnotebook.runtime --standby`` subprocess and its log buffer.

    The buffer can be handed over (:attr:`log_buffer` is read for each line), so a restarted
    function keeps one log across its processes."""

    def __init__(self, *, log_lines: int) -> None:
        if _exiting.is_set():
            raise DeployError("The kernel is exiting: no new runtime process is started.")
        self.log_buffer = LogBuffer(log_lines)
        self._port_ready = threading.Event()
        self.exited = threading.Event()
        #: This process said it serves (a restarted function's log holds earlier processes'
        #: lines too, so the log cannot tell).
        self.serving = threading.Event()
        #: This process said it could not bind its port (read per process, as ``serving``:
        #: the shared log of a restarted function holds earlier processes' lines).
        self.port_in_use = False
        self.port: int | None = None
        self.returncode: int | None = None
        self.stopping = False
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "ofnotebook.runtime", "--standby",
             "--parent-pid", str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=child_env(), start_new_session=True, text=True, encoding="utf-8",
            errors="replace", bufsize=1)
        _LIVE_PROCESSES.add(self)
        self._reader = threading.Thread(target=self._read, name=f"ofnotebook-log-{self.proc.pid}",
                                        daemon=True)
        self._reader.start()
        self._finalizer = weakref.finalize(self, terminate, self.proc)

    @property
    def pid(self) -> int:
        """The process's PID, for messages and for the tests' leak check."""
        return self.proc.pid

    @property
    def logs(self) -> "collections.deque[str]":
        return self.log_buffer.lines

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            if self.port is None and line.startswith('{"standby":'):
                self.port = int(json.loads(line)["standby"])
                self._port_ready.set()
                continue
            if line.startswith(SERVING):
                self.serving.set()
            elif _PORT_IN_USE.search(line):
                self.port_in_use = True
            self.log_buffer.append(line)
        self.proc.stdout.close()
        self.returncode = self.proc.wait()
        self.exited.set()
        self._port_ready.set()

    def wait_standby(self, timeout: float) -> int:
        """Block until the process announced its port; raise ``DeployError`` if it did not."""
        self._port_ready.wait(timeout)
        if self.port is None:
            self.stop()
            raise DeployError(
                "The local runtime process did not start within "
                f"{timeout:.0f} s (OFNOTEBOOK_START_TIMEOUT). Last output:\n"
                + "\n".join(list(self.logs)[-20:]))
        return self.port

    def send(self, order: dict[str, object]) -> None:
        """Hand the standby process one JSON line (the package to load): stdin, because the
        process is already started and waiting, which is what makes a deploy fast."""
        assert self.proc.stdin is not None
        self.started_at = time.monotonic()
        self.proc.stdin.write(json.dumps(order) + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        """Terminate, then kill after the grace period (the finalizer, which also runs at
        exit), and let the log reader finish so the last lines are kept."""
        self.stopping = True
        self._finalizer()
        self._reader.join(timeout=STOP_GRACE)


def stop_all_processes() -> None:
    """Stop every runtime process this kernel started (registered with ``atexit``); no new
    one starts after (a restart due meanwhile is refused)."""
    _exiting.set()
    for process in list(_LIVE_PROCESSES):
        process.stop()


atexit.register(stop_all_processes)


def health_answer(port: int, timeout: float = 2.0) -> dict[str, Any] | None:
    """What answers the runtime's health probe on ``port``: the JSON of an ofnotebook sync
    runtime (its function's name, pid and deployment nonce), else None."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", HEALTH_PATH)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            return None
        answer = json.loads(body)
        return answer if isinstance(answer, dict) else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


def wait_healthy(process: RuntimeProcess, port: int, timeout: float, nonce: str) -> None:
    """Ready once the health probe on ``port`` answers with this deployment's ``nonce``: a
    port another process holds (another function, the port given with --port) must not pass
    for it, however fast that one answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not process.exited.is_set():
        answer = health_answer(port, min(2.0, timeout))
        if answer is not None and answer.get("nonce") == nonce:
            return
        if answer is not None and answer.get("pid") not in (None, process.pid):
            process.stop()
            raise DeployError(_held_by(port, answer))
        time.sleep(0.005)
    process.exited.wait(0.2)  # let the reader collect the last lines of a crash
    raise DeployError("not ready")


def _held_by(port: int, answer: dict[str, Any]) -> str:
    name = answer.get("name", "?")
    return (f"port {port} is held by the ofnotebook function {name!r} (pid {answer.get('pid')})"
            f", not this deployment: pick another --port, or stop {name!r} first "
            f"(%function stop {name})")


def port_holder(port: int) -> str:
    """Who holds ``port``, for the message of a runtime that could not listen on it."""
    answer = health_answer(port, 1.0)
    if answer is not None and "name" in answer:
        return _held_by(port, answer)
    return (f"port {port} is held by another program: pick another --port, or stop the "
            f"program listening on 127.0.0.1:{port}")


def wait_listening(process: RuntimeProcess, port: int, timeout: float) -> None:
    """An async function serves gRPC: ready once it said it serves and its port accepts
    connections (its own bind of the port came first, so another process listening on that
    port does not pass for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not process.exited.is_set():
        if not process.serving.is_set():
            time.sleep(0.01)
            continue
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.01)
    process.exited.wait(0.2)
    raise DeployError("not ready")


def lost_its_port(process: RuntimeProcess) -> bool:
    """True when the runtime exited because its port was taken (a race with other processes
    picking free ports between the standby's release and the bind, or a held --port)."""
    return process.exited.is_set() and process.port_in_use
