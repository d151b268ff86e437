"""Crashed parts on the local target (issue 12 item 5): a runtime that dies is restarted with
backoff on the same URL, the stand-in holds an unreachable app's events instead of burning its
attempts, a deterministic failure (FAILED_PRECONDITION) is dead-lettered at once, and a port
held by someone else never passes for this deployment. Real processes, a real gRPC server, a
real Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from dapr.proto.runtime.v1 import appcallback_pb2, appcallback_pb2_grpc

import ofnotebook
from ofnotebook.backends.local import LocalBackend
from ofnotebook.backends.processes import RuntimeProcess, lost_its_port
from ofnotebook.backends.standin import StandIn
from ofnotebook.errors import DeployError, InvocationError
from ofnotebook.sidecar.apps import App, Endpoint
from ofnotebook.sidecar.delivery import (CLOSED_WHILE_UNREACHABLE, HOLD_MAX, NO_REDELIVERY,
                                         Dispatcher)
from ofnotebook.sidecar.drivers.base import ComponentConfig, InboundEvent
from ofnotebook.sidecar.eventlog import EventLog
from ofnotebook.sidecar.protocol import EVENT_DEAD_LETTER, EVENT_DELIVERED, ROLE_INPUT
from tests.helpers import free_port, make_function, runtime_children, uid, wait_for


# -- delivery against a tiny real AppCallback server -------------------------------------------

class _Callback(appcallback_pb2_grpc.AppCallbackServicer):
    """Answers OnBindingEvent as told: ``ok`` or abort with FAILED_PRECONDITION."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.calls: list[bytes] = []

    def OnBindingEvent(self, request: Any, context: Any) -> Any:
        self.calls.append(request.data)
        if self.answer == "precondition":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "ctx.send('nope'): 'nope' is not a declared output")
        return appcallback_pb2.BindingEventResponse()


def _serve(servicer: _Callback, port: int = 0) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    appcallback_pb2_grpc.add_AppCallbackServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, bound


def _dispatcher(port: int, attempts: int, kind: str = "bindings.redis"
                ) -> tuple[Dispatcher, EventLog]:
    """A dispatcher of one binding input of ``kind`` (a broker that redelivers by default)."""
    app = App(app_id=f"app-{uid()}", port=port)
    endpoint = Endpoint(role=ROLE_INPUT, name="in",
                        component=ComponentConfig(name="in-binding", type=kind))
    log = EventLog()
    return Dispatcher(app, endpoint, log, attempts), log


def _records(log: EventLog, kind: str) -> list[dict[str, Any]]:
    return [r for r in log.since(0, 0) if r["kind"] == kind]


def test_a_failed_precondition_is_dead_lettered_at_once_with_its_details() -> None:
    servicer = _Callback("precondition")
    server, port = _serve(servicer)
    dispatcher, log = _dispatcher(port, attempts=8)
    acked = threading.Event()
    try:
        dispatcher(InboundEvent(b"x", _ack=acked.set))
        wait_for(lambda: _records(log, EVENT_DEAD_LETTER), 10, "no dead letter")
    finally:
        dispatcher.close()
        server.stop(0)
    (dead,) = _records(log, EVENT_DEAD_LETTER)
    assert servicer.calls == [b"x"], "a deterministic failure must not be retried"
    assert dead["attempts"] == 1 and "'nope' is not a declared output" in dead["error"], dead
    assert acked.is_set()


