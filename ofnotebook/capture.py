"""Capture a notebook function: a cloudpickle payload by value, its lock and a globals report.

What is pickled *by value* (the code itself travels): everything defined in the notebook
(``__main__``) and in local, non-installed modules such as a ``helpers.py`` beside the notebook.
What is pickled *by reference* (only the import path travels): installed distributions and the
standard library. Every installed distribution the payload refers to is pinned, at the version
installed in the kernel, in the lock the image installs; so is every one a by-value function
imports inside its body (``def f(): import yaml``), which the payload cannot show, since such
an import runs only where the function runs. ``--requirements`` are read and checked by
:mod:`ofnotebook.requirements`. Text globals named like credentials are flagged: the payload,
and so the image, would carry them.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.metadata
import inspect
import io
import linecache
import os
import pickletools
import re
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, cast

import cloudpickle

from packaging.utils import canonicalize_name

from . import config, requirements as reqs
from .errors import CaptureError, UnpicklableGlobalError
from .includes import IncludedFile, human, report_lines
from .runtime import shapes
from .runtime.shapes import SIGNATURES as SIGNATURES  # re-exported: --signature's choices

_MB = 1024 * 1024
_STDLIB = frozenset(sys.stdlib_module_names) | {"__main__", "builtins", "__future__"}
# The runtime needs these in the image whatever the function uses.
RUNTIME_DISTRIBUTIONS = {"sync": ("cloudpickle", "flask", "waitress"),
                         # dapr.ext.grpc (the AppCallback server) needs dapr[grpc]'s cloudevents
                         "async": ("cloudpickle", "dapr", "cloudevents")}
# ... and these for the shapes that take an event (runtime/events.py parses and builds them).
SHAPE_DISTRIBUTIONS = {shape: ("cloudevents",) for shape in shapes.EVENT_SHAPES}

_HINTS = {
    "lock": "create the lock inside the function (or at module level of a helper module)",
    "socket": "open the connection inside the function, on first use",
    "generator": "turn it into a list, or create the generator inside the function",
    "TextIOWrapper": "open the file inside the function",
    "BufferedReader": "open the file inside the function",
    "BufferedWriter": "open the file inside the function",
    "Connection": "connect inside the function, on first use (a client cannot travel)",
}


@dataclass(frozen=True)
class CapturedGlobal:
    """One global the function uses, with how it travels and its pickled size in bytes."""

    name: str
    type_name: str
    size: int
    by: str  # "value" | "reference"
    owner: str
    #: its name looks like a secret's (PASSWORD, TOKEN, SECRET, *_API_KEY) and it holds text
    secret: bool = False


@dataclass(frozen=True)
class LockEntry:
    """An installed distribution the payload refers to, pinned at its installed version."""

    distribution: str
    version: str
    modules: tuple[str, ...]

    @property
    def requirement(self) -> str:
        """The pip line: pinned to the notebook's version so the function runs against what
        it was written with; unpinned only when the version is unknown."""
        return f"{self.distribution}=={self.version}" if self.version else self.distribution


@dataclass(frozen=True)
class Capture:
    """The result of capturing one function: payload, lock and what was captured."""

    function: Callable[..., Any] = field(repr=False, compare=False)
    entry: str
    signature: str
    payload: bytes = field(repr=False)
    payload_sha256: str
    lock: tuple[LockEntry, ...]
    local_modules: tuple[str, ...]
    globals: tuple[CapturedGlobal, ...]
    sources: dict[str, str] = field(repr=False, compare=False)
    python_version: str
    cloudpickle_version: str
    warnings: tuple[str, ...] = ()
    #: modules imported inside a by-value function's body, as ``(module, function)``
    body_imports: tuple[tuple[str, str], ...] = ()
    #: the ``--include`` files, set by the deploy once they are collected
    files: tuple[IncludedFile, ...] = field(default=(), repr=False)

    @property
    def requirements(self) -> list[str]:
        """The lock as pip requirement lines."""
        return [entry.requirement for entry in self.lock]

    def report(self) -> str:
        """A plain-text report of the captured globals and the lock, for the user."""
        lines = [f"captured {self.entry}() [{self.signature}], payload {_human(len(self.payload))}, "
                 f"Python {self.python_version}, cloudpickle {self.cloudpickle_version}"]
        for g in self.globals:
            lines.append(f"  global {g.name:<20} {g.type_name:<24} {_human(g.size):>9}  by {g.by}"
                         + ("" if g.owner == self.entry else f"  (used by {g.owner})")
                         + ("  LOOKS LIKE A SECRET: the image will contain it" if g.secret
                            else ""))
        for module, owner in self.body_imports:
            lines.append(f"  body import {module} in {owner}()")
        for module in self.local_modules:
            lines.append(f"  local module {module} (by value)")
        for entry in self.lock:
            lines.append(f"  lock {entry.requirement}  ({', '.join(entry.modules)})")
        lines.extend(report_lines(self.files))
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)


_human = human  # one way to print a size, shared with the --include report


def signature_kind(fn: Callable[..., Any], runtime: str = "sync") -> str:
    """How the runtime must call ``fn`` (one of :data:`SIGNATURES`): the decorator of
    functions-framework when one wraps it, else the names of its required parameters. The
    whole rule is in :mod:`ofnotebook.runtime.shapes`; a shape that cannot be served on
    ``runtime`` is a :class:`CaptureError` naming the supported ones."""
    return _shape(fn, runtime, None)


def _shape(fn: Callable[..., Any], runtime: str, signature: str | None) -> str:
    try:
        return shapes.detect(fn, runtime, signature)
    except shapes.ShapeError as exc:
        raise CaptureError(str(exc)) from None
    except (TypeError, ValueError) as exc:  # inspect.signature on an odd callable
        raise CaptureError(f"Cannot read the signature of {fn!r}: {exc}.") from exc


# --------------------------------------------------------------------------------------------
# Module classification


_packages_distributions = reqs.packages_distributions
_inferred_packages_distributions = reqs.inferred_packages_distributions


def _top(module_name: str) -> str:
    return module_name.split(".", 1)[0]


def _is_local_module(top: str) -> bool:
    """A module the kernel imported from a file that no installed distribution provides."""
    if top in _STDLIB or top in _packages_distributions():
        return False
    module = sys.modules.get(top)
    path = getattr(module, "__file__", None)
    return bool(path) and os.path.exists(str(path))


# --------------------------------------------------------------------------------------------
# Pickling


class _Recorder:
    """State shared with the pickler: module objects met, and the source of by-value code.

    cloudpickle names every by-value code object ``<dynamic-code>`` (so payloads are
    deterministic); the runtime uses these sources, keyed by function name, to show the
    function's lines in remote tracebacks.
    """

    def __init__(self) -> None:
        self.modules: set[str] = set()
        self.sources: dict[str, str] = {}

    def record_source(self, code: types.CodeType) -> None:
        if code.co_name in self.sources or code.co_name.startswith("<"):
            return
        lines = linecache.getlines(code.co_filename)
        if lines and sum(map(len, lines)) <= _MB:
            self.sources[code.co_name] = "".join(lines)


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    def __init__(self, file: io.BytesIO, recorder: _Recorder) -> None:
        super().__init__(file, protocol=cloudpickle.DEFAULT_PROTOCOL)
        self._recorder = recorder

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.ModuleType):
            self._recorder.modules.add(obj.__name__)
        elif isinstance(obj, types.CodeType):
            self._recorder.record_source(obj)
        return super().reducer_override(obj)


def _dumps(obj: Any, recorder: _Recorder) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, recorder).dump(obj)
    return buffer.getvalue()


def _pickled_globals(payload: bytes) -> set[str]:
    """Module names of every by-reference global (class, function) in a pickle."""
    found: set[str] = set()
    memo: dict[int, Any] = {}
    recent: collections.deque[Any] = collections.deque(maxlen=2)
    for opcode, arg, _ in pickletools.genops(payload):
        name = opcode.name
        if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
            recent.append(arg)
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            recent.append(memo.get(int(cast(int, arg))))
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(cast(int, arg))] = recent[-1] if recent else None
        elif name == "STACK_GLOBAL":
            if len(recent) == 2 and isinstance(recent[0], str):
                found.add(recent[0])
            recent.append(None)
        elif name == "GLOBAL":
            found.add(str(arg).split(" ", 1)[0])
            recent.append(None)
        elif name not in ("FRAME", "PROTO"):
            recent.append(None)
    return found


# --------------------------------------------------------------------------------------------
# Globals report


def _code_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const)


def _travels_by_value(obj: Any) -> bool:
    module = getattr(obj, "__module__", None)
    return isinstance(module, str) and (module == "__main__" or _is_local_module(_top(module)))


def _walk_globals(fn: types.FunctionType, functions_seen: list[types.FunctionType] | None = None
                  ) -> Iterator[tuple[str, Any, str]]:
    """(name, value, owner) for every global reached from ``fn`` through by-value code;
    each by-value function walked is appended to ``functions_seen``."""
    seen: set[int] = set()
    todo: list[Any] = [fn]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        functions: Iterable[Any]
        if isinstance(obj, type):
            functions = [v for v in vars(obj).values() if isinstance(v, types.FunctionType)]
        else:
            functions = [obj]
        for func in functions:
            if functions_seen is not None:
                functions_seen.append(func)
            namespace = func.__globals__
            for gname in dict.fromkeys(_code_names(func.__code__)):
                if gname not in namespace or gname == "__builtins__":
                    continue
                value = namespace[gname]
                yield gname, value, func.__qualname__
                if (isinstance(value, (types.FunctionType, type))
                        and _travels_by_value(value) and id(value) not in seen):
                    todo.append(value)
            for cell in func.__closure__ or ():
                try:
                    value = cell.cell_contents
                except ValueError:  # an empty cell
                    continue
                if isinstance(value, (types.FunctionType, type)) and _travels_by_value(value):
                    todo.append(value)


def _hint(type_name: str) -> str:
    for key, hint in _HINTS.items():
        if key in type_name:
            return hint
    return "create it inside the function instead of capturing it from the notebook"


#: what a secret's name looks like (issue 12 item 9): only text (str, bytes) under such a name
#: is flagged. A key is a credential's only as API_KEY, *_API_KEY, *_SECRET_KEY, *_ACCESS_KEY
#: or *_PRIVATE_KEY (SORT_KEY, CACHE_KEY, PRIMARY_KEY name a field); TOKENIZER / TOKENISER
#: name a model and *_TOKENS a count or a vocabulary, not a credential
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN(?!S$|I[SZ])"
                          r"|(?:^|_)(?:API|ACCESS|PRIVATE)_?KEY$", re.I)


def looks_like_secret(name: str, value: Any) -> bool:
    return isinstance(value, (str, bytes)) and bool(_SECRET_NAME.search(name))


def _report_globals(fn: types.FunctionType, warn_bytes: float,
                    functions_seen: list[types.FunctionType] | None = None
                    ) -> tuple[list[CapturedGlobal], list[str]]:
    report: list[CapturedGlobal] = []
    warnings: list[str] = []
    seen: set[str] = set()
    for gname, value, owner in _walk_globals(fn, functions_seen):
        key = f"{owner}:{gname}"
        if key in seen:
            continue
        seen.add(key)
        type_name = type(value).__qualname__
        if isinstance(value, types.ModuleType):
            report.append(CapturedGlobal(gname, "module", 0, "reference", owner))
            continue
        try:
            if isinstance(value, io.IOBase):
                # cloudpickle would ship a snapshot of a read-only file: never what was meant.
                raise TypeError(f"cannot send an open file ({getattr(value, 'name', '?')!r})")
            size = len(cloudpickle.dumps(value))
        except Exception as exc:  # pickle raises TypeError, PicklingError, AttributeError...
            raise UnpicklableGlobalError(
                f"Global {gname!r} ({type(value).__module__}.{type_name}) used by {owner}() "
                f"cannot be sent to the deployed function: {exc}. Fix: {_hint(type_name)}.",
                global_name=gname, type_name=type_name) from exc
        by = "value" if (_travels_by_value(value) or not isinstance(value, (type, types.FunctionType))
                         ) else "reference"
        secret = looks_like_secret(gname, value)
        report.append(CapturedGlobal(gname, type_name, size, by, owner, secret))
        if secret:
            warnings.append(f"global {gname!r} used by {owner}() looks like a secret: the image "
                            f"will contain it; pass it with --secret-env {gname} instead (and "
                            f"read os.environ[{gname!r}] in the function)")
        if size > warn_bytes:
            warnings.append(f"global {gname!r} is {_human(size)} pickled; every deploy ships it. "
                            f"Load large data inside the function instead.")
    return report, warnings


# --------------------------------------------------------------------------------------------
# Lock


def _lock(modules: Iterable[str], extra_requirements: Iterable[str], runtime: str,
          dapr: bool = False, signature: str = "request", local: bool = False
          ) -> tuple[tuple[LockEntry, ...], tuple[str, ...], list[str]]:
    """Pin the distributions behind ``modules``, plus what the runtime needs to serve the
    ``runtime`` kind and the ``signature`` shape; return the lock, the requirements passed on
    as written, and the warnings about them. A bare ``--requirements NAME`` is pinned at the
    kernel's version; one with a version the kernel's contradicts replaces the pin in the
    image (the user said so) and is warned about (:mod:`ofnotebook.requirements`)."""
    parsed = reqs.parse(extra_requirements)
    notes = reqs.check_local(parsed) if local else []
    mapping = _packages_distributions()
    by_dist: dict[str, set[str]] = collections.defaultdict(set)
    for module in modules:
        top = _top(module)
        if top in _STDLIB:
            continue
        for dist in mapping.get(top, ()):
            by_dist[dist].add(top)
    for dist in (RUNTIME_DISTRIBUTIONS[runtime] + (("dapr",) if dapr else ())
                 + SHAPE_DISTRIBUTIONS.get(signature, ())):
        by_dist[dist].add("ofnotebook.runtime")
    passthrough: list[str] = []
    for text, req in parsed:
        if req is not None and not (req.specifier or req.extras or req.marker or req.url):
            by_dist[req.name].add("--requirements")
        else:
            passthrough.append(text)
    entries: dict[str, LockEntry] = {}
    for dist, tops in by_dist.items():
        try:
            meta = importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            raise CaptureError(
                f"Requirement {dist!r} is not installed in this kernel, so its version cannot be "
                f"pinned. Install it first (%pip install {dist}) or give a version "
                f"(--requirements '{dist}==X.Y').") from None
        canonical = meta.metadata["Name"]
        key = canonicalize_name(canonical)
        previous = entries.get(key)
        modules_ = tuple(sorted(tops | set(previous.modules if previous else ())))
        entries[key] = LockEntry(canonical, meta.version, modules_)
    for text, req in parsed:
        pinned = entries.get(canonicalize_name(req.name)) if req is not None else None
        if (not local and req is not None and pinned is not None and req.specifier
                and reqs.applies(req) and not reqs.satisfied(req, pinned.version)):
            del entries[canonicalize_name(req.name)]  # pip could not install both lines
            notes.append(reqs.contradiction(text, req, pinned.version, local=False))
    lock = tuple(sorted(entries.values(), key=lambda e: e.distribution.lower()))
    return lock, tuple(passthrough), notes


# --------------------------------------------------------------------------------------------
# Entry point


def capture(fn: Callable[..., Any], *, runtime: str = "sync", entry: str | None = None,
            requirements: Iterable[str] = (), dapr: bool = False,
            signature: str | None = None, max_global_mb: float | None = None,
            warn_global_mb: float | None = None, target: str | None = None) -> Capture:
    """Capture ``fn`` for deployment; raise :class:`CaptureError` with the fix when it cannot be.

    ``dapr`` adds the Dapr SDK to the lock, for sync functions that send to outputs;
    ``signature`` (one of :data:`SIGNATURES`) overrides the detected call shape. A function
    under a functions-framework decorator is captured without the decorator's wrapper (which
    only passes the arguments on), so the image needs no functions-framework. ``target``
    ``"local"`` checks the requirements against the kernel (the local target installs
    nothing); an image target has them checked against the index before its build.
    """
    if not isinstance(fn, types.FunctionType):
        raise CaptureError(
            f"{fn!r} is not a Python function; deploy a function defined with 'def'.")
    signature = _shape(fn, runtime, signature)
    fn = cast(types.FunctionType, shapes.unwrap(fn))
    max_bytes = config.get("max_global_mb", max_global_mb) * _MB
    warn_bytes = config.get("warn_global_mb", warn_global_mb) * _MB
    walked: list[types.FunctionType] = []
    globals_report, warnings = _report_globals(fn, warn_bytes, walked)

    recorder = _Recorder()
    registered: list[types.ModuleType] = []
    try:
        for _ in range(5):
            try:
                payload = _dumps(fn, recorder)
            except Exception as exc:
                raise CaptureError(f"Cannot pickle {fn.__name__}(): {exc}.") from exc
            referenced = _pickled_globals(payload) | recorder.modules
            new_local = {_top(m) for m in referenced if _is_local_module(_top(m))} - {
                m.__name__ for m in registered}
            if not new_local:
                break
            for name in sorted(new_local):
                module = sys.modules[name]
                cloudpickle.register_pickle_by_value(module)
                registered.append(module)
    finally:
        for module in registered:
            cloudpickle.unregister_pickle_by_value(module)

    if len(payload) > max_bytes:
        biggest = sorted(globals_report, key=lambda g: -g.size)[:3]
        raise CaptureError(
            f"The payload of {fn.__name__}() is {_human(len(payload))}, over the limit of "
            f"{_human(int(max_bytes))} (largest globals: "
            f"{', '.join(f'{g.name} {_human(g.size)}' for g in biggest)}). Load the data inside "
            f"the function, or raise OFNOTEBOOK_MAX_GLOBAL_MB.")

    requirements = list(requirements)
    covered = {canonicalize_name(r.name) for _, r in reqs.parse(requirements) if r is not None}
    local = target == "local"
    found, body_modules, body_notes = reqs.imports_to_lock(walked, covered, local, _STDLIB)
    modules = {m for m in referenced if not _is_local_module(_top(m))} | body_modules
    lock, passthrough, requirement_notes = _lock(modules, requirements, runtime, dapr, signature,
                                                 local)
    warnings += body_notes + requirement_notes
    if passthrough:
        lock = lock + tuple(LockEntry(req, "", ("--requirements",)) for req in passthrough)
    return Capture(
        function=fn,
        entry=entry or fn.__name__,
        signature=signature,
        payload=payload,
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        lock=lock,
        local_modules=tuple(sorted(m.__name__ for m in registered)),
        globals=tuple(globals_report),
        sources=recorder.sources,
        python_version=".".join(map(str, sys.version_info[:3])),
        cloudpickle_version=cloudpickle.__version__,
        warnings=tuple(warnings),
        body_imports=tuple(found),
    )
