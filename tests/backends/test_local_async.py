"""Async functions and Dapr outputs on the local target: real runtime processes, the real
stand-in process, real brokers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

import ofnotebook
from ofnotebook.errors import ConfigError, DeployError, InvocationError, RemoteFunctionError
from tests.helpers import make_function, uid, wait_for


ALERTS = """
def handle(ctx, data):
    if "404" in data["message"]:
        ctx.send("notify", {"alert": data})
"""


def test_memory_input_to_memory_output(local_backend: Any) -> None:
    topic = f"logs-{uid()}"
    handle = ofnotebook.deploy(make_function(ALERTS, name="handle"), "alerts",
                               target=local_backend, inputs={"logs": f"memory://{topic}"},
                               outputs={"notify": f"memory://alerts-{topic}"})
    assert handle.runtime == "async" and handle.url.startswith("grpc://127.0.0.1:")
    handle.publish("logs", {"message": "GET /wp-login 404"})
    handle.publish("logs", {"message": "GET / 200"})
    outputs = handle.wait_for_outputs(1, timeout=10)
    assert outputs[0].name == "notify"
    assert outputs[0].data == {"alert": {"message": "GET /wp-login 404"}}
    wait_for(lambda: handle.stats["delivered"] >= 2, 5, lambda: f"stats: {handle.stats}")
    assert handle.stats == {"events_in": 2, "delivered": 2, "events_out": 1, "retries": 0,
                            "dead_letters": 0, "errors": 0}
    with pytest.raises(InvocationError, match="asynchronous"):
        handle.invoke()


def test_one_functions_output_triggers_another(local_backend: Any) -> None:
    topic = f"chain-{uid()}"
    first = ofnotebook.deploy(
        make_function("def f(ctx, data):\n    ctx.send('out', {'n': data['n'] + 1})\n"),
        "first", target=local_backend, inputs={"in": f"memory://{topic}-a"},
        outputs={"out": f"memory://{topic}-b"})
    second = ofnotebook.deploy(
        make_function("def g(ctx, data):\n    ctx.send('done', data['n'] * 10)\n", name="g"),
        "second", target=local_backend, inputs={"in": f"memory://{topic}-b"},
        outputs={"done": f"memory://{topic}-c"})
    first.publish("in", {"n": 1})
    assert second.wait_for_outputs(1, timeout=10)[0].data == 20


def test_openfunction_style_context(local_backend: Any) -> None:
    source = """
def handler(context):
    event = context.get_topic_event()
    context.send("echo", {"id": event.EventID(), "source": event.Source(),
                          "data": json.loads(event.Data())})
