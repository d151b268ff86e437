"""``DeployRequest``: the arguments of one deploy, frozen, so a deployment can be made again.

:func:`ofnotebook.deploy` builds one from its arguments; the handle keeps it (``handle.request``)
and its redeploy runs it again. It holds what the caller gave, not what was decided from it
(except the name, which is fixed once the first deploy chose it): the target, runtime and
spec are decided by :mod:`ofnotebook.api` each time.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:
    from .backends.base import Backend


def _frozen(value: Any) -> Any:
    """A read-only copy of a mapping or any other collection given by the caller (a
    generator or a set too: a redeploy must see the same values again); strings and other
    scalars unchanged."""
    if isinstance(value, Mapping):
        return MappingProxyType(dict(value))
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes, bytearray)):
        return tuple(value)
    return value


@dataclass(frozen=True, kw_only=True, eq=False)
class DeployRequest:
    """Everything :func:`ofnotebook.deploy` was asked, except the function itself.

    The fields mirror ``deploy``'s parameters (see its docstring): ``env``, ``inputs``,
    ``outputs``, ``states``, ``components`` and ``target_options`` keep the caller's shape (a mapping or a
    list of ``NAME=VALUE`` strings) as read-only copies.
    """

    name: str | None = None
    runtime: str | None = None
    target: str | Backend | None = None
    entry: str | None = None
    env: Mapping[str, str] | Iterable[str] | None = None
    requirements: tuple[str, ...] = ()
    port: int | None = None
    version: str | None = None
    inputs: Any = None
    outputs: Any = None
    states: Any = None
    base_image: str | None = None
    signature: str | None = None
    include: tuple[str, ...] = ()
    components: Any = None
    target_options: Mapping[str, Any] | None = None
    #: ``--secret-env NAME``: names only; the values are read again at each deploy
    secret_env: tuple[str, ...] = ()
    #: ``--batch N --batch-wait MS``: ``fn(ctx, events)`` with lists of up to N events
    batch: int | None = None
    batch_wait_ms: int | None = None

    def __post_init__(self) -> None:
        for field in ("env", "inputs", "outputs", "states", "components", "target_options"):
            object.__setattr__(self, field, _frozen(getattr(self, field)))
        for field in ("requirements", "include", "secret_env"):
            value = getattr(self, field)
            object.__setattr__(self, field, (value,) if isinstance(value, str) else tuple(value))
