"""The wire protocol between the kernel and the stand-in, named once.

The kernel (``ofnotebook/backends/standin.py``, ``backends/events.py``, ``widget.py``) talks to
the stand-in process over its HTTP control API and reads its event log. Both sides must agree
on these strings; the stand-in imports nothing of the kernel, so they live here, in a module
without dependencies that the kernel side may import as well.

* Start-up: the process prints one JSON line with ``READY_KEYS`` (the ports and its pid).
* ``PUT APPS_PATH`` registers an app: ``{"port", "timeout", "appProtocol", "components": [...]}``,
  each component a dict with ``COMPONENT_KEYS``; ``role`` is one of ``ROLES``; ``appProtocol``
  one of ``APP_PROTOCOLS`` (how the app is called: AppCallback gRPC, HTTP, or not at all). The
  answer lists what the app subscribes to and ``warnings`` about its components' metadata.
* Each function process gets its own ``DAPR_API_TOKEN``, :func:`app_token`: the stand-in
  tells callers apart by it (``GetMetadata`` answers the caller's app id), and accepts it
  wherever the kernel's own token is required. The key is ``STANDIN_KEY_ENV`` of the process.
  The kernel's token is ``DAPR_API_TOKEN`` of the process (a random one per kernel when the
  user gives none), required on the Dapr APIs and this control API alike.
* Each function also gets ``APP_TOKEN_ENV`` (Dapr's ``APP_API_TOKEN``), :func:`callback_token`:
  the stand-in sends it as ``TOKEN_HEADER`` on every AppCallback call, and the runtime refuses
  calls without it, so a function's callback port answers the stand-in only.
* ``POST INPUTS_MANY_PATH`` takes many test events in one request (``handle.publish_many``):
  a body of :data:`FRAMES_CONTENT_TYPE`, made by :func:`pack_frames`; the answer is
  ``{"sent": n, "failed": [[index, error], ...]}``, the index counting from the body's first.
* ``GET EVENTS_PATH?after=&wait=&app=`` answers ``{"events": [...], "last": seq}``; each record
  has ``seq``, ``time``, ``app`` and ``kind`` (one of ``EVENT_KINDS``) plus fields by kind.
  Payloads appear as ``data`` plus ``encoding`` (one of ``ENCODINGS``). When records after
  ``after`` fell off the bounded log before the poller saw them (it fell behind by more than
  ``EVENT_LOG_SIZE_ENV`` records), the answer has the newest records and ``"resync": {"seq":
  S, "missed": N, "apps": {app: {"counts": {kind: n}, "inputs": {name: {kind: n}}, "types":
  {name: type}}}}``: the exact cumulative counts of the process as of seq ``S`` (the record
  before the first one returned; ``inputs`` for the kinds ``in``, ``delivered``,
  ``dead-letter``; ``types`` each input's component type), read under the log's lock with
  the records; ``N`` records were skipped. The poller takes those counts, then counts the
  records returned on top of them.
* ``GET STATS_PATH`` answers ``{"apps": [...], "counts": {app: {kind: n}}, "pid": pid}``.
"""

from __future__ import annotations

import struct
from typing import Final, Iterable

# -- event log: the ``kind`` of each record ----------------------------------------------------
EVENT_REGISTERED: Final = "registered"  # an app's components are up: port, components
EVENT_UNREGISTERED: Final = "unregistered"
EVENT_IN: Final = "in"  # an input event read from the broker, before delivery
EVENT_DELIVERED: Final = "delivered"  # the app acknowledged it: name, attempt
EVENT_RETRY: Final = "retry"  # an attempt failed and will be retried: name, attempt, error
EVENT_DEAD_LETTER: Final = "dead-letter"  # given up (DROP or last attempt): acknowledged
EVENT_OUT: Final = "out"  # an output binding call or a publish of the app succeeded
EVENT_ERROR: Final = "error"  # an output call of the app failed: name, error
EVENT_STATE: Final = "state"  # a state write of the app: name, key, the value
EVENT_KINDS: Final = (EVENT_REGISTERED, EVENT_UNREGISTERED, EVENT_IN, EVENT_DELIVERED,
                      EVENT_RETRY, EVENT_DEAD_LETTER, EVENT_OUT, EVENT_ERROR, EVENT_STATE)

# -- payload encodings in records and in the read-state answer --------------------------------
ENCODING_JSON: Final = "json"
ENCODING_TEXT: Final = "text"
ENCODING_BASE64: Final = "base64"
ENCODING_EMPTY: Final = "empty"
ENCODING_MISSING: Final = "missing"  # read-state: the key does not exist
ENCODINGS: Final = (ENCODING_JSON, ENCODING_TEXT, ENCODING_BASE64, ENCODING_EMPTY,
                    ENCODING_MISSING)

# -- the component payload of a registration --------------------------------------------------
ROLE_INPUT: Final = "input"
ROLE_OUTPUT: Final = "output"
ROLE_STATE: Final = "state"
ROLE_COMPONENT: Final = "component"  # declared by name; the app's code calls it through the SDK
ROLES: Final = (ROLE_INPUT, ROLE_OUTPUT, ROLE_STATE, ROLE_COMPONENT)
COMPONENT_KEYS: Final = ("role", "name", "componentName", "type", "version", "metadata",
                         "topic")

