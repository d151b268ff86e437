"""An async runtime's port: gRPC binds it after the standby process releases it, so a port
another process holds must fail the deploy with the cause, and leave nothing running."""

from __future__ import annotations

import socket

import pytest

import ofnotebook
from ofnotebook.errors import DeployError
from tests.helpers import make_function, runtime_children, uid


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
