"""The local target: real runtime subprocesses, real HTTP, nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

import ofnotebook
from ofnotebook.errors import DeployError, InvocationError
from tests.backends.conformance import BackendConformance
from tests.helpers import free_port, make_function, runtime_children, wait_for

ROOT = Path(__file__).resolve().parents[2]


class TestLocalConformance(BackendConformance):
    target = "local"

    @pytest.fixture
    def backend(self, local_backend: Any) -> Any:
        return local_backend


def _pid(handle: Any) -> int:
    return int(handle.deployment.process.pid)


def test_reuse_keeps_the_process_and_edit_replaces_it(local_backend: Any) -> None:
    source = "def f(request):\n    return 'one'\n"
    first = ofnotebook.deploy(make_function(source), "pids", target=local_backend)
    again = ofnotebook.deploy(make_function(source), "pids", target=local_backend)
    assert _pid(again) == _pid(first)
    edited = ofnotebook.deploy(make_function(source.replace("one", "two")), "pids",
                               target=local_backend)
    assert _pid(edited) != _pid(first) and first.status == "stopped"
    # stopped in the background once the new one answers
    wait_for(lambda: _pids_gone([_pid(first)]), 5, "the replaced runtime is still running",
             ignoring=(psutil.NoSuchProcess,))
    assert edited.invoke().text == "two"


def test_env_change_replaces_the_process(local_backend: Any) -> None:
    fn = make_function("import os\ndef f(request):\n    return os.environ['COLOR']\n")
    red = ofnotebook.deploy(fn, "env", target=local_backend, env={"COLOR": "red"})
    assert red.invoke().text == "red"
    blue = ofnotebook.deploy(fn, "env", target=local_backend, env=["COLOR=blue"])
    assert blue.invoke().text == "blue" and _pid(blue) != _pid(red)


def test_context_seen_by_the_function_names_the_local_port(local_backend: Any) -> None:
    fn = make_function("import os, json\ndef f(request):\n"
                       "    return json.loads(os.environ['FUNC_CONTEXT'])\n")
    handle = ofnotebook.deploy(fn, "ctx", target=local_backend)
    context = handle.invoke().json()
    assert context == {"name": "ctx", "version": "latest", "runtime": "Knative",
                       "port": str(handle.deployment.port)}


def test_fixed_port(local_backend: Any) -> None:
    port = free_port()
    handle = ofnotebook.deploy(make_function("def f(request):\n    return 'fixed'\n"),
                               "fixed", target=local_backend, port=port)
    assert handle.url == f"http://127.0.0.1:{port}/" and handle.invoke().text == "fixed"


def test_port_in_use_fails_cleanly(local_backend: Any) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(DeployError, match="cannot listen on 127.0.0.1") as info:
            ofnotebook.deploy(make_function("def f(request):\n    return 1\n"), "busy",
                              target=local_backend, port=port)
    assert info.value.function_name == "busy" and info.value.last_logs
    assert local_backend.deployments() == []


def test_a_payload_that_fails_to_load_leaves_nothing(local_backend: Any) -> None:
    ns: dict[str, Any] = {"__name__": "__main__"}
    make_function(textwrap.dedent("""
        def explode():
            raise RuntimeError("cannot rebuild me")

        class Fragile:
            def __reduce__(self):
                return (explode, ())

        FRAGILE = Fragile()
    """), ns, "explode")
    fn = make_function("def f(request):\n    return str(FRAGILE)\n", ns)
    with pytest.raises(DeployError) as info:
        ofnotebook.deploy(fn, "fragile", target=local_backend)
    assert "cannot rebuild me" in str(info.value) and "did not become ready" in str(info.value)
    assert local_backend.deployments() == []
    standby = local_backend._standby
    mine = {p.pid for p in list(local_backend._processes)}
    alive = [p.pid for p in runtime_children() if p.pid in mine]
    assert alive == ([standby.pid] if standby else [])


def test_a_dead_process_is_restarted_and_reported_with_its_last_lines(local_backend: Any
                                                                     ) -> None:
    fn = make_function("def f(request):\n    print('about to die', flush=True)\n"
                       "    import os; os._exit(7)\n")
    handle = ofnotebook.deploy(fn, "dies", target=local_backend)
    with pytest.raises(InvocationError):
        handle.invoke(timeout=5)
    wait_for(lambda: handle.restarts == 1 and handle.status == "running", 20,
             lambda: f"not restarted: {handle.status}, logs:\n{handle.logs()}")
    assert "about to die" in handle.logs()
    assert "ofnotebook: process exited with code 7; restart #1 in 0.5 s" in handle.logs()
    assert "running (restarts 1)" in repr(handle) and "running (restarts 1)" in \
        handle._repr_html_()
    with pytest.raises(InvocationError):
        handle.invoke(timeout=5)  # dies again: the next restart waits twice as long
    wait_for(lambda: "restart #2" in (handle.deployment.failure or ""), 10,
             lambda: handle.status)
    with pytest.raises(InvocationError, match=r"is restarting: .*exited with code 7; "
                                              r"restart #2 in 1 s"):
        handle.invoke()
    assert "restarting (restarts 1)" in repr(handle) and "about to die" in repr(handle)


def test_a_killed_process_answers_again_on_the_same_url(local_backend: Any) -> None:
    handle = ofnotebook.deploy(make_function("def f(request):\n    return 'back'\n"),
                               "killed", target=local_backend)
    from ofnotebook.view import ViewState

    state = ViewState(handle.name, handle.runtime, handle.target)
    state.attach(handle)
    url, first = handle.url, _pid(handle)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: handle.restarts == 1 and handle.status == "running", 20,
             lambda: f"not restarted: {handle.status}, logs:\n{handle.logs()}")
    assert handle.url == url and _pid(handle) != first
    assert handle.invoke().text == "back"
    assert "process exited with code -9; restart #1 in 0.5 s" in handle.logs()
    state.set_status(handle.status, handle.url)  # what the view's flush does
    assert "running (restarts 1)" in state.header_html()
    assert "running (restarts 1)" in state.render_text()


def test_standby_process_is_kept_warm(local_backend: Any) -> None:
    first = ofnotebook.deploy(make_function("def f(request):\n    return 1\n"), "warm-a",
                              target=local_backend)
    wait_for(lambda: local_backend._standby is not None and local_backend._standby.port
             is not None, 20, "no standby process came up")
    standby_pid = local_backend._standby.pid
    second = ofnotebook.deploy(make_function("def f(request):\n    return 2\n"), "warm-b",
                               target=local_backend)
    assert _pid(second) == standby_pid and _pid(first) != standby_pid


_SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
import ofnotebook
def f(request):
    return "x"
h = ofnotebook.deploy(f, "orphan-check")
print(h.deployment.process.pid, flush=True)
{tail}
"""


