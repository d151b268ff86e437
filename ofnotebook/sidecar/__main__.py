"""``python -m ofnotebook.sidecar``: run the local Dapr-API stand-in for one kernel.

Prints ``{"http": PORT, "grpc": PORT, "pid": PID}`` once both listeners (127.0.0.1 only) are
up, then serves until SIGTERM, or until the kernel given by ``--parent-pid`` is gone.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from .delivery import DEFAULT_ATTEMPTS, Endpoint, EventLog, Registry
from .drivers import ComponentConfig
from .publisher import Publisher
from .server import create_http_app, make_grpc_server


def _endpoints(components: list[dict[str, Any]]) -> list[Endpoint]:
    return [Endpoint(role=c["role"], name=c["name"], topic=c.get("topic") or "",
                     component=ComponentConfig(name=c["componentName"], type=c["type"],
                                               version=c.get("version") or "v1",
                                               metadata={k: str(v) for k, v in
                                                         (c.get("metadata") or {}).items()}))
            for c in components]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ofnotebook.sidecar")
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--attempts", type=int,
                        default=int(os.environ.get("OFNOTEBOOK_DELIVERY_ATTEMPTS",
                                                   DEFAULT_ATTEMPTS)))
    args = parser.parse_args(argv)
    token = os.environ.get("DAPR_API_TOKEN") or None

    registry = Registry(EventLog(), attempts=args.attempts)
    publisher = Publisher(registry)

    def register(app_id: str, body: dict[str, Any]) -> dict[str, Any]:
        components = body.get("components") or []
        signature = json.dumps(components, sort_keys=True)
        return registry.register(app_id, int(body["port"]), _endpoints(components), signature,
                                 float(body.get("timeout", 20)))

    grpc_server, grpc_port = make_grpc_server(registry, publisher, token)
    grpc_server.start()
    import waitress

    http_sock = socket.create_server(("127.0.0.1", 0), backlog=128)
    http_server = waitress.create_server(create_http_app(registry, publisher, token, register),
                                         sockets=[http_sock], threads=16, ident="ofnotebook")
    threading.Thread(target=http_server.run, name="standin-http", daemon=True).start()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(json.dumps({"http": http_sock.getsockname()[1], "grpc": grpc_port,
                      "pid": os.getpid()}), flush=True)
    while not stop.wait(0.5):
        if args.parent_pid and os.getppid() != args.parent_pid:
            break
    publisher.close()
    registry.close()
    grpc_server.stop(0)
    http_server.close()
    sys.stdout.flush()
    time.sleep(0)


if __name__ == "__main__":
    main()
