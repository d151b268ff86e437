"""The stand-in's process: started with the kernel's secrets in its environment (never on its
command line, which every user can read in ps), on given ports or free ones, its output kept
in a bounded list. One that does not announce its ports within ``OFNOTEBOOK_START_TIMEOUT``
(or exits first) is stopped, and one ``DeployError`` names the cause, its last output and the
fix: nothing is left behind. :mod:`.standin` is its only user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

from .. import config
from ..errors import DeployError
from .processes import STOP_GRACE, child_env, terminate

__all__ = ["start", "terminate"]

#: Output lines kept.
LOG_LINES = 500


def start(http_port: int, grpc_port: int, secrets: dict[str, str], logs: list[str],
          started: list[subprocess.Popen[str]]) -> tuple[subprocess.Popen[str], dict[str, int]]:
    """Start ``python -m ofnotebook.sidecar`` on the ports (0: free ones), appended to
    ``started`` at once (the caller's finalizer stops them all); returns it and the ports it
    announced. Its output goes to ``logs``."""
    timeout = float(config.get("start_timeout"))
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "ofnotebook.sidecar", "--parent-pid", str(os.getpid()),
         "--http-port", str(http_port), "--grpc-port", str(grpc_port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**child_env(), **secrets}, start_new_session=True, text=True, bufsize=1)
    started.append(proc)
    ports, done = _read_ports(proc, timeout, logs)
    if not ports:
        terminate(proc)
        done.wait(STOP_GRACE)  # its output read to the end, and closed
        tail = "\n".join(logs[-20:]) or "(no output)"
        if proc.returncode is not None and proc.returncode not in (-15, -9):
            cause = f"exited with code {proc.returncode} before it listened"
            fix = "the output above says why"
        else:
            cause = (f"did not announce its ports within {timeout:g} s "
                     f"(OFNOTEBOOK_START_TIMEOUT) and was stopped")
            fix = "on a slow or busy machine give it longer, e.g. OFNOTEBOOK_START_TIMEOUT=120"
        raise DeployError(f"The local Dapr stand-in {cause}. Its last output:\n{tail}\n"
                          f"Fix: {fix}.")
    threading.Thread(target=_drain, args=(proc, logs), name="standin-output",
                     daemon=True).start()
    return proc, ports


def _read_ports(proc: subprocess.Popen[str], timeout: float, logs: list[str]
                ) -> tuple[dict[str, int], threading.Event]:
    """The ports line of ``proc`` (empty: none within ``timeout``, or it exited); the lines
    before it go to ``logs``. The event is set once the reading ended (at the end of the
    output, which is closed then)."""
    result: dict[str, int] = {}
    done = threading.Event()

    def read_first() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith('{"http"'):
                result.update(json.loads(line))
                break
            logs.append(line.rstrip())
        else:
            proc.stdout.close()
        done.set()

    threading.Thread(target=read_first, daemon=True).start()
    done.wait(timeout)
    return result, done


def _drain(proc: subprocess.Popen[str], logs: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        logs.append(line.rstrip())
        del logs[:-LOG_LINES]
    proc.stdout.close()