# -- the control API (HTTP, under the same dapr-api-token as the Dapr API) --------------------
# Paths are ``str.format`` templates: APPS_PATH.format(app_id="f").
APPS_PATH: Final = "/ofnotebook/apps/{app_id}"  # PUT register, DELETE unregister
INPUTS_PATH: Final = "/ofnotebook/apps/{app_id}/inputs/{name}"  # POST a test event
INPUTS_MANY_PATH: Final = INPUTS_PATH + "/many"  # POST many, framed (pack_frames)
STATES_PATH: Final = "/ofnotebook/apps/{app_id}/states/{name}/{key}"  # GET a state value
EVENTS_PATH: Final = "/ofnotebook/events"  # GET, long poll
STATS_PATH: Final = "/ofnotebook/stats"  # GET apps, counts per app and kind, pid
READY_KEYS: Final = ("http", "grpc", "pid")
#: The stand-in's event log size (records; default ``eventlog.DEFAULT_SIZE``), read at start.
EVENT_LOG_SIZE_ENV: Final = "OFNOTEBOOK_EVENT_LOG_SIZE"
TOKEN_HEADER: Final = "dapr-api-token"

# -- many test events in one body (INPUTS_MANY_PATH) -------------------------------------------
FRAMES_CONTENT_TYPE: Final = "application/x-ofnotebook-frames"
#: Each frame: payload length (u32), content type length (u16), the content type, the payload.
#: Measured against a JSON list of base64 (benchmarks/bench_publish.py): no base64 of either
#: side, no JSON parse of the list, the payloads sliced straight out of the body.
_FRAME: Final = struct.Struct(">IH")


def pack_frames(items: Iterable[tuple[bytes, str]]) -> bytes:
    """``(payload, content_type)`` items as one :data:`FRAMES_CONTENT_TYPE` body."""
    parts: list[bytes] = []
    pack = _FRAME.pack
    for payload, content_type in items:
        kind = content_type.encode()
        parts += (pack(len(payload), len(kind)), kind, payload)
    return b"".join(parts)


def unpack_frames(body: bytes) -> list[tuple[bytes, str]]:
    """The items of a :func:`pack_frames` body; ``ValueError`` naming the frame for one that
    is cut short (a truncated or foreign body), before any item is used."""
    items: list[tuple[bytes, str]] = []
    offset, end, head, unpack = 0, len(body), _FRAME.size, _FRAME.unpack_from
    kinds: dict[bytes, str] = {}  # a body has few content types: decode each once
    while offset < end:
        if offset + head > end:
            raise ValueError(f"frame {len(items)} is cut short at byte {offset} of {end}")
        size, kind_size = unpack(body, offset)
        start = offset + head + kind_size
        offset = start + size
        if offset > end:
            raise ValueError(f"frame {len(items)} is cut short: it needs {offset} bytes of "
                             f"{end}")
        raw_kind = body[start - kind_size:start]
        kind = kinds.get(raw_kind)
        if kind is None:
            kind = kinds[raw_kind] = raw_kind.decode()
        items.append((body[start:offset], kind))
    return items


def no_input_message(app_id: str, name: str, declared: Iterable[str]) -> str:
    """The one message for a test event sent to an input the app does not declare, said
    the same by the stand-in (``publish``) and the kernel (``publish_many`` checks before
    it sends anything)."""
    listed = ", ".join(declared) or "none"
    return f"{app_id!r} has no input {name!r} (inputs: {listed})"


# -- how the stand-in calls an app (the registration's ``appProtocol``) -------------------
APP_GRPC: Final = "grpc"  # the AppCallback service (async functions, dapr.ext.grpc apps)
APP_HTTP: Final = "http"  # an HTTP server (sync functions): service invocation only
APP_NONE: Final = ""  # nothing listens for the stand-in
APP_PROTOCOLS: Final = (APP_GRPC, APP_HTTP, APP_NONE)

# -- per-app tokens ----------------------------------------------------------------------
STANDIN_KEY_ENV: Final = "OFNOTEBOOK_STANDIN_KEY"
API_TOKEN_ENV: Final = "DAPR_API_TOKEN"
APP_TOKEN_ENV: Final = "APP_API_TOKEN"
_APP_TOKEN_PREFIX: Final = "ofnb-app."
_CALLBACK_TOKEN_PREFIX: Final = "ofnb-callback."


def _signed(key: str, prefix: str, app_id: str) -> str:
    import hashlib
    import hmac

    digest = hmac.new(key.encode(), (prefix + app_id).encode(), hashlib.sha256).hexdigest()[:32]
    return f"{prefix}{app_id}.{digest}"


def app_token(key: str, app_id: str) -> str:
    """The ``DAPR_API_TOKEN`` of app ``app_id``: its id and an HMAC of it under ``key``, so
    the stand-in knows the caller without a table, and nobody without the key can pose as it."""
    return _signed(key, _APP_TOKEN_PREFIX, app_id)


def callback_token(key: str, app_id: str) -> str:
    """The ``APP_API_TOKEN`` of app ``app_id``, the stand-in's proof on its AppCallback calls.
    Signed apart from :func:`app_token` (another prefix inside the HMAC), so neither token
    can be passed off as the other: a function's callback token opens no Dapr API."""
    return _signed(key, _CALLBACK_TOKEN_PREFIX, app_id)


def token_app(key: str, token: str) -> str | None:
    """The app id an :func:`app_token` was made for, or None (not one, or a forged one)."""
    import hmac

    if not key or not token.startswith(_APP_TOKEN_PREFIX):
        return None
    app_id = token[len(_APP_TOKEN_PREFIX):].rpartition(".")[0]
    return app_id if app_id and hmac.compare_digest(app_token(key, app_id), token) else None


def authorized(token: str | None, key: str, given: str) -> bool:
    """Whether a call with ``dapr-api-token: given`` may pass: the kernel's ``token`` or an
    :func:`app_token` (always, when ``token`` is None: no token was configured)."""
    import hmac

    return (token is None or hmac.compare_digest(given.encode(), token.encode())
            or bool(given and token_app(key, given)))