"""
    fn = make_function(source, {"__name__": "__main__", "json": json}, name="handler")
    handle = ofnotebook.deploy(fn, "of-style", target=local_backend,
                               inputs={"events": f"memory://of-{uid()}"},
                               outputs={"echo": f"memory://of-out-{uid()}"})
    handle.publish("events", {"k": "v"})
    got = handle.wait_for_outputs(1, timeout=10)[0].data
    assert got["source"] == "ofnotebook" and got["data"] == {"k": "v"} and len(got["id"]) > 10


def test_cron_input(local_backend: Any) -> None:
    fn = make_function("def tick(ctx, data):\n"
                       "    ctx.send('ticks', ctx.get_binding_request().binding_metadata)\n",
                       name="tick")
    handle = ofnotebook.deploy(fn, "ticker", target=local_backend,
                               inputs={"every": "cron://@every 200ms"},
                               outputs={"ticks": f"memory://ticks-{uid()}"})
    outputs = handle.wait_for_outputs(3, timeout=10)
    assert outputs[0].data["timeZone"] == "UTC" and outputs[0].data["readTimeUTC"].endswith("UTC")


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[Any]]]:
    """A notification receiver, like the one the log-alerting notebook starts."""
    received: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, json.loads(body)))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/v2/alerts", received
    server.shutdown()
    server.server_close()


def test_http_output_reaches_a_real_receiver(local_backend: Any,
                                             receiver: tuple[str, list[Any]]) -> None:
    url, received = receiver
    handle = ofnotebook.deploy(make_function(ALERTS, name="handle"), "to-http",
                               target=local_backend, inputs={"logs": f"memory://h-{uid()}"},
                               outputs={"notify": url})
    handle.publish("logs", {"message": "GET /x 404"})
    handle.wait_for_outputs(1, timeout=10)
    wait_for(lambda: received, 5, "the HTTP output received nothing")
    assert received == [("/api/v2/alerts", {"alert": {"message": "GET /x 404"}})]


def test_sync_function_with_an_output(local_backend: Any) -> None:
    fn = make_function("def f(ctx, data):\n    ctx.send('audit', data)\n    return 'sent'\n")
    handle = ofnotebook.deploy(fn, "sync-out", target=local_backend,
                               outputs={"audit": f"memory://audit-{uid()}"})
    assert handle.runtime == "sync"
    assert handle.invoke(json={"who": "ada"}).text == "sent"
    assert handle.wait_for_outputs(1, timeout=10)[0].data == {"who": "ada"}
    assert any(e.distribution == "dapr" for e in handle.capture.lock)


def test_unknown_output_name_is_one_clear_error(local_backend: Any) -> None:
    fn = make_function("def f(ctx, data):\n    ctx.send('nope', data)\n")
    handle = ofnotebook.deploy(fn, "bad-out", target=local_backend,
                               outputs={"audit": f"memory://a-{uid()}"})
    with pytest.raises(RemoteFunctionError) as info:
        handle.invoke(json={})
    assert info.value.ename == "SendError"
    assert "output 'nope' is not declared" in info.value.evalue and "audit" in info.value.evalue


def test_failing_function_is_retried_then_dead_lettered(local_backend: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    fn = make_function("def f(ctx, data):\n    raise ValueError('cannot handle ' + str(data))\n")
    handle = ofnotebook.deploy(fn, "always-fails", target=local_backend,
                               inputs={"in": f"memory://fail-{uid()}"})
    handle.publish("in", "poison")
    wait_for(lambda: handle.dead_letters, 20, lambda: f"no dead letter; stats: {handle.stats}")
    letter = handle.dead_letters[0]
    assert letter["data"] == "poison" and letter["attempts"] == 8
    assert handle.stats["retries"] == 8
    assert "cannot handle poison" in handle.logs()


def test_state_store(local_backend: Any) -> None:
    fn = make_function("def count(ctx, data):\n"
                       "    n = (ctx.get_state('counts', data['who']) or 0) + 1\n"
                       "    ctx.save_state('counts', data['who'], n)\n"
                       "    return n\n", name="count")
    handle = ofnotebook.deploy(fn, "counter", target=local_backend,
                               states={"counts": f"memory://?bus=s-{uid()}"})
    assert [handle.invoke(json={"who": "ada"}).json() for _ in range(3)] == [1, 2, 3]
    assert handle.get_state("ada") == 3
    assert handle.get_state("nobody") is None


@pytest.mark.parametrize("uri, message", [
    ("ftp://x/y", "unknown scheme 'ftp'"),
    ("kafka://127.0.0.1:9092", "the path must name the topic"),
    ("http://127.0.0.1/x", "an HTTP URL can only be an output"),
    ("notaurl", "no scheme"),
])
def test_bad_component_uri(local_backend: Any, uri: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ofnotebook.deploy(make_function(ALERTS, name="handle"), "bad-uri",
                          target=local_backend, inputs={"logs": uri})
    assert local_backend.deployments() == []


def test_unreachable_broker_fails_cleanly(local_backend: Any) -> None:
    from tests.helpers import free_port

    port = free_port()
    with pytest.raises(DeployError) as info:
        ofnotebook.deploy(make_function(ALERTS, name="handle"), "no-broker",
                          target=local_backend, inputs={"logs": f"redis://127.0.0.1:{port}/logs"})
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    # the component failed, named with its type and the driver's reason and fix; the process
    # was ready, so no "did not become ready (exit code None)"
    assert message.startswith("Function 'no-broker' was not deployed to the local target: "
                              "input 'logs' (pubsub.redis, Dapr component '"), message
    assert "failed to start: cannot reach Redis at" in message and "Start Redis" in message
    assert "exit code" not in message and "did not become ready" not in message
    assert local_backend.deployments() == []
    from ofnotebook.backends.standin import get_standin

    assert "no-broker" not in get_standin().stats()["apps"]


REDIS_RECORDER = """
def record(ctx, data):
    ctx.send("seen", data["i"])
