"""ofnotebook: turn a notebook cell into a running OpenFunction function.

In a notebook::

    %load_ext ofnotebook

    %%function --runtime sync
    def greet(request):
        return {"greeting": "hello " + request.args.get("name", "world")}

    greet.invoke(params={"name": "ada"}).json()

In a script: ``ofnotebook.deploy(greet, runtime="sync", target="local")``.

Attributes are imported on first use (PEP 562), so ``%load_ext ofnotebook`` stays fast and
never imports docker, kubernetes or ipywidgets.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    BackendUnavailableError,
    BuildError,
    CaptureError,
    ConfigError,
    DeployError,
    InvocationError,
    OfnotebookError,
    PackageError,
    RemoteFunctionError,
    UnpicklableGlobalError,
    UnsupportedError,
)

__version__ = "0.1.0"

_LAZY = {
    "Capture": "ofnotebook.capture",
    "Component": "ofnotebook.components",
    "ComponentSpec": "ofnotebook.spec",
    "DeployRequest": "ofnotebook.request",
    "FunctionHandle": "ofnotebook.handle",
    "FunctionSpec": "ofnotebook.spec",
    "OutputEvent": "ofnotebook.backends.events",
    "Package": "ofnotebook.package",
    "dapr_env": "ofnotebook.api",
    "deploy": "ofnotebook.api",
    "deployments": "ofnotebook.api",
    "get": "ofnotebook.api",
    "stop": "ofnotebook.api",
    "view_for": "ofnotebook.display",
}

__all__ = sorted([
    "BackendUnavailableError",
    "BuildError",
    "Capture",
    "CaptureError",
    "Component",
    "ComponentSpec",
    "ConfigError",
    "DeployError",
    "DeployRequest",
    "FunctionHandle",
    "FunctionSpec",
    "InvocationError",
    "OfnotebookError",
    "OutputEvent",
    "Package",
    "PackageError",
    "RemoteFunctionError",
    "UnpicklableGlobalError",
    "UnsupportedError",
    "dapr_env",
    "deploy",
    "deployments",
    "get",
    "load_ipython_extension",
    "stop",
    "unload_ipython_extension",
    "view_for",
])


def __getattr__(name: str) -> Any:
    if name == "testing":  # ofnotebook.testing.local_kafka() without importing it first
        return importlib.import_module(f"{__name__}.testing")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ofnotebook' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext ofnotebook``: register ``%%function`` and ``%function``, and how a handle
    displays (its live view, drawn by the view layer); nothing else."""
    from . import display
    from .magics import FunctionMagics

    ipython.register_magics(FunctionMagics)
    display.register(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext ofnotebook``: remove the magics and the display hook (running functions
    keep running)."""
    from . import display

    display.unregister(ipython)
    magics = ipython.magics_manager.magics
    for kind in ("line", "cell"):
        magics[kind].pop("function", None)
