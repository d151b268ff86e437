"""The call shapes the runtime serves, and how a function's shape is told from its definition.

One module for both sides of the contract: capture classifies the function with
:func:`detect` in the notebook, the runtime dispatches on the same names in the process that
serves it, so the two cannot drift apart. Only the standard library is used here (a copy of
the runtime ships in every image).

The rule, first match wins:

1. A function wrapped by functions-framework's decorators (``@functions_framework.http``,
   ``@functions_framework.cloud_event``, their ``aio`` variants, ``@typed``) has the kind the
   decorator recorded in ``functions_framework._function_registry.REGISTRY_MAP``. The
   registry is read only when functions-framework is already imported (the decorator ran), and
   only for a function the decorator actually wrapped: the map is keyed by name and never
   forgets, so a later undecorated function of the same name must not inherit the kind.
2. Otherwise the required positional parameters decide:

   - ``f()`` -> ``noarg``;
   - ``f(context)`` / ``f(ctx)`` -> ``context`` (OpenFunction);
   - ``f(cloud_event)`` / ``f(cloudevent)`` / ``f(ce)`` / ``f(event)``, or a first parameter
     annotated as a ``CloudEvent`` -> ``cloudevent``;
   - any other single parameter -> ``request`` (Flask's request on HTTP; the decoded event data
     on async);
   - ``f(ctx, data)`` / ``f(context, data)``: a first parameter named ``ctx`` or ``context``
     -> ``ctx_data`` (OpenFunction);
   - ``f(event, context)`` / ``f(data, context)`` / ``f(message, ctx)``: a *second* parameter
     named ``context`` or ``ctx`` -> ``background`` (Google Cloud Functions' legacy shape);
   - any other two parameters -> ``ctx_data`` (OpenFunction's order);
   - three or more -> refused.

``--signature`` overrides the rule; the function must still accept that many arguments.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any, Callable

#: The call shapes, as ``--signature`` names them.
SIGNATURES = ("request", "cloudevent", "background", "context", "ctx_data", "noarg")
#: How each shape is called, for messages and the docs.
CALLS = {"request": "f(request)", "cloudevent": "f(cloud_event)",
         "background": "f(event, context)", "context": "f(context)",
         "ctx_data": "f(ctx, data)", "noarg": "f()"}
#: Shapes that take an event: the runtime needs the ``cloudevents`` library for them.
EVENT_SHAPES = frozenset({"cloudevent", "background"})
#: One line naming every supported shape, for the refusals.
SUPPORTED = ("f(request) or @functions_framework.http, f(cloud_event) or "
             "@functions_framework.cloud_event, f(event, context), f(context), f(ctx, data) "
             "and f()")

_CONTEXT_NAMES = frozenset({"context", "ctx"})
_CLOUDEVENT_NAMES = frozenset({"cloud_event", "cloudevent", "ce", "event"})
_HTTP_NAMES = frozenset({"request", "req"})
_ARITY = {"noarg": 0, "request": 1, "cloudevent": 1, "context": 1, "ctx_data": 2,
          "background": 2}
# functions-framework's registry kinds (FUNCTION_SIGNATURE_TYPE) -> our shapes.
_FF_KINDS = {"http": "request", "cloudevent": "cloudevent", "event": "background"}
_FF_DECORATORS = {"http": "@functions_framework.http",
                  "cloudevent": "@functions_framework.cloud_event",
                  "event": "a functions-framework background event",
                  "typed": "@functions_framework.typed"}


class ShapeError(ValueError):
    """Raised when a function's shape cannot be served; the message names the supported ones."""


def _framework_wrapper(fn: Callable[..., Any]) -> tuple[str, str] | None:
    """``(kind, module)`` when ``fn`` is the wrapper a functions-framework decorator returned.

    ``functools.wraps`` copies the user's name and module onto the wrapper, but not its
    globals: those are still the framework's own module."""
    module = str(getattr(fn, "__globals__", {}).get("__name__", ""))
    if not module.startswith("functions_framework") or not hasattr(fn, "__wrapped__"):
        return None
    registry = sys.modules.get("functions_framework._function_registry")
    kinds = getattr(registry, "REGISTRY_MAP", {})
    return str(kinds.get(getattr(fn, "__name__", ""), "")), module


