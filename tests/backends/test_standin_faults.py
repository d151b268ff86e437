"""A stand-in that dies mid-stream (issue 12 item 6), through deployed functions: the kernel
starts it again on the same ports, registers every app again and follows its events anew.
With Redis Streams (a broker that keeps messages) nothing is lost; with the in-memory bus the
events it held are counted as lost. Dead letters and stats belong to the deployment name, so a
cell re-run shows them (item 5). Real runtime processes, the real stand-in process, a real
Redis on 127.0.0.1:6379."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import ofnotebook
from ofnotebook.backends.standin import StandIn
from tests.helpers import make_function, uid, wait_for

#: Appends each event's ``i`` to PATH (and sends it to the output ``seen``, if declared); an
#: event with ``block`` is still being handled (3 s) when the stand-in dies.
RECORDER = """
def record(ctx, data):
    import time
    time.sleep(3 if data.get("block") else PAUSE)
    if SEND:
        ctx.send("seen", data["i"])
    with open(PATH, "a") as out:
        out.write(f"{data['i']}\\n")
"""


def _recorder(local_backend: Any, path: Path, uri: str, pause: float = 0.01,
              send: bool = False) -> Any:
    function = make_function(RECORDER, {"PATH": str(path), "PAUSE": pause, "SEND": send},
                             name="record")
    outputs = {"seen": f"memory://seen-{uid()}"} if send else {}
    return ofnotebook.deploy(function, f"record-{uid()}", target=local_backend,
                             inputs={"events": uri}, outputs=outputs)


def _seen(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _kill(standin: StandIn) -> int:
    """SIGKILL the stand-in process; returns its restart count before."""
    restarts, proc = standin.restarts, standin.proc
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)
    return restarts


def test_standin_killed_mid_stream_on_redis_streams_loses_nothing(local_backend: Any,
                                                                   tmp_path: Path) -> None:
    path = tmp_path / "seen"
    handle = _recorder(local_backend, path, f"redis://127.0.0.1:6379/ofn-kill-{uid()}",
                       pause=0.02, send=True)
    standin = handle.deployment.standin
    ports = (standin.http_port, standin.grpc_port)
    for i in range(60):
        handle.publish("events", {"i": i})
    wait_for(lambda: len(_seen(path)) >= 10, 30, lambda: f"seen {_seen(path)}")
    before = _kill(standin)
    # Published while the stand-in restarts: each call waits for it, none fails.
    for i in range(60, 100):
        handle.publish("events", {"i": i})
    wait_for(lambda: set(_seen(path)) >= set(range(100)), 60,
             lambda: f"missing {sorted(set(range(100)) - set(_seen(path)))}; "
                     f"stand-in: {standin.logs[-5:]}")
    assert set(_seen(path)) == set(range(100))  # duplicates allowed: at least once
    # The function reconnected to the new process on its own: its outputs after the restart
    # reached it (sent through the same DAPR_GRPC_PORT).
    tracker = handle.deployment.events
    wait_for(lambda: {o.data for o in tracker.outputs} >= set(range(60, 100)), 30,
             lambda: f"outputs {sorted({o.data for o in tracker.outputs})}")
    assert standin.restarts == before + 1 and (standin.http_port, standin.grpc_port) == ports
    assert tracker.lost == 0 and tracker.standin_restarts == 1
    assert handle.status == "running" and handle.stats["dead_letters"] == 0


def test_standin_killed_with_the_in_memory_bus_reports_the_lost_events(
        local_backend: Any, tmp_path: Path) -> None:
    path = tmp_path / "seen"
    handle = _recorder(local_backend, path, f"memory://kill-{uid()}")
    standin, tracker = handle.deployment.standin, handle.deployment.events
    for i in range(4):
        handle.publish("events", {"i": i})
    wait_for(lambda: handle.stats["delivered"] == 4, 20, lambda: str(handle.stats))
    # Five events held at the death: four in flight (a bulk input keeps 4 calls) and one
    # waiting for a call slot, which counts too (it was recorded in when it arrived).
    for i in range(4, 9):
        handle.publish("events", {"i": i, "block": True})
    wait_for(lambda: handle.stats["events_in"] == 9, 20, lambda: str(handle.stats))
    before = _kill(standin)
    wait_for(lambda: tracker.standin_restarts == 1, 10, "the tracker heard of no restart")
    assert tracker.lost == 5 == 9 - handle.stats["delivered"]
    wait_for(lambda: standin.restarts == before + 1, 30, lambda: "\n".join(standin.logs[-5:]))
    # The input was registered again: new events arrive; the lost ones stay counted once.
    for i in range(9, 12):
        handle.publish("events", {"i": i})
    wait_for(lambda: handle.stats["delivered"] == 7, 30, lambda: str(handle.stats))
    assert tracker.lost == 5 and {9, 10, 11} <= set(_seen(path))
    assert "5 in-memory event(s) it held were lost" in handle.logs()
    assert handle.status == "running"


FAILING = """
def handle(ctx, data):
    raise ValueError(f"cannot handle {data!r}")
"""
FIXED = """
def handle(ctx, data):
    return None
"""


def test_a_cell_rerun_keeps_the_dead_letters_and_stats_of_the_name(local_backend: Any) -> None:
    name, uri = f"rerun-{uid()}", f"memory://rerun-{uid()}"
    first = ofnotebook.deploy(make_function(FAILING, name="handle"), name, target=local_backend,
                              inputs={"events": uri})
    first.publish("events", {"n": 1})
    wait_for(lambda: first.stats["dead_letters"] == 1, 60, lambda: str(first.stats))
    # The cell is edited and run again: a new deployment of the same name.
    second = ofnotebook.deploy(make_function(FIXED, name="handle"), name, target=local_backend,
                               inputs={"events": uri})
    assert second.deployment is not first.deployment
    assert second.stats["dead_letters"] == 1 and second.stats["events_in"] == 1
    assert second.dead_letters[0]["data"] == {"n": 1}
    second.publish("events", {"n": 2})
    wait_for(lambda: second.stats["delivered"] == 1, 20, lambda: str(second.stats))
    assert second.stats["events_in"] == 2 and second.stats["dead_letters"] == 1