def _pids_gone(pids: list[int]) -> bool:
    return not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                   for p in pids)


def _children_of(pid: int) -> list[int]:
    return [c.pid for c in psutil.Process(pid).children(recursive=True)]


def test_processes_stop_when_the_kernel_exits_normally(tmp_path: Path) -> None:
    script = tmp_path / "kernel.py"
    script.write_text(_SCRIPT.format(root=str(ROOT), tail="time.sleep(0.5)"))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OFNOTEBOOK_CACHE_DIR": str(tmp_path)})
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    children = _children_of(proc.pid)
    assert pid in children
    proc.communicate(timeout=30)
    wait_for(lambda: _pids_gone(children), 5, "runtime processes survived a normal exit",
             ignoring=(psutil.NoSuchProcess,))


def test_processes_stop_when_the_kernel_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "kernel.py"
    script.write_text(_SCRIPT.format(root=str(ROOT), tail="time.sleep(60)"))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OFNOTEBOOK_CACHE_DIR": str(tmp_path)})
    assert proc.stdout is not None
    int(proc.stdout.readline())
    time.sleep(0.3)  # let the standby process start too
    children = _children_of(proc.pid)
    proc.kill()  # SIGKILL: no atexit, no finalizers
    proc.communicate(timeout=10)
    wait_for(lambda: _pids_gone(children), 5,
             "runtime processes survived the kernel being killed",
             ignoring=(psutil.NoSuchProcess,))


def test_start_timeout_and_log_lines_are_read_again_at_each_deploy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ofnotebook.backends.local import LocalBackend

    backend = LocalBackend(standby=False)
    try:
        monkeypatch.setenv("OFNOTEBOOK_LOG_LINES", "7")
        monkeypatch.setenv("OFNOTEBOOK_START_TIMEOUT", "25")
        handle = ofnotebook.deploy(
            make_function("def f(request):\n    for i in range(30):\n        print('line', i)\n"
                          "    return 'ok'\n"), "reread", target=backend)
        assert backend.start_timeout == 25 and backend.log_lines == 7
        handle.invoke()
        wait_for(lambda: "line 29" in handle.logs(), 10, handle.logs)
        assert len(handle.deployment.logs()) == 7, handle.deployment.logs()
    finally:
        backend.close()
