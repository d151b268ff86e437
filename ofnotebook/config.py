"""Settings: an explicit argument wins, then ``OFNOTEBOOK_<KEY>`` in the environment, then the default.

This is the only module that reads ``OFNOTEBOOK_*`` settings, so a backend never hides a
setting the user cannot see in one place. (``OFNOTEBOOK_TRACEBACK`` is a switch of how errors
print, read by :mod:`ofnotebook.errors` itself: this module imports the errors.)
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class _Unset:
    """Sentinel for "not given", distinct from ``None``."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()

DEFAULT_TARGET = "local"
DEFAULT_RUNTIME = "sync"
DEFAULT_VERSION = "latest"
DEFAULT_PORT = 8080
DEFAULT_WARN_GLOBAL_MB = 10.0
DEFAULT_MAX_GLOBAL_MB = 200.0
DEFAULT_START_TIMEOUT = 30.0
DEFAULT_INVOKE_TIMEOUT = 60.0
DEFAULT_LOG_LINES = 2000
#: How often the local stand-in delivers an event before it dead-letters it (the value of
#: ``ofnotebook.sidecar.delivery.DEFAULT_ATTEMPTS``; config imports no other layer).
DEFAULT_DELIVERY_ATTEMPTS = 8
WIDGET_MODES = ("auto", "on", "off")
BUILD_MODES = ("auto", "engine", "registry", "cluster")
DEFAULT_PLATFORM = "linux/amd64"


def _to_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be positive")
    return number


def _to_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be positive")
    return number


#: A registry's form, for messages: where each part of ``registry_name`` is shown.
REGISTRY_FORM = ("HOST[:PORT][/NAMESPACE], such as 127.0.0.1:5000 or "
                 "registry.example:443/team")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_PATH_PART = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


def registry_host(value: str) -> str:
    """``HOST[:PORT]`` of a registry (a lower-case DNS name, an IPv4 address or a bracketed
    IPv6 one; a port 1-65535), or ValueError naming what is wrong."""
    host, port = value, ""
    if value.startswith("["):
        inner, bracket, rest = value[1:].partition("]")
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise ValueError(f"{value!r} is no bracketed IPv6 address") from None
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{value!r} is no bracketed IPv6 address")
        port = rest[1:] if rest else ""
        if rest and not port:
            raise ValueError("the port after ':' is empty")
    else:
        host, colon, port = value.partition(":")
        if colon and not port:
            raise ValueError("the port after ':' is empty")
        if not host:
            raise ValueError("the host is empty")
        if host != host.lower():
            raise ValueError(f"the host {host!r} has upper case letters: host names are "
                             f"written in lower case, {value.lower()!r}")
        if not all(_LABEL.match(label) for label in host.split(".")):
            raise ValueError(f"{host!r} is not a host name: dot-separated labels of a-z, 0-9 "
                             f"and inner '-'")
    if port and (not port.isdigit() or not 1 <= int(port) <= 65535):
        raise ValueError(f"the port {port!r} is not a number from 1 to 65535")
    return value


def registry_name(value: str) -> str:
    """A registry to push to, ``HOST[:PORT][/NAMESPACE]`` (what ``registry.reference``'s
    ``split_registry`` reads); ValueError names the cause: a scheme (plain HTTP is chosen
    by OFNOTEBOOK_INSECURE_REGISTRIES, not by ``http://``), spaces, an upper-case host, a bad
    port, a namespace that is no repository path. A trailing ``/`` is dropped."""
    if _SCHEME.match(value):
        scheme = value.split("://", 1)[0]
        raise ValueError(f"drop the scheme {scheme + '://'!r}: a registry is named by its host; "
                         f"plain HTTP goes to loopback hosts and to those listed in "
                         f"OFNOTEBOOK_INSECURE_REGISTRIES")
    if not value.strip():
        raise ValueError("it is empty")
    if any(c.isspace() for c in value):
        raise ValueError("it contains spaces")
    host, _, path = value.rstrip("/").partition("/")
    registry_host(host)
    if path and not all(_PATH_PART.match(part) for part in path.split("/")):
        raise ValueError(f"the namespace {path!r} is not a repository path: lower-case "
                         f"a-z and 0-9 with '.', '_' or '-' between, parts separated by '/', "
                         f"no tag")
    return value.rstrip("/")


def _hosts(value: str) -> str:
    """Comma-separated ``HOST[:PORT]`` entries (OFNOTEBOOK_INSECURE_REGISTRIES)."""
    for entry in value.split(","):
        if entry.strip():
            registry_host(entry.strip())
    return value


