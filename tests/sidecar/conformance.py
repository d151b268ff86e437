"""The driver conformance suite: what every stand-in driver keeps, against its real broker.

In the style of fsspec's abstract tests: each ``test_driver_*.py`` subclasses the classes that
apply to its driver and says how to make one (``metadata``), which metadata is wrong and which
key the error must name (``bad_metadata``), how to point it at nothing (``unreachable``) and,
for drivers with inputs, how a message gets in (``receiver``).

* :class:`DriverConformance` (every driver): start and close within the budget, close twice
  and before start, every verb of another component kind raises ``ComponentError``, every verb
  raises before ``start`` and after ``close``, bad metadata names the key.
* :class:`BrokerConformance`: an unreachable broker fails ``start`` fast, naming the address
  and the fix (``unreachable_fix``).
* :class:`InboundConformance`: events reach ``deliver`` on a thread of the driver, never on the
  caller's (publisher's) thread.
* :class:`RedeliveryConformance` (brokers that keep messages): an event is acknowledged only by
  ``event.ack()`` after delivery: after a restart (close, then a new driver of the same
  consumer) the unacknowledged event comes again and the acknowledged one does not.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, ClassVar, Iterator

import pytest

from ofnotebook.sidecar.drivers import ComponentConfig, ComponentError, Driver, create_driver
from ofnotebook.sidecar.drivers.base import CLOSE_BUDGET, VERB_KINDS, InboundEvent
from tests.sidecar.support import close_all, free_port, get, uid

Send = Callable[[bytes], None]
START_BUDGET = 10.0  # s: a healthy broker (kafka joins a group on subscribe, not on start)
UNREACHABLE_BUDGET = 6.0  # s: start() on a closed port gives up within this

_CALLS: dict[str, Callable[[Driver], Any]] = {
    "invoke": lambda d: d.invoke("create", b"x", {}),
    "read": lambda d: d.read(lambda e: None),
    "publish": lambda d: d.publish("conformance", b"x", {}),
    "subscribe": lambda d: d.subscribe("conformance", lambda e: None),
    "get_state": lambda d: d.get_state("k"),
    "save_state": lambda d: d.save_state("k", b"v"),
    "delete_state": lambda d: d.delete_state("k"),
}


class DriverConformance:
    """Every driver. Subclasses set ``types`` and ``bad_metadata`` and define ``metadata``."""

    #: The component types of this driver (each is made and checked).
    types: ClassVar[tuple[str, ...]] = ()
    #: (type, metadata, key): starting with that metadata fails and the message names key.
    bad_metadata: ClassVar[tuple[tuple[str, dict[str, str], str], ...]] = ()

    def metadata(self, type_: str) -> dict[str, str]:
        """Working metadata for a component of ``type_``."""
        raise NotImplementedError("The 'metadata' method must be implemented.")

    @pytest.fixture
    def made(self) -> Iterator[list[Driver]]:
        """Drivers made by a test; each is closed after it, within the close budget."""
        drivers: list[Driver] = []
        yield drivers
        close_all(drivers)
        self.cleanup(drivers)

    def cleanup(self, drivers: list[Driver]) -> None:
        """Remove what the test left on the broker (subclasses)."""

    def make(self, made: list[Driver], type_: str, start: bool = True, name: str = "",
             **metadata: str) -> Driver:
        """A driver through the stand-in's registry, ``metadata`` over ``self.metadata``."""
        config = ComponentConfig(name=name or f"conf-{uid()}", type=type_,
                                 metadata={**self.metadata(type_), **metadata})
        driver = create_driver(config)
        made.append(driver)
        if start:
            driver.start()
        return driver

    def test_start_and_close_within_budget(self, made: list[Driver]) -> None:
        for type_ in self.types:
            began = time.monotonic()
            driver = self.make(made, type_)
            assert time.monotonic() - began < START_BUDGET, type_
            began = time.monotonic()
            driver.close()
            assert time.monotonic() - began < CLOSE_BUDGET, type_

    def test_close_twice_and_close_before_start_are_harmless(self, made: list[Driver]) -> None:
        for type_ in self.types:
            self.make(made, type_, start=False).close()
            driver = self.make(made, type_)
            driver.close()
            driver.close()

    def test_verbs_of_another_kind_raise(self, made: list[Driver]) -> None:
        for type_ in self.types:
            driver = self.make(made, type_)
            kind = type_.split(".", 1)[0]
            for verb, call in _CALLS.items():
                if VERB_KINDS[verb] == kind:
                    continue
                with pytest.raises(ComponentError, match="does not support"):
                    call(driver)

    def test_verbs_raise_before_start_and_after_close(self, made: list[Driver]) -> None:
        for type_ in self.types:
            kind = type_.split(".", 1)[0]
            own = [call for verb, call in _CALLS.items() if VERB_KINDS[verb] == kind]
            unstarted = self.make(made, type_, start=False)
            closed = self.make(made, type_)
            closed.close()
            for driver in (unstarted, closed):
                for call in own:
                    with pytest.raises(ComponentError, match="not started|closed|not support"):
                        call(driver)

    def test_bad_metadata_names_the_key(self, made: list[Driver]) -> None:
        for type_, metadata, key in self.bad_metadata:
            config = ComponentConfig(name=f"conf-{uid()}", type=type_, metadata=dict(metadata))
            with pytest.raises(ComponentError, match=key):  # noqa: PT012 - init or start
                driver = create_driver(config)
                made.append(driver)
                driver.start()


