"""``bindings.http`` (output only): each event is a real HTTP request, as Dapr's HTTP binding.

Operations ``create`` (POST), ``post``, ``get``, ``head``, ``put``, ``patch``, ``delete``,
``options`` and ``trace``; metadata ``path`` is appended to the component ``url``; other
per-request metadata become headers. With ``errorIfNot2XX`` (default true) a non-2xx answer is
an error. The response comes back with ``statusCode`` in its metadata.
"""

from __future__ import annotations

from typing import Mapping

import requests

from .base import ComponentConfig, ComponentError, Driver

_METHODS = {"create": "POST", "post": "POST", "get": "GET", "head": "HEAD", "put": "PUT",
            "patch": "PATCH", "delete": "DELETE", "options": "OPTIONS", "trace": "TRACE"}
_RESERVED = {"path", "key"}


class HttpDriver(Driver):
    """An output binding that sends each call as one HTTP request."""

    def __init__(self, component: ComponentConfig) -> None:
        super().__init__(component)
        self.url = component.require("url").rstrip("/")
        self.timeout = float(component.get("responseTimeout", "30").rstrip("s") or 30)
        self.error_if_not_2xx = component.get("errorIfNot2XX", "true").lower() != "false"
        self.session = requests.Session()

    def _invoke(self, operation: str, data: bytes, metadata: Mapping[str, str]
                ) -> tuple[bytes, dict[str, str]]:
        method = _METHODS.get((operation or "create").lower())
        if method is None:
            raise ComponentError(f"http binding {self.name!r} has no operation {operation!r}; "
                                 f"use one of {', '.join(_METHODS)}")
        path = metadata.get("path", "")
        url = self.url + ("/" + path.lstrip("/") if path else "")
        headers = {k: v for k, v in metadata.items() if k not in _RESERVED}
        try:
            response = self.session.request(method, url, data=data or None, headers=headers,
                                            timeout=self.timeout)
        except requests.RequestException as exc:
            raise ComponentError(f"http binding {self.name!r}: {method} {url} failed: {exc}") from exc
        if self.error_if_not_2xx and not 200 <= response.status_code < 300:
            raise ComponentError(f"http binding {self.name!r}: {method} {url} answered "
                                 f"{response.status_code}: {response.text[:200]}")
        return response.content, {"statusCode": str(response.status_code)}

    def _close(self) -> None:
        self.session.close()
