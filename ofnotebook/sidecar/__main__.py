"""``python -m ofnotebook.sidecar``: run the local Dapr-API stand-in for one kernel.

Prints ``{"http": PORT, "grpc": PORT, "pid": PID}`` once both listeners (127.0.0.1 only) are
up, then serves until SIGTERM, or until the kernel given by ``--parent-pid`` is gone. Every call
but the health probe needs ``DAPR_API_TOKEN`` of its environment (the kernel always sets one)
or a function's own token.
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

from .apps import set_callback_key
from .core import DaprCore
from .delivery import DEFAULT_ATTEMPTS
from .eventlog import EventLog
from .httpapi import create_http_app
from .protocol import API_TOKEN_ENV, STANDIN_KEY_ENV
from .registry import Registry
from .server import make_grpc_server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ofnotebook.sidecar")
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--attempts", type=int,
                        default=int(os.environ.get("OFNOTEBOOK_DELIVERY_ATTEMPTS",
                                                   DEFAULT_ATTEMPTS)))
    args = parser.parse_args(argv)
    # The kernel passes both secrets in the environment (not argv, which ps shows to all), and
    # they leave it here: the local.env secret store reads this environment.
    token = os.environ.pop(API_TOKEN_ENV, "")
    if not token:  # fail closed: an open stand-in serves every user of 127.0.0.1
        parser.error(f"{API_TOKEN_ENV} is not set; the stand-in serves only callers with a "
                     f"token: set {API_TOKEN_ENV} in its environment (the kernel does)")
    key = os.environ.pop(STANDIN_KEY_ENV, "")
    set_callback_key(key)
    core = DaprCore(Registry(EventLog(), attempts=args.attempts), key=key)
    grpc_server, grpc_port = make_grpc_server(core, token)
    grpc_server.start()
    import waitress

    http_sock = socket.create_server(("127.0.0.1", 0), backlog=128)
    http_server = waitress.create_server(create_http_app(core, token),
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
    core.close()
    grpc_server.stop(0)
    http_server.close()
    sys.stdout.flush()
    time.sleep(0)


if __name__ == "__main__":
    main()