"""


@pytest.mark.broker  # Redis
def test_redis_streams_in_and_out(local_backend: Any) -> None:
    stream = f"ofn-test-{uid()}"
    handle = ofnotebook.deploy(make_function(REDIS_RECORDER, name="record"), "redis-rec",
                               target=local_backend,
                               inputs={"events": f"redis://127.0.0.1:6379/{stream}"},
                               outputs={"seen": f"redis://127.0.0.1:6379/{stream}-out"})
    for i in range(20):
        handle.publish("events", {"i": i})
    outputs = handle.wait_for_outputs(20, timeout=20)
    assert sorted(o.data for o in outputs) == list(range(20))


@pytest.mark.broker  # Redis
def test_every_event_arrives_when_the_function_process_is_killed(local_backend: Any) -> None:
    """Killed, then the cell re-run at once (while the restart is due): the re-run replaces
    the restarting deployment under the same app id. It once lost 1 of 60 under load: the
    events in flight met a dead port on each of their 8 attempts (7 s of backoff) while the
    re-run took longer, and were dead-lettered; an unreachable app now burns no attempt."""
    stream = f"ofn-kill-{uid()}"
    fn = make_function("import time\ndef record(ctx, data):\n    time.sleep(0.01)\n"
                       "    ctx.send('seen', data['i'])\n", name="record")
    kwargs = dict(target=local_backend, inputs={"events": f"redis://127.0.0.1:6379/{stream}"},
                  outputs={"seen": f"memory://kill-{uid()}"})
    handle = ofnotebook.deploy(fn, "killed-mid-stream", **kwargs)
    for i in range(60):
        handle.publish("events", {"i": i})
    handle.wait_for_outputs(5, timeout=20)
    os.kill(handle.deployment.process.pid, signal.SIGKILL)
    handle.deployment.process.exited.wait(5)
    assert handle.status in ("restarting", "running")  # never "failed": it comes back
    back = ofnotebook.deploy(fn, "killed-mid-stream", **kwargs)  # same app id

    def seen() -> set[int]:
        return {o.data for o in handle.outputs} | {o.data for o in back.outputs}

    wait_for(lambda: len(seen()) >= 60, 30,
             lambda: f"missing: {sorted(set(range(60)) - seen())}")
    assert seen() == set(range(60)), f"missing: {sorted(set(range(60)) - seen())}"
    assert not back.dead_letters and not handle.dead_letters
    assert back.status == "running"


REDIS_START = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port",
               "6379", "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
               "--logfile", "/var/log/redis/ci.log"]


def _redis_up() -> bool:
    import redis

    try:
        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.mark.broker  # Redis
def test_stand_in_reconnects_after_redis_restarts(local_backend: Any) -> None:
    stream = f"ofn-restart-{uid()}"
    handle = ofnotebook.deploy(make_function(REDIS_RECORDER, name="record"), "redis-restart",
                               target=local_backend,
                               inputs={"events": f"redis://127.0.0.1:6379/{stream}"},
                               outputs={"seen": f"memory://restart-{uid()}"})
    for i in range(10):
        handle.publish("events", {"i": i})
    handle.wait_for_outputs(10, timeout=20)
    subprocess.run(["redis-cli", "-p", "6379", "shutdown", "nosave"], check=False,
                   capture_output=True)
    try:
        wait_for(lambda: not _redis_up(), 10, "redis-cli shutdown left Redis running")
        time.sleep(0.5)  # the stand-in's consumer sees the connection drop
    finally:
        subprocess.run(REDIS_START, check=True, capture_output=True)
        wait_for(_redis_up, 10, f"Redis did not come back after: {REDIS_START}")
    for i in range(10, 20):
        handle.publish("events", {"i": i})
    outputs = handle.wait_for_outputs(20, timeout=30)
    assert sorted({o.data for o in outputs}) == list(range(20))
