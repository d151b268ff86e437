"""Service invocation between the functions of a kernel: daprd's direct messaging, locally.

``invoke_method(app_id, method, ...)`` (gRPC ``InvokeService``) and ``/v1.0/invoke/APP/method/
PATH`` reach the app registered under ``app_id``, through the channel it registered with:

* an HTTP app (a sync function: its HTTP server on 127.0.0.1) gets an HTTP request with the
  call's verb, path, query, body and headers, plus ``dapr-caller-app-id`` and
  ``dapr-callee-app-id`` as daprd adds them; its status, body and headers come back as they
  are. A gRPC caller must give an HTTP verb, as with daprd ("missing HTTP extension field");
* a gRPC app (an async function, or any ``dapr.ext.grpc.App``) gets ``OnInvoke``; its gRPC
  status maps to an HTTP status for HTTP callers (``HTTP_FROM_GRPC``).

An unknown app id fails as daprd's does (``fail to invoke, id: X, err: couldn't find service``)
and names the apps that are registered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import grpc
from dapr.proto.common.v1 import common_pb2
from google.protobuf import any_pb2

from .apps import App
from .errors import DaprError
from .protocol import APP_GRPC, APP_HTTP, TOKEN_HEADER
from .registry import Registry

#: Request headers that are the hop's own, not the call's (and the caller's Dapr token).
_HOP_HEADERS = frozenset({"host", "content-length", "connection", "keep-alive",
                          "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
                          "proxy-connection", TOKEN_HEADER, "accept-encoding"})
#: daprd's ``HTTPStatusFromCode`` (grpc-gateway's table), by gRPC status name.
HTTP_FROM_GRPC: Mapping[str, int] = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403, "UNAUTHENTICATED": 401, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501,
    "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500}
#: daprd's ``CodeFromHTTPStatus``: an HTTP app's status as the gRPC caller's status.
_GRPC_FROM_HTTP: Mapping[int, str] = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
    404: "NOT_FOUND", 408: "CANCELLED", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
VERBS = ("NONE", "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
#: Seconds an invoked app may take to answer (daprd has no default limit; a notebook does).
INVOKE_TIMEOUT = 60.0


def grpc_code_for_http(status: int) -> str:
    """The gRPC status a gRPC caller gets for an HTTP app's ``status``."""
    if 200 <= status < 300:
        return "OK"
    return _GRPC_FROM_HTTP.get(status, "UNKNOWN")


@dataclass
class InvokeResult:
    """An invoked app's answer: HTTP status and gRPC status name (whichever channel it came
    through, both are filled), body, content type, headers, the ``Any`` type of a gRPC body."""

    status: int
    code: str
    data: bytes = b""
    content_type: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    type_url: str = ""
    message: str = ""


def _failed(app_id: str, why: str, code: str = "INTERNAL", status: int = 500) -> DaprError:
    return DaprError(f"fail to invoke, id: {app_id}, err: {why}", code=code, status=status,
                     error_code="ERR_DIRECT_INVOKE")


class Invoker:
    """Calls apps by id over their registered channel; one HTTP session for all of them."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._session: Any = None

    def _app(self, app_id: str) -> App:
        app = self.registry.apps.get(app_id)
        if app is None:
            running = ", ".join(sorted(self.registry.apps)) or "none"
            raise _failed(app_id, f"couldn't find service: {app_id} (the apps registered with "
                                  f"the local stand-in: {running})")
        return app

    def invoke(self, app_id: str, method: str, *, verb: str, query: str, data: bytes,
               content_type: str, headers: Mapping[str, str], caller: str | None,
               type_url: str = "") -> InvokeResult:
        """Call ``method`` of ``app_id``; ``verb`` is "NONE" when a gRPC caller gave none."""
        app = self._app(app_id)
        sent = {k.lower(): v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
        sent["dapr-callee-app-id"] = app_id
        if caller:
            sent["dapr-caller-app-id"] = caller
        if app.protocol == APP_HTTP:
            return self._http(app, method, verb, query, data, content_type, sent)
        if app.protocol == APP_GRPC:
            return self._grpc(app, method, verb, query, data, content_type, sent, type_url)
        raise _failed(app_id, f"app channel is not initialized ({app_id!r} registered no HTTP "
                              "or AppCallback port with the local stand-in)")

    def _http(self, app: App, method: str, verb: str, query: str, data: bytes,
              content_type: str, headers: dict[str, str]) -> InvokeResult:
        import requests

        if verb in ("NONE", "CONNECT", ""):
            why = "missing HTTP extension field" if verb != "CONNECT" else "invalid HTTP verb"
            raise _failed(app.app_id, f"{why}: {app.app_id!r} is an HTTP function; pass "
                                      "http_verb='POST' (or GET, PUT...) to invoke_method",
                          code="INVALID_ARGUMENT", status=400)
        if self._session is None:
            self._session = requests.Session()
            self._session.trust_env = False  # 127.0.0.1 never goes through a proxy
        if content_type:
            headers["content-type"] = content_type
        url = f"http://127.0.0.1:{app.port}/{method.lstrip('/')}" + (f"?{query}" if query else "")
        try:
            response = self._session.request(verb, url, data=data, headers=headers,
                                             timeout=INVOKE_TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            raise _failed(app.app_id, f"the function's HTTP server at 127.0.0.1:{app.port} did "
                                      f"not answer ({exc.__class__.__name__}: {exc})") from None
        kept = [(k, v) for k, v in response.headers.items()
                if k.lower() not in _HOP_HEADERS and k.lower() != "content-encoding"]
        return InvokeResult(status=response.status_code,
                            code=grpc_code_for_http(response.status_code),
                            data=response.content,
                            content_type=response.headers.get("Content-Type", ""),
                            headers=kept, message=response.text[:2000])

    def _grpc(self, app: App, method: str, verb: str, query: str, data: bytes,
              content_type: str, headers: dict[str, str], type_url: str) -> InvokeResult:
        extension = None
        if verb not in ("NONE", ""):
            extension = common_pb2.HTTPExtension(
                verb=common_pb2.HTTPExtension.Verb.Value(verb if verb in VERBS else "NONE"),
                querystring=query)
        request = common_pb2.InvokeRequest(method=method,
                                           data=any_pb2.Any(type_url=type_url, value=data),
                                           content_type=content_type, http_extension=extension)
        metadata = [(k, v) for k, v in headers.items() if k.isascii() and not k.startswith(":")
                    and k != "content-type"]
        try:
            reply, call = app.stub().OnInvoke.with_call(request, timeout=INVOKE_TIMEOUT,
                                                        metadata=metadata)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAVAILABLE:
                raise _failed(app.app_id, f"the function's AppCallback at 127.0.0.1:{app.port} "
                                          f"is not reachable ({exc.details()})") from None
            return InvokeResult(status=HTTP_FROM_GRPC.get(code.name, 500), code=code.name,
                                data=(exc.details() or "").encode(), message=exc.details() or "")
        answered = [(k, v) for k, v in (call.initial_metadata() or ())
                    if isinstance(v, str)]
        return InvokeResult(status=200, code="OK", data=reply.data.value,
                            content_type=reply.content_type, headers=answered,
                            type_url=reply.data.type_url)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