def _refusing_port() -> tuple[socket.socket, int]:
    """A port bound but not listening: connections are refused, and no other process can
    take it until the socket is closed (just before the test binds it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, int(sock.getsockname()[1])


def test_an_unreachable_app_holds_the_event_without_burning_attempts() -> None:
    holder, port = _refusing_port()  # nothing listens yet: the app is "restarting"
    dispatcher, log = _dispatcher(port, attempts=1)  # one burnt attempt would dead-letter
    acked = threading.Event()
    dispatcher(InboundEvent(b"held", _ack=acked.set))
    time.sleep(0.8)  # several tries meet a closed port meanwhile
    assert not _records(log, EVENT_DEAD_LETTER), _records(log, EVENT_DEAD_LETTER)
    holder.close()
    servicer = _Callback("ok")
    server, _ = _serve(servicer, port)
    try:
        wait_for(acked.is_set, 10, lambda: f"not delivered once the app was back: "
                 f"{log.since(0, 0)}")
    finally:
        dispatcher.close()
        server.stop(0)
    (delivered,) = _records(log, EVENT_DELIVERED)
    assert delivered["attempt"] == 1 and servicer.calls == [b"held"]
    assert not _records(log, EVENT_DEAD_LETTER)


def test_an_event_held_when_the_input_closes_is_left_unacknowledged() -> None:
    holder, port = _refusing_port()
    dispatcher, log = _dispatcher(port, attempts=1)
    acked = threading.Event()
    try:
        dispatcher(InboundEvent(b"left", _ack=acked.set))
        time.sleep(0.3)
        dispatcher.close()
        dispatcher._pool.shutdown(wait=True)  # the delivery thread has ended
    finally:
        holder.close()
    assert not acked.is_set(), "a broker must get it back (unacknowledged)"
    assert not _records(log, EVENT_DEAD_LETTER)


@pytest.mark.parametrize("kind", sorted(NO_REDELIVERY))
def test_an_event_held_at_close_of_an_input_without_redelivery_is_a_dead_letter(
        kind: str) -> None:
    holder, port = _refusing_port()
    dispatcher, log = _dispatcher(port, attempts=8, kind=kind)
    try:
        dispatcher(InboundEvent(b"held", _ack=lambda: None))
        wait_for(lambda: _records(log, "in"), 10, "the event was not read")
        dispatcher.close()
        dispatcher._pool.shutdown(wait=True)
    finally:
        holder.close()
    (dead,) = _records(log, EVENT_DEAD_LETTER)
    assert CLOSED_WHILE_UNREACHABLE in dead["error"] and "Connection refused" in dead["error"]
    assert dead["attempts"] == 0, dead


def test_a_port_that_accepts_tcp_but_never_serves_grpc_is_tried_less_and_less() -> None:
    """Each hold's pause starts where the previous one of the event ended: a TCP-only probe
    that passes at once must not make a try every 50 ms."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[float] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(time.monotonic())
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    dispatcher, log = _dispatcher(server.getsockname()[1], attempts=1)
    try:
        dispatcher(InboundEvent(b"x", _ack=lambda: None))
        wait_for(lambda: len(accepted) >= 12, 30, lambda: f"{len(accepted)} connections")
    finally:
        dispatcher.close()
        server.close()
    assert not _records(log, EVENT_DEAD_LETTER), "never reached: no attempt burnt"
    gaps = [b - a for a, b in zip(accepted, accepted[1:])]
    # a probe and a gRPC try per hold; the pause doubles to HOLD_MAX, so late gaps are long
    assert max(gaps[-4:]) >= HOLD_MAX / 2, gaps


_POISONED_APP = """
import os, sys
from concurrent import futures
import grpc
from dapr.proto.runtime.v1 import appcallback_pb2, appcallback_pb2_grpc
class Callback(appcallback_pb2_grpc.AppCallbackServicer):
    def OnBindingEvent(self, request, context):
        if request.data == b"poison":
            os._exit(3)  # as a segfault or the OOM killer would
        return appcallback_pb2.BindingEventResponse()
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
appcallback_pb2_grpc.add_AppCallbackServicer_to_server(Callback(), server)
print(server.add_insecure_port("127.0.0.1:" + sys.argv[1]), flush=True)
server.start()
server.wait_for_termination()
"""


