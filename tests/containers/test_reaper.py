"""A killed kernel leaves no container (issue 12 item 7), on each real engine.

A "kernel" here is a real Python process that deploys a function to the container target and
is then killed with SIGKILL or SIGTERM, as a JupyterHub culler or an OOM kill would; its
containers must be gone within 10 s (the reaper). A container whose kernel died while no reaper
ran (the reaper killed too) is removed by the next kernel's first deploy (the sweep).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ofnotebook.backends import reaper
from tests.containers.conftest import ENGINES
from ofnotebook.package import default_base_image
from tests.helpers import uid, wait_for

pytestmark = pytest.mark.container

KERNEL = textwrap.dedent("""
    import json, sys
    import ofnotebook
    from ofnotebook.backends import reaper
    from ofnotebook.backends.container import ContainerBackend
    from tests.helpers import make_function

    fn = make_function("def hello(request):\\n    return 'hi'\\n", name="hello")
    handle = ofnotebook.deploy(fn, sys.argv[1], target=ContainerBackend(start_timeout=60))
    print(json.dumps({"session": reaper.SESSION,
                      "reaper": reaper._reapers[next(iter(reaper._reapers))].pid}), flush=True)
    sys.stdin.read()  # a kernel idles until it is killed
""")


def start_kernel(engine_name: str, tmp_path: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    import json

    script = tmp_path / "kernel.py"
    script.write_text(KERNEL)
    env = {**os.environ, "DOCKER_HOST": ENGINES[engine_name],
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    kernel = subprocess.Popen([sys.executable, str(script), f"reap-{uid()}"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert kernel.stdout is not None
    line = kernel.stdout.readline()
    if not line:
        kernel.kill()
        pytest.fail(f"the kernel process did not deploy (exit code {kernel.wait()})")
    return kernel, json.loads(line)


def session_containers(client: Any, session: str) -> list[str]:
    """Ids, from one list call (the SDK's list inspects each, racing with the removal)."""
    return [c["Id"] for c in client.api.containers(
        all=True, filters={"label": f"{reaper.LABEL_SESSION}={session}"})]


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_kernel_leaves_no_container(client: Any, engine_name: str, tmp_path: Path,
                                             how: signal.Signals) -> None:
    kernel, info = start_kernel(engine_name, tmp_path)
    try:
        assert len(session_containers(client, info["session"])) == 1  # it did run one
        kernel.send_signal(how)
        kernel.wait(10)
        wait_for(lambda: not session_containers(client, info["session"]), timeout=10)
        wait_for(lambda: subprocess.run(["kill", "-0", str(info["reaper"])],
                                        capture_output=True).returncode != 0, timeout=10)
    finally:
        kernel.kill()
        kernel.wait()
        for pipe in (kernel.stdin, kernel.stdout):
            if pipe is not None:
                pipe.close()
        for container in session_containers(client, info["session"]):
            client.api.remove_container(container, force=True)


def test_a_new_kernel_removes_containers_of_dead_kernels(client: Any, tmp_path: Path) -> None:
    """Reaper and kernel both killed (-9): the next kernel's first container deploy removes
    the orphan; a container of a live process (this one) and one of another machine stay."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a PID that no longer runs
    base = default_base_image(".".join(map(str, sys.version_info[:2])))  # .ci/setup-containers'
    made = []
    try:
        for owner in (reaper.kernel_identity(dead.pid),            # dead kernel, this machine
                      reaper.kernel_identity(os.getppid()),         # a live process
                      f"elsewhere/{reaper._boot_id()}/{dead.pid}/1"):  # another machine's
            made.append(client.containers.create(
                base, labels={reaper.LABEL_SESSION: f"old-{uid()}",
                              reaper.LABEL_KERNEL: owner}))
        reaper._swept.clear()  # this test process plays a new kernel
        removed = reaper.sweep(client)
        names = {c["Names"][0].lstrip("/") for c in client.api.containers(all=True)}
        assert made[0].name in removed and made[0].name not in names
        assert made[1].name in names and made[2].name in names
        assert reaper.sweep(client) == []  # once per engine and kernel
    finally:
        for container in made:
            try:
                container.remove(force=True)
            except Exception:
                pass


def test_kernel_identity_tells_a_reused_pid_from_its_kernel() -> None:
    me = reaper.kernel_identity()
    assert reaper.kernel_alive(me)
    host, boot, pid, start = me.split("/")
    assert pid == str(os.getpid()) and start.isdigit()
    assert not reaper.kernel_alive(f"{host}/{boot}/{pid}/{int(start) + 1}")  # another process
    assert reaper.kernel_alive("garbage")  # unknown: left alone
