"""Go's conventions as daprd applies them, written once for every driver and the envelope.

daprd is written in Go, so the component metadata and the event bytes it produces follow Go's
standard library and dapr/kit. A local stand-in that parses them differently accepts what
daprd refuses (or the reverse), so every driver reads durations and booleans here:

* :func:`parse_duration` is ``time.ParseDuration``: a bare number is an error (only ``0``
  passes). It is what robfig/cron's ``@every`` uses.
* :func:`metadata_duration` is dapr/kit's ``DecodeMetadata`` hook for ``time.Duration`` fields
  (``toTimeDurationHookFunc``): a Go duration, else a bare integer counted in **seconds**
  (``metadata_durations`` the ``[]time.Duration`` hook, for ``backOff``).
  Every ``time.Duration`` component field goes through it: redis ``processingTimeout``,
  ``redeliverInterval``, ``streamTTL``; kafka ``sessionTimeout``, ``heartbeatInterval``;
  jetstream ``ackWait``, ``heartbeat``, ``backOff``.
* :func:`ttl_seconds` is components-contrib's ``TryGetTTL`` for ``ttlInSeconds``/``ttl``
  publish metadata: a Go duration, else a bare integer counted in **seconds**.
* :func:`parse_bool` is ``strconv.ParseBool`` (``1 t T TRUE true True`` and their false
  twins); :func:`is_truthy` is dapr/kit's ``utils.IsTruthy``, which ``DecodeMetadata`` applies
  to ``bool`` fields (adds ``y``, ``yes``, ``on``, any case; anything else is false).
* :func:`format_duration` is ``time.Duration.String`` and :func:`go_json` ``json.Marshal``.

Durations are returned as float seconds, the unit Python's timeouts take.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, Mapping

__all__ = ["GoNumber", "MAX_DURATION", "format_duration", "go_json", "is_truthy",
           "metadata_duration", "metadata_durations", "parse_bool", "parse_duration",
           "replace_surrogates", "ttl_seconds"]

#: Go's ``time.Duration`` limit, in seconds.
MAX_DURATION = (2**63 - 1) / 1e9
_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9,
       "m": 60 * 10**9, "h": 3600 * 10**9}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION = re.compile(rf"([-+]?)(0|(?:{_PART.pattern})+)")
_INTEGER = re.compile(r"[-+]?\d+")
_TRUE = frozenset("1 t T TRUE true True".split())
_FALSE = frozenset("0 f F FALSE false False".split())
_TRUTHY = frozenset("1 t true y yes on".split())
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_duration(text: str) -> float:
    """``time.ParseDuration``: seconds in ``"1m30s"``, ``"500ms"``, ``"-1.5h"`` or ``"0"``.

    Raises ``ValueError`` (with Go's wording) for anything else, a bare number included, and
    for a duration beyond Go's int64 nanoseconds.
    """
    sign, total = _nanoseconds(text)
    if total > 2**63 - (0 if sign == "-" else 1):
        raise ValueError(f"time: invalid duration {text!r} (out of range)")
    seconds = float(total) / 1e9
    return -seconds if sign == "-" else seconds


def _nanoseconds(text: str) -> tuple[str, Decimal]:
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"time: invalid duration {text!r}")
    sign, body = match.group(1), match.group(2)
    if body == "0":
        return sign, Decimal(0)
    return sign, sum((Decimal(n) * _NS[u] for n, u in _PART.findall(body)), Decimal(0))


def metadata_duration(text: str) -> float:
    """A ``time.Duration`` component field as dapr/kit's ``DecodeMetadata`` hook decodes it
    (``metadata/duration.go``): empty is 0; a Go duration; else ``strconv.ParseInt`` of whole
    **seconds** (no trimming, no fraction). Raises ``ValueError`` naming what is accepted."""
    if text == "":
        return 0.0
    try:
        return parse_duration(text)
    except ValueError:
        if _INTEGER.fullmatch(text):
            return float(int(text))
        raise ValueError(f"{text!r} is not a duration such as 500ms, 30s or 1m "
                         "(a bare number counts seconds)") from None


def metadata_durations(text: str) -> list[float]:
    """A ``[]time.Duration`` field (``backOff``) as dapr/kit decodes it
    (``metadata/string_decoders.go``): comma-separated, each part trimmed, empty parts
    skipped, each part as :func:`metadata_duration`."""
    return [metadata_duration(part.strip()) for part in text.split(",") if part.strip()]


def ttl_seconds(text: str) -> float | None:
    """``TryGetTTL``: a Go duration (negative clamps to 0) or a positive integer of seconds;
    ``None`` when daprd would ignore the value."""
    try:  # Go clamps a negative TTL to 0 and daprd caps a huge one at the int64 limit
        sign, total = _nanoseconds(text)
        return 0.0 if sign == "-" else min(float(total) / 1e9, MAX_DURATION)
    except ValueError:
        pass
    if _INTEGER.fullmatch(text) and int(text) > 0:
        return min(float(text), MAX_DURATION)
    return None


_MISSING: Any = object()


def parse_bool(text: str, default: bool = _MISSING) -> bool:
    """``strconv.ParseBool``. Without ``default`` an unknown value raises ``ValueError``; with
    it, the default is kept, as daprd's components that ignore a value they cannot parse."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if default is _MISSING:
        raise ValueError(f"strconv.ParseBool: parsing {text!r}: invalid syntax")
    return default


def is_truthy(text: str) -> bool:
    """dapr/kit ``utils.IsTruthy``: ``1 t true y yes on`` in any case and spacing."""
    return text.strip().lower() in _TRUTHY


def format_duration(seconds: float) -> str:
    """``time.Duration.String``: ``500ns``, ``12µs``, ``1.5ms``, ``2.5s``, ``1h2m5s``, ``0s``."""
    ns = int(seconds * 1e9)
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)

    def num(x: float) -> str:
        return f"{x:.9f}".rstrip("0").rstrip(".")

    if ns == 0:
        return "0s"
    if ns < 1000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{num(ns / 1e3)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{num(ns / 1e6)}ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = f"{hours}h" if hours else ""
    text += f"{minutes}m" if hours or minutes else ""
    return sign + text + f"{num(rest / 1e9)}s"


class GoNumber(float):
    """A JSON number that keeps its text, as Go's ``json.Number`` (``UseNumber``) does."""

    text: str

    def __new__(cls, text: str) -> GoNumber:
        number = super().__new__(cls, text)
        number.text = text
        return number


def go_json(value: Any, *, keep_numbers: bool = False) -> str:
    """Go's ``json.Marshal`` of a decoded JSON value, so that local bytes equal daprd's.

    Sorted keys, compact, ``<>&`` and U+2028/9 escaped; numbers as float64 (``1.0`` -> ``1``), as
    after daprd's ``json.Unmarshal``. ``keep_numbers`` writes parsed numbers as written, as the
    publisher side does (it decodes with ``UseNumber``).
    """
    if _plain(value, keep_numbers):
        return _go_escape(json.dumps(value, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False))
    return _go_json(value, keep_numbers)


#: Integers a float64 holds exactly: written as Python writes them, they are Go's text too.
_EXACT_INT = 2**53


def _plain(value: Any, keep_numbers: bool) -> bool:
    """Whether ``value`` holds only what Python's C encoder writes as Go does (``str`` keys,
    strings, booleans, null, integers Go writes alike): then :func:`go_json` is one
    ``json.dumps`` and a pass of escapes over its text, not a walk in Python. Events are
    almost always such values; floats take the walk (Go's float formatting is its own)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return keep_numbers or -_EXACT_INT <= value <= _EXACT_INT
    if kind is dict:
        return all(type(k) is str and _plain(v, keep_numbers) for k, v in value.items())
    if kind is list:
        return all(_plain(v, keep_numbers) for v in value)
    return False


def _go_escape(encoded: str) -> str:
    """Go's escapes over JSON text: ``<``, ``>``, ``&``, U+2028/9 and lone surrogates can
    only occur inside its strings, so replacing them in the whole text is replacing them in
    each string."""
    if _SURROGATE.search(encoded):
        encoded = replace_surrogates(encoded)
    for char, escape in _GO_ESCAPES:
        if char in encoded:
            encoded = encoded.replace(char, escape)
    return encoded


_GO_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
               ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def _go_json(value: Any, keep_numbers: bool) -> str:
    """The walk: every value Go's encoder writes in a way of its own (floats, GoNumber)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, str):
        return _go_string(value)
    if keep_numbers and isinstance(value, GoNumber):
        return value.text
    if keep_numbers and isinstance(value, int):
        return str(value)
    if isinstance(value, (int, float)):
        return _go_float(float(value))
    if isinstance(value, Mapping):
        items = sorted(((str(k), v) for k, v in value.items()), key=lambda item: item[0])
        return "{" + ",".join(
            f"{_go_string(k)}:{_go_json(v, keep_numbers)}" for k, v in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_go_json(v, keep_numbers) for v in value) + "]"
    raise TypeError(f"json: unsupported type: {type(value).__name__}")


def replace_surrogates(text: str) -> str:
    """What Go's UTF-8 handling makes of lone surrogates: U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def _go_string(text: str) -> str:
    return _go_escape(json.dumps(text, ensure_ascii=False))


def _go_float(number: float) -> str:
    """Go's float64 encoder: shortest round-trip digits, Go's choice of plain or exponent form."""
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"json: unsupported value: {number!r}")
    digits = Decimal(repr(number)).normalize()
    if number == 0 or 1e-6 <= abs(number) < 1e21:
        return format(digits, "f")
    sign, figures, exponent = digits.as_tuple()
    mantissa = "".join(map(str, figures))
    exponent = int(exponent) + len(mantissa) - 1
    mantissa = mantissa[0] + ("." + mantissa[1:] if len(mantissa) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent)}"