def test_an_event_that_kills_the_app_each_time_is_dead_lettered_after_its_attempts(
        local_backend: LocalBackend) -> None:
    """A handler that kills its process: the call reached the app, so each death is an
    attempt; the app restarted on its port (as the local target does) gets the next event.
    ``local_backend`` is not used: it puts the test in the process-starting tier."""
    app = subprocess.Popen([sys.executable, "-c", _POISONED_APP, "0"], stdout=subprocess.PIPE,
                           text=True)
    assert app.stdout is not None
    port = int(app.stdout.readline())
    app.stdout.close()
    deaths: list[int] = []
    done = threading.Event()

    def restart_each_death() -> None:
        nonlocal app
        while not done.is_set():
            deaths.append(app.wait())
            if not done.is_set():
                app = subprocess.Popen([sys.executable, "-c", _POISONED_APP, str(port)],
                                       stdout=subprocess.DEVNULL)

    threading.Thread(target=restart_each_death, daemon=True).start()
    dispatcher, log = _dispatcher(port, attempts=3)
    acked: list[bytes] = []
    try:
        dispatcher(InboundEvent(b"poison", _ack=lambda: acked.append(b"poison")))
        wait_for(lambda: _records(log, EVENT_DEAD_LETTER), 60,
                 lambda: f"never dead-lettered after {len(deaths)} deaths: {log.since(0, 0)}")
        dispatcher(InboundEvent(b"fine", _ack=lambda: acked.append(b"fine")))
        wait_for(lambda: _records(log, EVENT_DELIVERED), 30, lambda: f"{log.since(0, 0)}")
    finally:
        done.set()
        dispatcher.close()
        app.kill()
        app.wait()
    (dead,) = _records(log, EVENT_DEAD_LETTER)
    assert dead["attempts"] == 3 and "UNAVAILABLE" in dead["error"], dead
    assert deaths[:3] == [3, 3, 3] and acked == [b"poison", b"fine"]


# -- restarts of a runtime process -------------------------------------------------------------

def _mine(backend: LocalBackend, before: set[int]) -> list[int]:
    """Runtime processes alive now that were not before, the standby aside."""
    standby = backend._standby.pid if backend._standby is not None else None
    return [p.pid for p in runtime_children() if p.pid not in before and p.pid != standby]


#: A global whose unpickling runs ``action`` once ``marker`` exists: a function using it loads
#: in the first process and misbehaves in every restart after the test touches the marker.
_GUARD = """
import os, time
def check():
    if os.path.exists({marker!r}):
        {action}
    return "ok"
class Guard:
    def __reduce__(self):
        return (check, ())
GUARD = Guard()
"""
_FAILS = 'raise RuntimeError("the marker is there: this start fails")'


def _guarded(marker: Path, action: str) -> dict[str, Any]:
    """A namespace holding ``GUARD`` (:data:`_GUARD`), for ``make_function``."""
    ns: dict[str, Any] = {"__name__": "__main__"}
    make_function(_GUARD.format(marker=str(marker), action=action), ns, "check")
    return ns


def test_a_function_that_crashes_on_every_start_backs_off_and_stop_ends_it(
        local_backend: LocalBackend, tmp_path: Path) -> None:
    marker = tmp_path / "broken"
    ns = _guarded(marker, _FAILS)
    before = {p.pid for p in runtime_children()}
    handle = ofnotebook.deploy(make_function("def f(request):\n    return str(GUARD)\n", ns),
                               f"crashloop-{uid()}", target=local_backend)
    assert handle.invoke().text == "ok" and handle.restarts == 0
    marker.touch()  # from now on every start fails while loading the payload
    os.kill(handle.deployment.process.pid, signal.SIGKILL)
    wait_for(lambda: "restart #4 in 4 s" in handle.logs(), 30, lambda: handle.logs())
    logs = handle.logs()
    for due in ("restart #1 in 0.5 s", "restart #2 in 1 s", "restart #3 in 2 s"):
        assert f"; {due}" in logs, logs  # each wait twice the one before
    assert "the marker is there: this start fails" in logs
    assert handle.restarts == 3 and handle.status == "restarting"
    assert "restarting (restarts 3)" in repr(handle)
    with pytest.raises(InvocationError, match="is restarting"):
        handle.invoke()
    handle.stop()
    assert handle.status == "stopped"
    wait_for(lambda: not _mine(local_backend, before), 10,
             lambda: f"left running: {_mine(local_backend, before)}")
    wait_for(lambda: not [t for t in threading.enumerate()
                          if t.name == f"ofnotebook-supervise-{handle.name}"], 10,
             "the supervisor outlived stop()")
    assert handle.restarts == 3


