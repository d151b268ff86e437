"""The stand-in's errors and the one table that gives each its gRPC code and HTTP status.

Both faces (``server.py``, ``httpapi.py``) map an error through :func:`error_status` and
:func:`error_body`, so a call fails the same way over gRPC and HTTP. Where daprd gives a call
its own code and status (``pkg/messages``: ``ERR_STATE_TRANSACTION`` is INTERNAL / 500,
``ERR_SECRET_STORE_NOT_FOUND`` INVALID_ARGUMENT / 401...), the error is a :class:`DaprError`
that carries them.
"""

from __future__ import annotations

from typing import Any

from .drivers import ComponentError
from .drivers.base import EtagInvalid, EtagMismatch


class NotRegisteredError(LookupError):
    """Raised when a call names a component or an app the stand-in does not know."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not registered"


class DaprError(Exception):
    """Raised with daprd's own gRPC code, HTTP status and ``errorCode`` for the failure."""

    def __init__(self, message: str, *, code: str, status: int, error_code: str = "") -> None:
        super().__init__(message)
        self.code, self.status, self.error_code = code, status, error_code

    def __str__(self) -> str:
        return str(self.args[0])


#: (error class, gRPC status code name, HTTP status), most specific first; a DaprError
#: carries its own. A stale etag is ABORTED / 409 and a malformed one INVALID_ARGUMENT / 400,
#: as daprd's ``stateErrorResponse`` maps ETagMismatch and ETagInvalid.
ERROR_STATUS: tuple[tuple[type[Exception], str, int], ...] = (
    (NotRegisteredError, "NOT_FOUND", 404),
    (EtagMismatch, "ABORTED", 409),
    (EtagInvalid, "INVALID_ARGUMENT", 400),
    (ComponentError, "INTERNAL", 400),
)


#: daprd's answer for a component it does not know, by kind (``pkg/api/errors``,
#: ``pkg/messages``): (message template, gRPC code, HTTP status, errorCode). An unknown
#: output binding fails the call inside ``sendToOutputBinding``, hence INTERNAL / 500.
NOT_FOUND: dict[str, tuple[str, str, int, str]] = {
    "pubsub": ("pubsub {name} not found", "INVALID_ARGUMENT", 404, "ERR_PUBSUB_NOT_FOUND"),
    "state": ("state store {name} is not found", "INVALID_ARGUMENT", 400,
              "ERR_STATE_STORE_NOT_FOUND"),
    "bindings": ("error invoking output binding {name}: couldn't find output binding {name}",
                 "INTERNAL", 500, "ERR_INVOKE_OUTPUT_BINDING"),
}


def component_not_found(kind: str, name: str, known: str) -> Exception:
    """The error for a call of the ``kind`` component ``name`` that no app registered:
    daprd's code, status and message, then what is registered (``known``) and the fix."""
    why = (f"; it is not registered with the local stand-in ({known}). Declare it with "
           f"--component {name}=URI (or --output/--state NAME=URI) and call it by that name")
    if kind == "state":  # known: the stores the caller declared (DaprCore._stores)
        why = (f"; {known}. Declare it with --state {name}=URI (or --component "
               f"{name}=URI for a store apps share), or call a declared store by the name "
               f"listed")
    if kind not in NOT_FOUND:
        return NotRegisteredError(f"component {name!r} is not registered with the local "
                                  f"stand-in ({known})")
    template, code, status, error_code = NOT_FOUND[kind]
    return DaprError(template.format(name=name) + why, code=code, status=status,
                     error_code=error_code)


def error_status(exc: BaseException) -> tuple[str, int] | None:
    """The gRPC code name and HTTP status of ``exc``, or None for an unexpected error."""
    if isinstance(exc, DaprError):
        return exc.code, exc.status
    for cls, code, status in ERROR_STATUS:
        if isinstance(exc, cls):
            return code, status
    return None


def error_body(exc: BaseException) -> dict[str, Any]:
    """daprd's HTTP error body (``errorCode``, ``message``), plus ``error`` for the kernel."""
    code = exc.error_code if isinstance(exc, DaprError) and exc.error_code else (
        f"ERR_{(error_status(exc) or ('INTERNAL', 500))[0]}")
    return {"errorCode": code, "message": str(exc), "error": str(exc)}