class BrokerConformance(DriverConformance):
    """Drivers that connect to a broker or database in ``start``."""

    #: Texts the unreachable-broker message must hold besides the address: the fix.
    unreachable_fix: ClassVar[tuple[str, ...]] = ()
    #: The types whose start is checked against a closed port (default: all ``types``).
    unreachable_types: ClassVar[tuple[str, ...]] = ()

    def unreachable(self, type_: str, port: int) -> dict[str, str]:
        """Metadata pointing the component at 127.0.0.1:``port``, where nothing listens."""
        raise NotImplementedError("The 'unreachable' method must be implemented.")

    def test_unreachable_broker_fails_fast_naming_the_address(self, made: list[Driver]) -> None:
        assert self.unreachable_fix, "say which fix the message names"
        for type_ in self.unreachable_types or self.types:
            port = free_port()
            driver = create_driver(ComponentConfig(name=f"conf-{uid()}", type=type_,
                                                   metadata=self.unreachable(type_, port)))
            made.append(driver)
            began = time.monotonic()
            with pytest.raises(ComponentError, match=f"127.0.0.1:{port}") as info:
                driver.start()
            assert time.monotonic() - began < UNREACHABLE_BUDGET, type_
            for fix in self.unreachable_fix:
                assert fix in str(info.value), (fix, str(info.value))


class InboundConformance(DriverConformance):
    """Drivers with an input (pub/sub subscriptions or input bindings)."""

    def receiver(self, made: list[Driver], deliver: Callable[[InboundEvent], None],
                 consumer: str) -> tuple[Driver, Send]:
        """Start a driver of consumer ``consumer`` that delivers to ``deliver``; return it and
        how to send one message to it (through the broker, from another driver)."""
        raise NotImplementedError("The 'receiver' method must be implemented.")

    def sent_data(self, data: bytes) -> bytes:
        """What ``deliver`` gets for a sent ``data`` (a cron event carries none)."""
        return data

    def test_events_reach_deliver_on_a_thread_of_the_driver(self, made: list[Driver]) -> None:
        seen: queue.Queue[tuple[InboundEvent, threading.Thread]] = queue.Queue()
        _, send = self.receiver(made, lambda e: seen.put((e, threading.current_thread())),
                                f"c-{uid()}")
        send(b"hand-off")
        event, thread = seen.get(timeout=10)
        assert event.data == self.sent_data(b"hand-off")
        assert thread is not threading.current_thread()  # never on the sender's thread
        event.ack()


class RedeliveryConformance(InboundConformance):
    """Brokers that keep an unacknowledged message for the consumer's next instance."""

    #: Seconds to wait for a redelivered message (jetstream: after ackWait).
    redelivery_wait: ClassVar[float] = 10.0

    def test_only_acked_events_are_gone_after_a_restart(self, made: list[Driver]) -> None:
        consumer = f"c-{uid()}"
        got: queue.Queue[InboundEvent] = queue.Queue()
        receiver, send = self.receiver(made, got.put, consumer)
        send(b"acked")
        first = get(got, 10)
        send(b"unacked")
        second = get(got, 10)
        assert (first.data, second.data) == (b"acked", b"unacked")
        first.ack()  # delivered and acknowledged; `second` is never acknowledged
        time.sleep(0.3)  # let the acknowledgement reach the broker
        receiver.close()  # the restart

        again: queue.Queue[InboundEvent] = queue.Queue()
        self.receiver(made, again.put, consumer)
        event = get(again, self.redelivery_wait)
        assert event.data == b"unacked"
        event.ack()
        with pytest.raises(queue.Empty):
            again.get(timeout=0.8)  # the acknowledged one does not come again
