"""The function runtime: what runs inside the function's process or container.

It reads the OpenFunction function context (``FUNC_CONTEXT`` and ``FUNC_CONTEXT_V1BETA2``),
loads and digest-checks the cloudpickle payload of a package, and serves the function: HTTP
on the context port for sync functions, Dapr's AppCallback for async ones. It needs only the
standard library, cloudpickle, Flask and waitress (plus the Dapr SDK for async functions and
``cloudevents`` for the event shapes, imported only then), never IPython, docker or kubernetes,
because a copy of it ships in every image.
"""

from __future__ import annotations

import os

#: Path of the readiness probe; it never reaches the user's function.
HEALTH_PATH = "/_ofnotebook/healthz"
#: Header the runtime sets on a 500 caused by an exception in the function.
ERROR_HEADER = "X-Ofnotebook-Error"
#: Exit code for a package the runtime refuses to load (digest, Python or cloudpickle mismatch).
EXIT_BAD_PACKAGE = 3
#: The package's folder of ``--include`` files: the function's working directory on every target.
FILES_DIR = "function/files"


def is_local() -> bool:
    """True when running under ofnotebook's local target rather than in a cluster."""
    return os.environ.get("OFNOTEBOOK_LOCAL") == "1"
