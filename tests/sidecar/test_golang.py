"""Go's conventions as daprd applies them (``ofnotebook.sidecar.golang``): pure functions."""

from __future__ import annotations

import pytest

from ofnotebook.sidecar.golang import (MAX_DURATION, format_duration, is_truthy,
                                       metadata_duration, metadata_durations, parse_bool,
                                       parse_duration, ttl_seconds)


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0.0), ("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("1.5h", 5400.0),
    ("-2s", -2.0), ("+3s", 3.0), (".5s", 0.5), ("1.s", 1.0), ("1us", 1e-6), ("2µs", 2e-6),
    ("3μs", 3e-6), ("7ns", 7e-9), ("1h2m3s4ms", 3723.004)])
def test_parse_duration_is_go_time_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "1.5", "s", "1d", "1 s", "10S", ".s", "--1s",
                                  "3000000h"])
def test_parse_duration_refuses_what_go_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_metadata_duration_counts_a_bare_number_in_seconds() -> None:
    """dapr/kit metadata/duration.go: ParseDuration, else ParseInt seconds; "" is 0."""
    assert metadata_duration("300") == 300.0
    assert metadata_duration("300ms") == 0.3
    assert metadata_duration("-5") == -5.0
    assert metadata_duration("") == 0.0
    assert metadata_duration("0") == 0.0
    with pytest.raises(ValueError, match="500ms, 30s or 1m"):
        metadata_duration("soon")
    with pytest.raises(ValueError):
        metadata_duration("1.5")  # ParseInt: no fraction
    with pytest.raises(ValueError):
        metadata_duration(" 2s ")  # Go trims nothing here


def test_metadata_durations_is_the_array_hook() -> None:
    """dapr/kit string_decoders.go: split on commas, trim each part, skip empty ones."""
    assert metadata_durations("1s, 2,500ms,") == [1.0, 2.0, 0.5]
    assert metadata_durations("") == []
    with pytest.raises(ValueError):
        metadata_durations("1s,soon")


def test_ttl_counts_a_bare_number_in_seconds_and_ignores_what_daprd_ignores() -> None:
    assert ttl_seconds("90") == 90.0
    assert ttl_seconds("1m30s") == 90.0
    assert ttl_seconds("-5s") == 0.0  # Go clamps a negative duration
    assert ttl_seconds("9999999999h") == MAX_DURATION
    assert ttl_seconds("0") == 0.0
    for ignored in ("", "-5", "soon", "1.5"):
        assert ttl_seconds(ignored) is None


def test_parse_bool_is_strconv_parse_bool() -> None:
    for text in ("1", "t", "T", "TRUE", "true", "True"):
        assert parse_bool(text) is True
    for text in ("0", "f", "F", "FALSE", "false", "False"):
        assert parse_bool(text) is False
    for text in ("yes", "tRuE", " true", ""):
        with pytest.raises(ValueError, match="invalid syntax"):
            parse_bool(text)
    assert parse_bool("yes", default=True) is True
    assert parse_bool("maybe", default=False) is False


def test_is_truthy_is_dapr_kit_is_truthy() -> None:
    for text in ("1", "t", "true", "TRUE", "y", "Yes", " on "):
        assert is_truthy(text)
    for text in ("", "0", "false", "no", "off", "2", "enabled"):
        assert not is_truthy(text)


def test_format_duration_is_go_duration_string() -> None:
    assert format_duration(0.0000005) == "500ns"
    assert format_duration(0.0015) == "1.5ms"
    assert format_duration(0.000012) == "12µs"
    assert format_duration(2.5) == "2.5s"
    assert format_duration(3725.0) == "1h2m5s"
    assert format_duration(3600.0) == "1h0m0s"
    assert format_duration(0.0) == "0s"
    assert format_duration(-1.5) == "-1.5s"