def unwrap(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The user's own function under a functions-framework decorator (the wrapper only passes
    the arguments through), so the payload and the image need no functions-framework."""
    if _framework_wrapper(fn) is not None:
        inner: Callable[..., Any] = getattr(fn, "__wrapped__")
        return inner
    return fn


def _positional(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]


def _is_cloud_event_annotation(annotation: Any) -> bool:
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    # under ``from __future__ import annotations`` a quoted annotation arrives quoted again
    return str(name).strip("'\" ").rpartition(".")[2] == "CloudEvent"


def from_parameters(fn: Callable[..., Any]) -> str:
    """The shape the required positional parameters' names give (rule 2 of the module)."""
    params = _positional(fn)
    name = getattr(fn, "__name__", "f")
    if len(params) == 0:
        return "noarg"
    if len(params) == 1:
        first = params[0]
        if first.name in _CONTEXT_NAMES:
            return "context"
        if first.name in _CLOUDEVENT_NAMES or _is_cloud_event_annotation(first.annotation):
            return "cloudevent"
        return "request"
    if len(params) == 2:
        if params[0].name not in _CONTEXT_NAMES and params[1].name in _CONTEXT_NAMES:
            return "background"
        return "ctx_data"
    listed = ", ".join(p.name for p in params)
    raise ShapeError(
        f"{name}({listed}) takes {len(params)} required arguments, a shape the runtime cannot "
        f"call; the supported shapes are {SUPPORTED}. Give the other arguments default values, "
        f"or name the shape with --signature.")


def detect(fn: Callable[..., Any], runtime: str = "sync", signature: str | None = None
           ) -> str:
    """The shape of ``fn`` (a wrapper of functions-framework or the plain function) for a
    ``runtime`` ("sync" or "async"); ``signature`` overrides the detection. Raises
    :class:`ShapeError` for a shape the runtime cannot serve."""
    name = getattr(fn, "__name__", "f")
    if signature is not None:
        if signature not in SIGNATURES:
            raise ShapeError(f"Unknown signature {signature!r}; use one of "
                             f"{', '.join(SIGNATURES)}.")
        _check_arity(unwrap(fn), signature)
        return signature
    wrapped = _framework_wrapper(fn)
    if wrapped is not None:
        kind, module = wrapped
        decorator = _FF_DECORATORS.get(kind, "a functions-framework decorator")
        if module.endswith(".aio") and kind == "http":
            raise ShapeError(
                f"{name}() is decorated with @functions_framework.aio.http, which hands it a "
                f"Starlette request; the runtime serves Flask: use @functions_framework.http "
                f"(or plain f(request)). The supported shapes are {SUPPORTED}; --signature "
                f"overrides the detection.")
        if kind not in _FF_KINDS:
            raise ShapeError(
                f"{name}() is registered by {decorator}, a shape the runtime does not serve; "
                f"the supported shapes are {SUPPORTED}. Rewrite it in one of those, or name "
                f"the shape with --signature.")
        shape = _FF_KINDS[kind]
        if shape == "request" and runtime == "async":
            raise ShapeError(
                f"{name}() is an HTTP function ({decorator}), but its inputs make it "
                f"asynchronous: it would get events, never an HTTP request. Take the event "
                f"with @functions_framework.cloud_event or f(ctx, data), or deploy it without "
                f"inputs.")
        return shape
    shape = from_parameters(fn)
    if shape == "request" and runtime == "async" and _positional(fn)[0].name in _HTTP_NAMES:
        raise ShapeError(
            f"{name}({_positional(fn)[0].name}) takes an HTTP request, but its inputs make it "
            f"asynchronous: it would get events, never a request. Take the event as "
            f"f(cloud_event), f(ctx, data) or f(data), or deploy it without inputs "
            f"(--signature request passes the event data as the argument).")
    return shape


def _check_arity(fn: Callable[..., Any], signature: str) -> None:
    """``--signature X`` must name a shape ``fn`` can be called with: refuse it at deploy, not
    with a TypeError on every call."""
    try:
        inspect.signature(fn).bind(*([None] * _ARITY[signature]))
    except TypeError as exc:
        raise ShapeError(
            f"--signature {signature} calls {CALLS[signature]}, but "
            f"{getattr(fn, '__name__', 'f')}{inspect.signature(fn)} cannot be called so "
            f"({exc}). Pick the shape that matches the parameters, or drop --signature.") from None