def test_a_replaced_deployment_is_not_restarted(local_backend: LocalBackend) -> None:
    name = f"replaced-{uid()}"
    old = ofnotebook.deploy(make_function("def f(request):\n    return 1\n"), name,
                            target=local_backend)
    old_deployment = old.deployment
    old_process = old_deployment.process
    new = ofnotebook.deploy(make_function("def f(request):\n    return 2\n"), name,
                            target=local_backend)
    assert old_process.exited.wait(10)
    time.sleep(1.0)  # twice the first restart's delay
    assert old_deployment.status == "stopped" and old_deployment.restarts == 0
    assert old_deployment.process is old_process
    assert new.invoke().json() == 2 and new.restarts == 0


# -- every event arrives when the runtime is killed mid-stream ---------------------------------

SLOW_RECORDER = """
import time
def record(ctx, data):
    time.sleep(0.02)
    ctx.send("seen", data["i"])
"""
EVENTS = 400


def _recorder(backend: LocalBackend, prefix: str, input_uri: str) -> Any:
    """SLOW_RECORDER deployed with input ``events`` from ``input_uri``, output ``seen``."""
    return ofnotebook.deploy(make_function(SLOW_RECORDER, name="record"), f"{prefix}-{uid()}",
                             target=backend, inputs={"events": input_uri},
                             outputs={"seen": f"memory://{prefix}-out-{uid()}"})


def _killed_mid_stream(handle: Any) -> None:
    """Publish EVENTS events from a thread, kill the runtime once about 100 are delivered,
    then expect every one of them, no dead letter and one restart."""
    publisher = threading.Thread(
        target=lambda: [handle.publish("events", {"i": i}) for i in range(EVENTS)],
        daemon=True)
    publisher.start()
    wait_for(lambda: handle.stats["delivered"] >= 100, 60, lambda: f"{handle.stats}")
    os.kill(handle.deployment.process.pid, signal.SIGKILL)
    publisher.join(60)

    def seen() -> set[int]:
        return {o.data for o in handle.outputs}

    wait_for(lambda: len(seen()) >= EVENTS, 90,
             lambda: f"missing {sorted(set(range(EVENTS)) - seen())[:20]}, stats "
                     f"{handle.stats}, logs:\n{handle.logs(tail=10)}")
    assert seen() == set(range(EVENTS))
    assert handle.stats["dead_letters"] == 0 and not handle.dead_letters
    assert handle.restarts == 1 and handle.status == "running"
    assert "process exited with code -9; restart #1" in handle.logs()


@pytest.mark.broker  # Redis
def test_every_redis_event_arrives_when_the_runtime_is_killed_mid_stream(
        local_backend: LocalBackend) -> None:
    stream = f"ofn-fault-{uid()}"
    _killed_mid_stream(_recorder(local_backend, "fault-redis",
                                 f"redis://127.0.0.1:6379/{stream}"))


def test_every_memory_event_arrives_when_the_runtime_is_killed_mid_stream(
        local_backend: LocalBackend) -> None:
    _killed_mid_stream(_recorder(local_backend, "fault-memory", f"memory://fault-in-{uid()}"))


# -- nothing outlives the kernel, a restarted process neither ----------------------------------

_KERNEL = """
import os, signal, sys, time
sys.path.insert(0, {root!r})
import ofnotebook
def f(request):
    return "x"
h = ofnotebook.deploy(f, "restarted-orphan-check")
first = h.deployment.process.pid
os.kill(first, signal.SIGKILL)
while h.restarts < 1 or h.status != "running":
    time.sleep(0.02)
print(h.deployment.process.pid, flush=True)
time.sleep(60)
"""


def test_a_restarted_process_stops_when_the_kernel_is_killed(
        local_backend: LocalBackend, tmp_path: Path) -> None:
    """``local_backend`` is not used: it puts the test in the process-starting tier."""
    script = tmp_path / "kernel.py"
    script.write_text(_KERNEL.format(root=str(Path(__file__).resolve().parents[2])))
    kernel = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "OFNOTEBOOK_CACHE_DIR": str(tmp_path)})
    try:
        assert kernel.stdout is not None
        restarted = int(kernel.stdout.readline())
        children = [c.pid for c in psutil.Process(kernel.pid).children(recursive=True)]
        assert restarted in children
    finally:
        kernel.kill()  # SIGKILL: no atexit, no finalizers; the parent-pid watch must act
        kernel.communicate(timeout=10)

    def gone() -> bool:
        return not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                       for p in children)

    wait_for(gone, 10, "the restarted runtime survived its kernel",
             ignoring=(psutil.NoSuchProcess,))


