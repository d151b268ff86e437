"""The drivers without a broker (in-memory, cron, http) run the driver conformance suite."""

from __future__ import annotations

import queue
from typing import Callable

from ofnotebook.sidecar.drivers import Driver
from ofnotebook.sidecar.drivers.base import InboundEvent
from tests.sidecar.conformance import DriverConformance, InboundConformance, Send
from tests.sidecar.support import get, uid


class TestMemoryConformance(InboundConformance):
    types = ("pubsub.in-memory", "bindings.in-memory", "state.in-memory")

    def metadata(self, type_: str) -> dict[str, str]:
        if not hasattr(self, "bus"):
            self.bus = f"conf-{uid()}"
        return {"bus": self.bus}

    def receiver(self, made: list[Driver], deliver: Callable[[InboundEvent], None],
                 consumer: str) -> tuple[Driver, Send]:
        topic = f"conf-{consumer}"
        sender = self.make(made, "pubsub.in-memory")
        receiver = self.make(made, "pubsub.in-memory")
        receiver.subscribe(topic, deliver)
        return receiver, lambda data: sender.publish(topic, data, {})

    def test_bad_metadata_names_the_key(self, made: list[Driver]) -> None:
        """In-memory components have no metadata to get wrong: any is accepted."""
        self.make(made, "state.in-memory", anything="at all").save_state("k", b"v")

    def test_a_slow_subscriber_does_not_block_the_publisher(self, made: list[Driver]) -> None:
        """The publish returns while another app's deliver is still busy (issue 10)."""
        release: queue.Queue[None] = queue.Queue()
        got: queue.Queue[InboundEvent] = queue.Queue()

        def slow(event: InboundEvent) -> None:
            release.get(timeout=10)
            got.put(event)

        _, send = self.receiver(made, slow, "slow")
        for n in range(3):
            send(b"%d" % n)  # would block here if deliver ran on this thread
        for _ in range(3):
            release.put(None)
        assert [get(got).data for _ in range(3)] == [b"0", b"1", b"2"]


class TestCronConformance(InboundConformance):
    types = ("bindings.cron",)
    bad_metadata = (("bindings.cron", {}, "schedule"),
                    ("bindings.cron", {"schedule": "@every 10"}, "schedule"),
                    ("bindings.cron", {"schedule": "61 * * * *"}, "schedule"))

    def metadata(self, type_: str) -> dict[str, str]:
        return {"schedule": "@every 100ms"}

    def receiver(self, made: list[Driver], deliver: Callable[[InboundEvent], None],
                 consumer: str) -> tuple[Driver, Send]:
        receiver = self.make(made, "bindings.cron")
        receiver.read(deliver)
        return receiver, lambda data: None  # the schedule sends

    def sent_data(self, data: bytes) -> bytes:
        return b""


class TestHttpConformance(DriverConformance):
    types = ("bindings.http",)
    bad_metadata = (("bindings.http", {}, "url"),)

    def metadata(self, type_: str) -> dict[str, str]:
        return {"url": "http://127.0.0.1:9"}
