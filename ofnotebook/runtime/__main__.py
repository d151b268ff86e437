"""``python -m ofnotebook.runtime``: serve a packaged function.

In a container: ``python -m ofnotebook.runtime --package /app`` reads ``FUNC_CONTEXT`` (or the
package's own ``function/context.json`` when the environment has none) and listens on the
context port on all interfaces.

On the local target: ``--standby`` imports everything, binds 127.0.0.1 on a free port, prints
``{"standby": PORT}`` and waits for one JSON line on stdin (``{"package": DIR, "env": {...},
"port": FIXED_OR_NULL, "nonce": ID}``). A warm process is then ready to serve a new package in
milliseconds. A sync function's health probe answers with the ``nonce``, so the kernel knows it
reached this deployment and not another process on the same port. ``--parent-pid`` makes it
exit when the notebook kernel that started it is gone, so no process is left behind.
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
from pathlib import Path

from . import EXIT_BAD_PACKAGE, FILES_DIR
from .context import ContextError, parse_context
from .loader import PackageLoadError, context_from_package, load_function, read_manifest


def _watch_parent(pid: int) -> None:
    def loop() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != pid:
                os._exit(0)

    threading.Thread(target=loop, name="ofnotebook-parent-watch", daemon=True).start()


def _enter_files(package: Path) -> None:
    """Run in the package's ``--include`` folder on every target (made empty when nothing was
    included), so a relative path works in a container exactly when it works locally, and
    never reaches the folder the notebook happened to start the process in."""
    files = package.resolve() / FILES_DIR
    try:
        files.mkdir(parents=True, exist_ok=True)
        os.chdir(files)
    except OSError as exc:  # a read-only image without includes: stay in the package
        print(f"ofnotebook runtime: warning: cannot enter {files}: {exc}", file=sys.stderr,
              flush=True)


def _fail(message: str) -> None:
    print(f"ofnotebook runtime: error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_BAD_PACKAGE)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ofnotebook.runtime")
    parser.add_argument("--package", default=os.environ.get("OFNOTEBOOK_PACKAGE", "/app"))
    parser.add_argument("--host", default=os.environ.get("OFNOTEBOOK_HOST", "0.0.0.0"))
    parser.add_argument("--standby", action="store_true")
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.parent_pid:
        _watch_parent(args.parent_pid)

    # Import the heavy parts before announcing readiness, so a standby process is truly warm.
    import cloudpickle  # noqa: F401

    if args.standby:
        from . import http  # noqa: F401  (Flask and waitress, for the sync case)

    sock: socket.socket | None = None
    package = Path(args.package)
    nonce = ""
    if args.standby:
        sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        print(json.dumps({"standby": sock.getsockname()[1]}), flush=True)
        line = sys.stdin.readline()
        if not line:
            return  # the kernel released the standby process
        order = json.loads(line)
        os.environ.update(order.get("env") or {})
        package = Path(order["package"])
        nonce = str(order.get("nonce") or "")
        if order.get("port"):
            sock.close()  # the user asked for a fixed port
            try:
                sock = socket.create_server(("127.0.0.1", int(order["port"])), backlog=128)
            except OSError as exc:
                _fail(f"cannot listen on 127.0.0.1:{order['port']}: {exc}; pick another --port, "
                      f"or stop what holds it")
                return

    package = package.resolve()
    _enter_files(package)
    env = dict(os.environ)
    if not env.get("FUNC_CONTEXT") and not env.get("FUNC_CONTEXT_V1BETA2"):
        env.update(context_from_package(package))
    try:
        fctx = parse_context(env)
        manifest = read_manifest(package)
        loaded = load_function(package)
    except (ContextError, PackageLoadError) as exc:
        _fail(str(exc))
        return
    if fctx.is_async:
        # gRPC binds the port itself: hand it over from the standby socket at the last moment
        # (after every import and registration), so no other process can take it meanwhile.
        host = args.host if sock is None else "127.0.0.1"
        from .callbacks import serve_async

        serve_async(loaded, fctx, host, release=sock.close if sock is not None else None)
        return
    if sock is None:
        try:
            sock = socket.create_server((args.host, fctx.port), backlog=128)
        except OSError as exc:
            _fail(f"cannot listen on {args.host}:{fctx.port}: {exc}")
            return
    elif sock.getsockname()[1] != fctx.port:
        print(f"ofnotebook runtime: warning: context port {fctx.port} differs from the "
              f"standby port {sock.getsockname()[1]}", file=sys.stderr, flush=True)

    from .http import create_app, make_http_server

    app = create_app(loaded, fctx, digest=str(manifest.get("payload_sha256", "")), nonce=nonce)
    server = make_http_server(app, sock)
    print(f"ofnotebook runtime: serving {fctx.name} ({loaded.entry}, {loaded.signature}) "
          f"on {sock.getsockname()[0]}:{sock.getsockname()[1]}", flush=True)
    server.run()


if __name__ == "__main__":
    main()
