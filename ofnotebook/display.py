"""How a handle shows itself in a notebook: the view layer's registration with IPython.

``load_ipython_extension`` calls :func:`register`: a mimebundle formatter for
:class:`~ofnotebook.handle.FunctionHandle` (so ``display(handle)`` and a cell ending in a
handle draw its live widget when widgets are on) and the provider behind ``handle.view``. The
handle itself never builds a widget. This module imports no ipywidgets:
:mod:`ofnotebook.widget` is imported only when a view is first drawn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import handle as handle_module
from .errors import ConfigError
from .handle import FunctionHandle
from .view import widgets_enabled

if TYPE_CHECKING:
    from .widget import FunctionView

_HANDLE_TYPE = ("ofnotebook.handle", "FunctionHandle")


def view_for(handle: FunctionHandle) -> "FunctionView":
    """The live ipywidgets view of ``handle``: made and attached on first use, then the same
    one (the magic's view, when the handle came from ``%%function``)."""
    from .widget import view_for as widget_view_for

    return widget_view_for(handle)


def handle_bundle(handle: FunctionHandle) -> dict[str, Any] | None:
    """The mimebundle of ``handle`` with widgets on: its live view, whose text/plain twin is
    the handle's repr. ``None`` otherwise, and IPython uses ``__repr__``/``_repr_html_``."""
    try:
        enabled = widgets_enabled()
    except ConfigError:  # a bad OFNOTEBOOK_WIDGETS must not break displaying the handle
        enabled = False
    if not enabled:
        return None
    bundle: dict[str, Any] | None = view_for(handle)._repr_mimebundle_()
    if bundle is not None:
        bundle["text/plain"] = repr(handle)
    return bundle


_decided: dict[int, bool] = {}  # id(shell) -> registered (True) or unloaded (False)


def register(ipython: Any) -> None:
    """Draw handles as their live view in ``ipython``, and let ``handle.view`` make one."""
    formatter = ipython.display_formatter.mimebundle_formatter
    formatter.for_type_by_name(*_HANDLE_TYPE, handle_bundle)
    handle_module.set_view_provider(view_for)
    _decided[id(ipython)] = True


def unregister(ipython: Any) -> None:
    """Undo :func:`register` (views already drawn stay, and keep following their handle)."""
    formatter = ipython.display_formatter.mimebundle_formatter
    # registered by name; once used IPython keeps it by type, and a second registration by
    # name may sit beside that: remove both
    formatter.pop(".".join(_HANDLE_TYPE), None)
    formatter.pop(FunctionHandle, None)
    handle_module.set_view_provider(None)
    _decided[id(ipython)] = False


def register_in_notebook() -> None:
    """For ``ofnotebook.deploy(...)`` in a notebook that never ran ``%load_ext ofnotebook``:
    the handle still draws its live view there, as the extension would make it (unless the
    user unloaded the extension in that shell). Outside IPython, nothing."""
    import sys

    if "IPython" not in sys.modules:
        return
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None and id(shell) not in _decided:
        register(shell)
