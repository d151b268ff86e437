"""Child processes of the kernel: the environment they start with and how they are stopped.

Shared by the local target's runtime processes (:mod:`.local`) and the Dapr stand-in
(:mod:`.standin`), so both follow one rule: a child imports this very ofnotebook, and stopping
is SIGTERM, then SIGKILL after :data:`STOP_GRACE` seconds, always reaped.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

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
