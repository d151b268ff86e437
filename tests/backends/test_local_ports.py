"""Ports on the local target: a port another process holds must fail the deploy with the
cause and the fix, naming the function that holds it when it is one, and leave nothing
running. gRPC binds an async runtime's port after the standby process releases it; a sync
runtime's health probe must answer with this deployment's nonce, so whatever else answers on
the port never passes for it."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import ofnotebook
from ofnotebook.backends.local import LocalBackend
from ofnotebook.errors import ConfigError, DeployError
from tests.helpers import free_port, make_function, runtime_children, uid, wait_for


def test_an_async_function_on_a_taken_port_names_the_bind_failure(local_backend: object
                                                                  ) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(DeployError) as failed:
            ofnotebook.deploy(make_function("def f(ctx, data):\n    return data\n"),
                              f"taken-{uid()}", target=local_backend,  # type: ignore[arg-type]
                              inputs={"in": f"memory://{uid()}"}, port=port)
    message = str(failed.value).lower()
    assert "did not become ready" in message and "bind" in message, message
    assert not [p for p in runtime_children() if str(port) in " ".join(p.cmdline())]


# -- the health probe must reach THIS deployment -----------------------------------------------

class _Impostor(BaseHTTPRequestHandler):
    """Any server on the port, answering 200 to every path, the health probe's too."""

    def do_GET(self) -> None:
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _runtime_pids() -> set[int]:
    return {p.pid for p in runtime_children()}


def _left(backend: LocalBackend, before: set[int]) -> set[int]:
    standby = backend._standby.pid if backend._standby is not None else None
    return _runtime_pids() - before - {standby}


def test_a_server_answering_the_probe_on_the_port_does_not_pass(local_backend: LocalBackend
                                                               ) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Impostor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    before = _runtime_pids()
    try:
        with pytest.raises(DeployError) as failed:
            ofnotebook.deploy(make_function("def f(request):\n    return 1\n"),
                              f"impostor-{uid()}", target=local_backend, port=port)
    finally:
        server.shutdown()
        server.server_close()
    message = str(failed.value)
    assert f"port {port} is held by another program" in message, message
    assert "pick another --port" in message, message
    assert local_backend.deployments() == []
    wait_for(lambda: not _left(local_backend, before), 10,
             lambda: f"{_left(local_backend, before)}")


def test_a_port_of_another_function_of_this_kernel_is_refused_naming_it(
        local_backend: LocalBackend) -> None:
    port = free_port()
    owner = ofnotebook.deploy(make_function("def f(request):\n    return 'owner'\n"),
                              f"owner-{uid()}", target=local_backend, port=port)
    before = _runtime_pids()
    for runtime in ("sync", "async"):
        kwargs: dict[str, Any] = ({"inputs": {"in": f"memory://{uid()}"}}
                                  if runtime == "async" else {})
        with pytest.raises(DeployError) as failed:
            ofnotebook.deploy(make_function("def f(ctx, data):\n    return data\n"),
                              f"second-{uid()}", target=local_backend, port=port, **kwargs)
        message = str(failed.value)
        assert f"Port {port} is used by the function {owner.name!r}" in message, message
        assert "pick another --port" in message and f"%function stop {owner.name}" in message
    assert [d.name for d in local_backend.deployments()] == [owner.name]
    assert owner.invoke().text == "owner"
    wait_for(lambda: not _left(local_backend, before), 10,
             lambda: f"{_left(local_backend, before)}")


def test_a_port_of_another_kernels_function_names_that_function(local_backend: LocalBackend
                                                                ) -> None:
    other_kernel = LocalBackend(standby=False)
    try:
        port = free_port()
        owner = ofnotebook.deploy(make_function("def f(request):\n    return 'theirs'\n"),
                                  f"theirs-{uid()}", target=other_kernel, port=port)
        before = _runtime_pids()
        with pytest.raises(DeployError) as failed:
            ofnotebook.deploy(make_function("def f(request):\n    return 'mine'\n"),
                              f"mine-{uid()}", target=local_backend, port=port)
        message = str(failed.value)
        assert f"port {port} is held by the ofnotebook function {owner.name!r}" in message, \
            message
        assert "pick another --port" in message and f"stop {owner.name!r}" in message
        assert owner.invoke().text == "theirs"  # the probe reached it, nothing else happened
        assert local_backend.deployments() == []
        wait_for(lambda: not _left(local_backend, before), 10,
                 lambda: f"{_left(local_backend, before)}")
    finally:
        other_kernel.close()


def test_redeploying_a_function_on_its_own_port_replaces_it(local_backend: LocalBackend
                                                            ) -> None:
    port = free_port()
    name = f"own-port-{uid()}"
    ofnotebook.deploy(make_function("def f(request):\n    return 'one'\n"), name,
                      target=local_backend, port=port)
    again = ofnotebook.deploy(make_function("def f(request):\n    return 'two'\n"), name,
                              target=local_backend, port=port)
    assert again.url == f"http://127.0.0.1:{port}/" and again.invoke().text == "two"


@pytest.mark.parametrize("port", [0, -1, 65536, 70000])
def test_ports_outside_the_range_are_refused(local_backend: LocalBackend, port: int) -> None:
    with pytest.raises(ConfigError, match=f"port={port} is not a TCP port; give a number "
                                          f"1-65535"):
        ofnotebook.deploy(make_function("def f(request):\n    return 1\n"), f"range-{uid()}",
                          target=local_backend, port=port)
    assert local_backend.deployments() == []