def test_a_restart_whose_port_was_taken_moves_and_registers_again(
        local_backend: LocalBackend) -> None:
    handle = _recorder(local_backend, "moved", f"memory://moved-in-{uid()}")
    old_port = handle.deployment.port
    process = handle.deployment.process
    os.kill(process.pid, signal.SIGKILL)
    assert process.exited.wait(10)
    with socket.create_server(("127.0.0.1", old_port)):  # someone takes the port meanwhile
        for i in range(20):
            handle.publish("events", {"i": i})
        wait_for(lambda: handle.status == "running" and handle.deployment.port != old_port, 30,
                 lambda: f"{handle.status}, logs:\n{handle.logs(tail=10)}")
        assert handle.url == f"grpc://127.0.0.1:{handle.deployment.port}"
        assert handle.restarts == 2, handle.logs()  # the first restart found its port taken
        assert f"port {old_port} is held by another program" in handle.logs()
        wait_for(lambda: {o.data for o in handle.outputs} >= set(range(20)), 30,
                 lambda: f"{handle.stats}")
    assert handle.stats["dead_letters"] == 0


@pytest.mark.broker  # Redis
def test_a_cell_re_run_while_its_runtime_restarts_loses_no_redis_event(
        local_backend: LocalBackend) -> None:
    """The issue's scenario: an async function on a Redis Streams input, kill -9 its runtime,
    re-run the cell (the same function, redeployed) while it is 'restarting'."""
    stream = f"ofn-rerun-{uid()}"
    name, out = f"rerun-{uid()}", f"memory://rerun-out-{uid()}"

    def deploy() -> Any:
        return ofnotebook.deploy(make_function(SLOW_RECORDER, name="record"), name,
                                 target=local_backend,
                                 inputs={"events": f"redis://127.0.0.1:6379/{stream}"},
                                 outputs={"seen": out})

    first = deploy()
    publisher = threading.Thread(
        target=lambda: [first.publish("events", {"i": i}) for i in range(EVENTS)], daemon=True)
    publisher.start()
    wait_for(lambda: first.stats["delivered"] >= 100, 60, lambda: f"{first.stats}")
    os.kill(first.deployment.process.pid, signal.SIGKILL)
    wait_for(lambda: first.status == "restarting", 10, lambda: first.status)
    second = deploy()  # the re-run, while the restart is due or starting
    publisher.join(60)

    def seen() -> set[int]:
        return {o.data for o in second.outputs} | {o.data for o in first.outputs}

    wait_for(lambda: len(seen()) >= EVENTS, 90,
             lambda: f"missing {sorted(set(range(EVENTS)) - seen())[:20]}, stats "
                     f"{second.stats}, logs:\n{second.logs(tail=10)}")
    assert seen() == set(range(EVENTS))
    assert second.stats["dead_letters"] == 0 and not second.dead_letters
    assert second.status == "running" and first.status == "stopped"


def test_a_restart_keeps_the_exit_it_follows_in_the_failure_message(
        local_backend: LocalBackend, tmp_path: Path) -> None:
    marker = tmp_path / "slow"
    ns = _guarded(marker, "time.sleep(3)")  # a restart that takes a while to load its payload
    handle = ofnotebook.deploy(make_function("def f(request):\n    return str(GUARD)\n", ns),
                               f"slowstart-{uid()}", target=local_backend)
    first = handle.deployment.process.pid
    marker.touch()
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: handle.deployment.process.pid != first, 20, lambda: handle.logs())
    failure = handle.deployment.failure  # the new process loads its payload meanwhile
    assert handle.status == "restarting", handle.status
    assert failure is not None and f"(pid {first}) exited with code -9" in failure, failure
    assert "restart #1 starting" in failure and "code None" not in failure, failure
    wait_for(lambda: handle.status == "running", 30, lambda: handle.logs())
    assert handle.deployment.failure is None and handle.invoke().text == "ok"


