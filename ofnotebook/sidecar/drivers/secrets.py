"""Local secret stores: ``secretstores.local.env`` and ``secretstores.local.file``, as daprd's
(components-contrib ``secretstores/local/{env,file}``).

* ``local.env`` reads the stand-in's environment, which is the notebook kernel's: ``prefix``
  limits it to the variables that start with it (and is removed from the names), and
  ``DAPR_*`` and ``APP_API_TOKEN`` are never given out. A missing variable reads as an empty
  value, not an error, as in daprd.
* ``local.file`` reads a JSON file once, at start: nested objects and arrays become keys joined
  with ``nestedSeparator`` (default ``:``), values become text; with ``multiValued: "true"``
  each top-level key is one secret holding its own (flattened) key/value pairs. A missing key is
  an error (``secret KEY not found``); numbers and booleans read as daprd prints them
  (``%!s(float64=1)``: quote them in the file). A relative ``secretsFile`` is resolved against the
  stand-in's working directory, which is the notebook's.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..golang import parse_bool
from .base import ComponentError, Driver


def _allowed(name: str) -> bool:
    """daprd keeps its own variables (and the app's token) out of the env secret store."""
    upper = name.upper()
    return upper != "APP_API_TOKEN" and not upper.startswith("DAPR_")


class EnvSecretStore(Driver):
    """``secretstores.local.env``: the environment of the stand-in (the kernel's)."""

    def _start(self) -> None:
        self._prefix = self.component.get("prefix")

    def _get_secret(self, key: str) -> dict[str, str]:
        name = self._prefix + key
        return {key: os.environ.get(name, "") if _allowed(name) else ""}

    def _bulk_secret(self) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {}
        for name, value in os.environ.items():
            if len(name) <= len(self._prefix) or not name.startswith(self._prefix) \
                    or not _allowed(name):
                continue
            key = name[len(self._prefix):]
            found[key] = {key: value}
        return found


class FileSecretStore(Driver):
    """``secretstores.local.file``: a JSON file read once when the component starts."""

    def _start(self) -> None:
        path = self.component.get("secretsFile")
        if not path:
            raise ComponentError(f"component {self.name!r} (secretstores.local.file): missing "
                                 "local secrets file in metadata; set secretsFile=PATH (a JSON "
                                 "file)")
        self._separator = self.component.get("nestedSeparator", ":")
        try:
            with open(path, encoding="utf-8") as file:
                document = json.load(file)
        except OSError as exc:
            raise ComponentError(f"component {self.name!r} (secretstores.local.file) cannot read "
                                 f"secretsFile {path!r} ({exc.strerror}; the working directory "
                                 f"is {os.getcwd()!r}); fix the path in the component spec"
                                 ) from None
        except ValueError as exc:
            raise ComponentError(f"component {self.name!r} (secretstores.local.file): "
                                 f"secretsFile {path!r} is not JSON ({exc})") from None
        if not isinstance(document, dict):
            raise ComponentError(f"component {self.name!r} (secretstores.local.file): "
                                 f"secretsFile {path!r} must hold a JSON object")
        self._secrets: dict[str, str | dict[str, str]] = {}
        if parse_bool(self.component.get("multiValued", "false"), False):  # mapstructure: ParseBool
            for key, value in document.items():
                if isinstance(value, dict):
                    self._secrets[key] = self._flatten(value)
                elif isinstance(value, str):
                    self._secrets[key] = value
        else:
            self._secrets.update(self._flatten(document))

    def _flatten(self, value: Any, path: tuple[str, ...] = ()) -> dict[str, str]:
        """Leaves of a JSON value under their joined path, as text."""
        if isinstance(value, dict):
            items: list[tuple[str, Any]] = list(value.items())
        elif isinstance(value, list):
            items = [(str(i), v) for i, v in enumerate(value)]
        else:
            return {self._separator.join(path): _go_text(value)}
        flat: dict[str, str] = {}
        for key, item in items:
            flat.update(self._flatten(item, path + (key,)))
        return flat

    def _pairs(self, key: str, value: str | dict[str, str]) -> dict[str, str]:
        return {key: value} if isinstance(value, str) else dict(value)

    def _get_secret(self, key: str) -> dict[str, str]:
        if key not in self._secrets:
            raise ComponentError(f"secret {key} not found")
        return self._pairs(key, self._secrets[key])

    def _bulk_secret(self) -> dict[str, dict[str, str]]:
        return {key: self._pairs(key, value) for key, value in self._secrets.items()}


def _go_text(value: Any) -> str:
    """A JSON leaf as daprd's file store writes it, ``fmt.Sprintf("%s", v)``: text stays text,
    but a number or boolean reads ``%!s(float64=5432)`` / ``%!s(bool=true)`` there too, so a
    secret that works here works under daprd (quote numbers in the file)."""
    if value is None:
        return "%!s(<nil>)"
    if isinstance(value, bool):
        return "%!s(bool=" + ("true" if value else "false") + ")"
    if isinstance(value, (int, float)):
        number = float(value)
        text = repr(number) if not number.is_integer() else str(int(number))
        return f"%!s(float64={text})"
    return str(value)
