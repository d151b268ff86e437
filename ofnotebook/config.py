"""Settings: an explicit argument wins, then ``OFNOTEBOOK_<KEY>`` in the environment, then the default.

This is the only module that reads ``OFNOTEBOOK_*`` settings, so a backend never hides a
setting the user cannot see in one place. (``OFNOTEBOOK_TRACEBACK`` is a switch of how errors
print, read by :mod:`ofnotebook.errors` itself: this module imports the errors.)
"""

from __future__ import annotations

import os
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


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One setting: its env variable, its default and how to parse a string value."""

    key: str
    default: Callable[[], T]
    parse: Callable[[str], T]
    help: str

    @property
    def env_var(self) -> str:
        """``OFNOTEBOOK_<KEY>``: derived, never spelled by hand, so the variable a message
        names is always the one that is read."""
        return f"OFNOTEBOOK_{self.key.upper()}"

    def resolve(self, explicit: Any = UNSET) -> T:
        """Return the explicit value, else the env value, else the default."""
        if explicit is not UNSET and explicit is not None:
            return explicit  # type: ignore[no-any-return]
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
        Setting("base_image", lambda: "", str,
                "an image reference; default python:<major>.<minor>-slim of the notebook"),
        Setting("registry", lambda: "", str, "a registry host[:port] to push images to"),
        Setting("registry_user", lambda: "", str,
                "the user name for the target registry (with OFNOTEBOOK_REGISTRY_PASSWORD)"),
        Setting("registry_password", lambda: "", str,
                "the password or access token for the target registry"),
        Setting("registry_ca", lambda: "", str,
                "a PEM file of CA certificates trusted for registries, besides the system's"),
        Setting("insecure_registries", lambda: "", str,
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