def test_a_bad_setting_during_a_restart_keeps_the_last_good_one(
        local_backend: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    handle = ofnotebook.deploy(make_function("def f(request):\n    return 'up'\n"),
                               f"badsetting-{uid()}", target=local_backend)
    monkeypatch.setenv("OFNOTEBOOK_LOG_LINES", "-5")
    os.kill(handle.deployment.process.pid, signal.SIGKILL)
    wait_for(lambda: handle.restarts == 1 and handle.status == "running", 30,
             lambda: f"{handle.status}: {handle.logs()}")
    assert "keeps the settings it had" in handle.logs() and "OFNOTEBOOK_LOG_LINES" in \
        handle.logs(), handle.logs()
    assert handle.invoke().text == "up"
    os.kill(handle.deployment.process.pid, signal.SIGKILL)  # the supervisor still watches
    wait_for(lambda: handle.restarts == 2 and handle.status == "running", 30,
             lambda: f"{handle.status}: {handle.logs()}")


def test_a_port_error_in_an_earlier_process_s_log_is_not_this_one_s(
        local_backend: LocalBackend) -> None:
    """``lost_its_port`` asks the process, not the log it shares with earlier processes."""
    process = RuntimeProcess(log_lines=50)
    try:
        process.wait_standby(30)
        process.log_buffer.append("OSError: [Errno 98] Address already in use")  # adopted
    finally:
        process.stop()
    assert process.exited.is_set() and not lost_its_port(process)


_EXITING_KERNEL = """
import os, signal, sys, threading, time
sys.path.insert(0, {root!r})
import ofnotebook
from ofnotebook.backends import processes
ns = {{"__name__": "__main__"}}
exec({guard!r}, ns)
exec("def f(request):\\n    return str(GUARD)\\n", ns)
h = ofnotebook.deploy(ns["f"], "exiting-check")
open({marker!r}, "w").close()
os.kill(h.deployment.process.pid, signal.SIGKILL)
while "restart #2 in 1 s" not in h.logs():
    time.sleep(0.02)
processes.stop_all_processes()  # what atexit runs: the kernel exits
deadline = time.monotonic() + 10
def supervising():
    return [t for t in threading.enumerate() if t.name.startswith("ofnotebook-supervise-")]
while supervising() and time.monotonic() < deadline:
    time.sleep(0.05)
print("alive" if supervising() else "ended", h.logs().count("kernel is exiting"), flush=True)
"""


def test_no_restart_is_tried_once_the_kernel_exits(
        local_backend: LocalBackend, tmp_path: Path) -> None:
    """``local_backend`` is not used: it puts the test in the process-starting tier."""
    script = tmp_path / "kernel.py"
    marker = str(tmp_path / "broken")
    script.write_text(_EXITING_KERNEL.format(root=str(Path(__file__).resolve().parents[2]),
                                             marker=marker,
                                             guard=_GUARD.format(marker=marker, action=_FAILS)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "OFNOTEBOOK_CACHE_DIR": str(tmp_path)})
    assert done.stdout.split() == ["ended", "0"], done.stdout + done.stderr


def test_a_restart_that_cannot_register_again_still_serves(
        local_backend: LocalBackend) -> None:
    """The process moved ports and its stand-in is gone: 'running' with a log line, not
    'restarting' forever while the process serves."""
    handle = ofnotebook.deploy(make_function("def f(request):\n    return 'moved'\n"),
                               f"unlisted-{uid()}", target=local_backend)
    own = StandIn()  # this test's own, so stopping it touches no other test
    local_backend._list(handle.deployment, own)
    assert handle.deployment.listed_in is own
    own.close()
    old_port = handle.deployment.port
    process = handle.deployment.process
    os.kill(process.pid, signal.SIGKILL)
    assert process.exited.wait(10)
    with socket.create_server(("127.0.0.1", old_port)):  # the port is taken: the restart moves
        wait_for(lambda: handle.status == "running" and handle.deployment.port != old_port, 60,
                 lambda: f"{handle.status}, logs:\n{handle.logs(tail=10)}")
    assert "not registered again with the stand-in" in handle.logs(), handle.logs()
    assert handle.invoke().text == "moved" and handle.url.endswith(f":{handle.deployment.port}/")
