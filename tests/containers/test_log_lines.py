"""How a container's log stream becomes lines (no engine needed): log frames are not lines."""

from __future__ import annotations

import threading
from typing import Any, Iterator

from ofnotebook.backends.base import LogBuffer
from ofnotebook.backends.container import ContainerDeployment


class FakeContainer:
    def __init__(self, frames: list[bytes], fail: bool = False) -> None:
        self.frames, self.fail = frames, fail

    def logs(self, **options: Any) -> Iterator[bytes]:
        assert options == {"stream": True, "follow": True}
        yield from self.frames
        if self.fail:  # what the SDK does when the container is removed mid-stream
            raise ConnectionError("the container went away")


def follow(frames: list[bytes], fail: bool = False) -> tuple[list[str], list[str]]:
    deployment = ContainerDeployment.__new__(ContainerDeployment)
    deployment.container = FakeContainer(frames, fail)
    deployment.log_buffer = LogBuffer(100)
    live: list[str] = []
    deployment.log_buffer.subscribe(live.append)
    thread = threading.Thread(target=deployment._follow)
    thread.start()
    thread.join(5)
    return deployment.log_buffer.tail(), live


def test_a_line_split_across_frames_is_one_entry_once_its_newline_arrives() -> None:
    # Podman splits a print() of several pieces; Docker a line longer than 16 kB
    lines, live = follow([b"hello", b" from 0\n", b"part-", b"rest\nnext ", b"line\n\n",
                          b"x" * 20000, b"y\r\n"])
    assert lines == ["hello from 0", "part-rest", "next line", "", "x" * 20000 + "y"]
    assert live == lines  # followers never see a half line


def test_a_character_split_across_frames_is_decoded_whole() -> None:
    text = "grüße ✓\n".encode()
    lines, _ = follow([text[:3], text[3:9], text[9:]])
    assert lines == ["grüße ✓"]


def test_the_last_line_without_newline_is_flushed_when_the_stream_ends() -> None:
    assert follow([b"one\ntwo", b" halves"])[0] == ["one", "two halves"]
    assert follow([b"done\npartial"], fail=True)[0] == ["done", "partial"]
    assert follow([b"bad \xff byte"])[0] == ["bad \ufffd byte"]
    assert follow([])[0] == []