def _image(value: str) -> str:
    """An image reference, roughly (``registry.reference.Reference`` parses it fully)."""
    if _SCHEME.match(value) or any(c.isspace() for c in value):
        raise ValueError("an image reference has no scheme and no spaces")
    return value


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One setting: its env variable, its default and how to parse a string value.

    ``explicit`` settings parse an explicit string too (``deploy(registry=...)``,
    ``--registry``, which reach the backends through :func:`get`): the argument is checked
    where it enters, as the variable is."""

    key: str
    default: Callable[[], T]
    parse: Callable[[str], T]
    help: str
    explicit: bool = False

    @property
    def env_var(self) -> str:
        """``OFNOTEBOOK_<KEY>``: derived, never spelled by hand, so the variable a message
        names is always the one that is read."""
        return f"OFNOTEBOOK_{self.key.upper()}"

    def resolve(self, explicit: Any = UNSET) -> T:
        """Return the explicit value, else the env value, else the default."""
        if explicit is not UNSET and explicit is not None:
            if not self.explicit or explicit == "":  # "": none, as before
                return explicit  # type: ignore[no-any-return]
            try:
                if not isinstance(explicit, str):
                    raise TypeError(f"a {type(explicit).__name__}, not a string")
                return self.parse(explicit)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{self.key}={explicit!r} is not a valid value ({exc}); "
                                  f"expected {self.help}. Fix --{self.key} (in deploy(): "
                                  f"target_options={{'{self.key}': ...}}).",
                                  key=self.key) from exc
        raw = os.environ.get(self.env_var)
        if raw is None or raw == "":
            return self.default()
        try:
            return self.parse(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"{self.env_var}={raw!r} is not a valid value for {self.key!r} ({exc}); "
                f"expected {self.help}. Unset it or fix the value.", key=self.key) from exc


def _widget_mode(value: str) -> str:
    if value.lower() not in WIDGET_MODES:
        raise ValueError(f"not one of {', '.join(WIDGET_MODES)}")
    return value.lower()


def _build_mode(value: str) -> str:
    if value.lower() not in BUILD_MODES:
        raise ValueError(f"not one of {', '.join(BUILD_MODES)}")
    return value.lower()


def _platform(value: str) -> str:
    """``os/arch[/variant]`` as in an image index (``linux/amd64``, ``linux/arm64/v8``)."""
    parts = value.strip().lower().split("/")
    if len(parts) not in (2, 3) or not all(p.isalnum() for p in parts):
        raise ValueError("expected os/arch[/variant], such as linux/amd64")
    return "/".join(parts)


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ofnotebook"


SETTINGS: dict[str, Setting[Any]] = {
    s.key: s for s in (
        Setting("target", lambda: DEFAULT_TARGET, str, "a target name such as 'local'"),
        Setting("cache_dir", _default_cache_dir, Path, "a directory path"),
        Setting("warn_global_mb", lambda: DEFAULT_WARN_GLOBAL_MB, _to_float,
                "a positive number of megabytes"),
        Setting("max_global_mb", lambda: DEFAULT_MAX_GLOBAL_MB, _to_float,
                "a positive number of megabytes"),
        Setting("start_timeout", lambda: DEFAULT_START_TIMEOUT, _to_float,
                "a positive number of seconds"),
        Setting("invoke_timeout", lambda: DEFAULT_INVOKE_TIMEOUT, _to_float,
                "a positive number of seconds"),
        Setting("log_lines", lambda: DEFAULT_LOG_LINES, _to_int,
                "a positive number of lines"),
        Setting("delivery_attempts", lambda: DEFAULT_DELIVERY_ATTEMPTS, _to_int,
                "a positive number of deliveries before an event is dead-lettered (0 would "
                "dead-letter every event unseen)"),
        Setting("base_image", lambda: "", _image,
                "an image reference; default python:<major>.<minor>-slim of the notebook"),
        Setting("registry", lambda: "", registry_name,
                f"a registry to push images to, {REGISTRY_FORM}", explicit=True),
        Setting("registry_user", lambda: "", str,
                "the user name for the target registry (with OFNOTEBOOK_REGISTRY_PASSWORD)"),
        Setting("registry_password", lambda: "", str,
                "the password or access token for the target registry"),
        Setting("registry_ca", lambda: "", str,
                "a PEM file of CA certificates trusted for registries, besides the system's"),
        Setting("insecure_registries", lambda: "", _hosts,
                "comma-separated host[:port] of registries reached over plain HTTP"),
        Setting("yaml_dir", lambda: Path("ofnotebook-manifests"), Path,
                "a directory the yaml target writes functions into"),
        Setting("function_crd", lambda: "", str,
                "the path of the OpenFunction Function CRD to validate manifests against"),
        Setting("build", lambda: "auto", _build_mode,
                "how images are made: auto (the engine when a Docker API answers, else "
                "registry), engine, registry or cluster"),
        Setting("platform", lambda: DEFAULT_PLATFORM, _platform,
                "the image platform os/arch[/variant], such as linux/amd64"),
        Setting("widgets", lambda: "auto", _widget_mode,
                "auto (widgets in a Jupyter kernel), on or off (text only)"),
    )
}


def get(key: str, explicit: Any = UNSET) -> Any:
    """Resolve setting ``key`` (argument > ``OFNOTEBOOK_<KEY>`` > default)."""
    try:
        setting = SETTINGS[key]
    except KeyError:
        raise ConfigError(f"Unknown setting {key!r}; known: {', '.join(sorted(SETTINGS))}.",
                          key=key) from None
    return setting.resolve(explicit)


def check() -> None:
    """Read every ``OFNOTEBOOK_*`` setting now (raises ``ConfigError`` naming the variable):
    a deploy calls it first, so a bad value is refused before anything starts, also one a
    later part (the stand-in's ``OFNOTEBOOK_DELIVERY_ATTEMPTS``) would read only once running.
    Nothing is cached: a value changed in the kernel counts at the next deploy."""
    for setting in SETTINGS.values():
        setting.resolve()
