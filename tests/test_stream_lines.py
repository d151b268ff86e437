"""Followed logs arrive in chunks that are not lines (engine frames, API server chunks)."""

from __future__ import annotations

from typing import Iterator

from ofnotebook.backends.base import stream_lines


def test_lines_are_joined_across_chunks_and_utf8_is_decoded_across_them() -> None:
    text = "héllo wörld\r\nsecond line\nlast without newline".encode()
    cut = text.index("é".encode()) + 1  # inside the two bytes of é
    chunks = [text[:cut], text[cut:9], text[9:20], text[20:]]
    assert list(stream_lines(chunks)) == ["héllo wörld", "second line",
                                          "last without newline"]


def test_a_stream_that_breaks_ends_like_one_that_finished() -> None:
    def broken() -> Iterator[bytes]:
        yield b"complete\npart"
        raise ConnectionError("the pod went")

    assert list(stream_lines(broken())) == ["complete", "part"]


def test_a_consumer_that_stops_early_closes_the_generator_cleanly() -> None:
    lines = stream_lines([b"a\nb\nc\n"])
    assert next(lines) == "a"
    lines.close()  # no RuntimeError: nothing is yielded while closing
