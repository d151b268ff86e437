"""Crashed parts on the local target (issue 12 item 5): a runtime that dies is restarted with
backoff on the same URL, the stand-in holds an unreachable app's events instead of burning its
attempts, a deterministic failure (FAILED_PRECONDITION) is dead-lettered at once, and a port
held by someone else never passes for this deployment. Real processes, a real gRPC server, a
real Redis."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest
from dapr.proto.runtime.v1 import appcallback_pb2, appcallback_pb2_grpc

import ofnotebook
from ofnotebook.backends.local import LocalBackend
from ofnotebook.errors import DeployError, InvocationError
from ofnotebook.sidecar.apps import App, Endpoint
from ofnotebook.sidecar.delivery import Dispatcher
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


def _dispatcher(port: int, attempts: int) -> tuple[Dispatcher, EventLog]:
    app = App(app_id=f"app-{uid()}", port=port)
    endpoint = Endpoint(role=ROLE_INPUT, name="in",
                        component=ComponentConfig(name="in-binding", type="bindings.cron"))
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


def test_an_unreachable_app_holds_the_event_without_burning_attempts() -> None:
    port = free_port()  # nothing listens yet: the app is "restarting"
    dispatcher, log = _dispatcher(port, attempts=1)  # one burnt attempt would dead-letter
    acked = threading.Event()
    dispatcher(InboundEvent(b"held", _ack=acked.set))
    time.sleep(0.8)  # several tries meet a closed port meanwhile
    assert not _records(log, EVENT_DEAD_LETTER), _records(log, EVENT_DEAD_LETTER)
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
    dispatcher, log = _dispatcher(free_port(), attempts=1)
    acked = threading.Event()
    dispatcher(InboundEvent(b"left", _ack=acked.set))
    time.sleep(0.3)
    dispatcher.close()
    dispatcher._pool.shutdown(wait=True)  # the delivery thread has ended
    assert not acked.is_set(), "a broker must get it back (unacknowledged)"
    assert not _records(log, EVENT_DEAD_LETTER)
