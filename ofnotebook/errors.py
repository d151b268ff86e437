"""The ofnotebook exception tree.

Every failure the library expects raises a subclass of :class:`OfnotebookError`, so a
notebook shows one short message (see ``_render_traceback_``) instead of a traceback wall,
while scripts, nbval and papermill runs still fail because the exception is raised::

    OfnotebookError
    ├── ConfigError             a setting has a bad value
    ├── CaptureError            the function or its globals cannot be captured
    │   └── UnpicklableGlobalError
    ├── PackageError            the build context cannot be written
    ├── BackendUnavailableError a target is unknown or its extra is not installed
    ├── DeployError             the function did not start or stopped unexpectedly
    │   └── BuildError          its image could not be built, pushed or checked
    └── InvocationError         a call to the deployed function failed in transport
        ├── RemoteFunctionError the function itself raised; carries the remote traceback
        └── UnsupportedError    the target cannot do that from the notebook (names what can)

Set ``OFNOTEBOOK_TRACEBACK=1`` to get full Python tracebacks in the notebook again.
"""

from __future__ import annotations

import os
from typing import Any


class OfnotebookError(Exception):
    """Every error ofnotebook raises on purpose: one ``except`` tells "ofnotebook refused or
    failed, with a message that says the fix" from a bug, and IPython prints it short (one
    line, no traceback) because the message, not the stack, is what the user needs."""

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of formatting the traceback; a list of lines is expected.
        if os.environ.get("OFNOTEBOOK_TRACEBACK", "") not in ("", "0"):
            import traceback

            return traceback.format_exception(type(self), self, self.__traceback__)
        if getattr(self, "shown_in_view", False):  # the live view shows it all, folded
            first = str(self).splitlines()[0] if str(self) else ""
            return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {first} (details in the view "
                    f"above)"]
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self}"]


class ConfigError(OfnotebookError):
    """A setting (argument or ``OFNOTEBOOK_*`` variable) has a bad value: the user fixes an
    input, not the code; ``key`` names the setting so a caller can point at it."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class CaptureError(OfnotebookError):
    """The cell or its function cannot be captured: nothing was packaged or started, and the
    fix is in the cell."""


class UnpicklableGlobalError(CaptureError):
    """A global the function uses cannot travel (a lock, socket, client...): its own class,
    with ``global_name`` and ``type_name``, because the fix is always the same (create it
    inside the function) and the view names the global."""

    def __init__(self, message: str, *, global_name: str, type_name: str) -> None:
        super().__init__(message)
        self.global_name = global_name
        self.type_name = type_name


class PackageError(OfnotebookError):
    """The build context cannot be written (disk, cache folder, an unreadable file): an
    environment problem, apart from the cell's and the target's."""


class BackendUnavailableError(OfnotebookError):
    """A target is unknown or needs an extra that is not installed: raised before anything
    runs, so the user installs the extra or picks another target and nothing is left behind."""


class DeployError(OfnotebookError):
    """A deployment did not start, or died: the package was fine, the target was not.
    ``last_logs`` carries the function's last lines, since the cause is usually in them."""

    def __init__(self, message: str, *, function_name: str | None = None,
                 last_logs: list[str] | None = None) -> None:
        super().__init__(message)
        self.function_name = function_name
        self.last_logs = list(last_logs or [])


class BuildError(DeployError):
    """An image cannot be built or pushed, or its base does not fit the notebook: a deploy
    failure whose fix is in the image (base, requirements, registry), not in the cell."""


class InvocationError(OfnotebookError):
    """A request to a deployed function did not complete (no answer, wrong runtime): the
    deployment exists; calling it failed, so the user retries or checks ``status``."""

    def __init__(self, message: str, *, function_name: str | None = None) -> None:
        super().__init__(message)
        self.function_name = function_name


class RemoteFunctionError(InvocationError):
    """Raised by ``invoke`` when the deployed function raised an exception.

    ``ename``, ``evalue`` and ``traceback`` come from the runtime, so the notebook shows what
    happened inside the function process.
    """

    def __init__(self, ename: str, evalue: str, traceback: str = "", *,
                 function_name: str | None = None) -> None:
        super().__init__(f"{ename}: {evalue}", function_name=function_name)
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_remote_error, (self.ename, self.evalue, self.traceback, self.function_name))

    def _render_traceback_(self) -> list[str]:
        where = f" in function {self.function_name!r}" if self.function_name else ""
        lines = [f"\x1b[0;31mRemoteFunctionError\x1b[0m: the deployed function raised{where}:"]
        lines.extend("    " + line for line in self.traceback.rstrip().splitlines())
        if not self.traceback:
            lines.append(f"    {self.ename}: {self.evalue}")
        return lines


class UnsupportedError(InvocationError):
    """Raised when a target cannot do what the handle was asked from the notebook (send a test
    event, read a state store, report events, be invoked); the message says what to use instead.

    ``target`` and ``verb`` (``"publish"``, ``"read_state"``, ``"events"``, ``"invoke"``) say
    which, so a caller can tell "not here" from "failed".
    """

    def __init__(self, message: str, *, target: str, verb: str,
                 function_name: str | None = None) -> None:
        super().__init__(message, function_name=function_name)
        self.target = target
        self.verb = verb


def _rebuild_remote_error(ename: str, evalue: str, tb: str, function_name: str | None
                          ) -> RemoteFunctionError:
    return RemoteFunctionError(ename, evalue, tb, function_name=function_name)


__all__ = [
    "BackendUnavailableError",
    "BuildError",
    "CaptureError",
    "ConfigError",
    "DeployError",
    "InvocationError",
    "OfnotebookError",
    "PackageError",
    "RemoteFunctionError",
    "UnpicklableGlobalError",
    "UnsupportedError",
]
