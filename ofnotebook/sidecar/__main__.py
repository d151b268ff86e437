"""``python -m ofnotebook.sidecar``: run the local Dapr-API stand-in for one kernel.

Prints ``{"http": PORT, "grpc": PORT, "pid": PID}`` once both listeners (127.0.0.1 only) are
up, then serves until SIGTERM, or until the kernel given by ``--parent-pid`` is gone. Every call
but the health probe needs ``DAPR_API_TOKEN`` of its environment (the kernel always sets one)
or a function's own token.

``--http-port`` and ``--grpc-port`` bind given ports (default: free ones): the kernel restarts a
stand-in that died on the ports it had, since every function process was started with them
(``DAPR_GRPC_PORT``) and reconnects there on its own. A port that cannot be bound exits with
code 2 and one line naming it, which the kernel shows.
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

from .. import config
from ..errors import ConfigError
from .apps import set_callback_key
from .core import DaprCore
from .eventlog import DEFAULT_SIZE, EventLog
from .httpapi import create_http_app
from .protocol import API_TOKEN_ENV, EVENT_LOG_SIZE_ENV, STANDIN_KEY_ENV
from .registry import Registry
from .server import make_grpc_server


def _log_size(parser: argparse.ArgumentParser) -> int:
    """``EVENT_LOG_SIZE_ENV`` (tests make the log tiny to make the kernel fall behind)."""
    raw = os.environ.get(EVENT_LOG_SIZE_ENV, "").strip()
    if not raw:
        return DEFAULT_SIZE
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if size < 1:
        parser.error(f"{EVENT_LOG_SIZE_ENV}={raw!r} is not a positive number of records; set "
                     f"it to one (default {DEFAULT_SIZE}) or unset it")
    return size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ofnotebook.sidecar")
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--attempts", type=int, default=None)
    parser.add_argument("--http-port", type=int, default=0)
    parser.add_argument("--grpc-port", type=int, default=0)
    args = parser.parse_args(argv)
    try:  # validated as the kernel validates it: a bad value names OFNOTEBOOK_DELIVERY_ATTEMPTS
        attempts = int(config.get("delivery_attempts", args.attempts
                                  if args.attempts is not None else config.UNSET))
    except ConfigError as exc:
        parser.error(str(exc))
    # The kernel passes both secrets in the environment (not argv, which ps shows to all), and
    # they leave it here: the local.env secret store reads this environment.
    token = os.environ.pop(API_TOKEN_ENV, "")
    if not token:  # fail closed: an open stand-in serves every user of 127.0.0.1
        parser.error(f"{API_TOKEN_ENV} is not set; the stand-in serves only callers with a "
                     f"token: set {API_TOKEN_ENV} in its environment (the kernel does)")
    key = os.environ.pop(STANDIN_KEY_ENV, "")
    set_callback_key(key)
    core = DaprCore(Registry(EventLog(_log_size(parser)), attempts=attempts), key=key)
    try:
        http_sock = socket.create_server(("127.0.0.1", args.http_port), backlog=128)
    except OSError as exc:
        print(f"ofnotebook stand-in: cannot listen on HTTP port {args.http_port}: {exc}",
              flush=True)
        sys.exit(2)
    try:
        grpc_server, grpc_port = make_grpc_server(core, token, args.grpc_port)
    except RuntimeError as exc:
        print(f"ofnotebook stand-in: cannot listen on gRPC port {args.grpc_port}: {exc}",
              flush=True)
        sys.exit(2)
    grpc_server.start()
    import waitress

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
