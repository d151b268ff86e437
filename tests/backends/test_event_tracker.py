"""The kernel's record of an app's events: ``wait_for_outputs`` returns with the events that
came in settled, so the stats read right after agree with the outputs (a notebook cell shows
``handle.stats`` right after waiting for the outputs)."""

from __future__ import annotations

import threading
import time

from ofnotebook.backends.events import SETTLE_WAIT, EventTracker


def out(i: int) -> dict[str, object]:
    return {"kind": "out", "seq": i, "time": time.time(), "name": "out", "data": i,
            "encoding": "json"}


def test_the_wait_ends_once_the_events_in_flight_are_delivered() -> None:
    tracker = EventTracker()
    for i in (1, 2):
        tracker({"kind": "in", "seq": i})
    tracker(out(3))
    tracker({"kind": "delivered", "seq": 4})
    tracker(out(5))  # the second event sent its output, but is not delivered yet

    def deliver_later() -> None:
        time.sleep(0.1)
        tracker({"kind": "delivered", "seq": 6})

    threading.Thread(target=deliver_later).start()
    outputs = tracker.wait_for_outputs(2, timeout=5)
    assert [o.data for o in outputs] == [3, 5]
    assert tracker.stats()["delivered"] == 2 == tracker.stats()["events_in"]


def test_an_event_that_never_settles_delays_the_wait_only_a_little() -> None:
    tracker = EventTracker()
    tracker({"kind": "in", "seq": 1})
    tracker({"kind": "in", "seq": 2})  # still being retried, say
    tracker(out(3))
    started = time.monotonic()
    assert len(tracker.wait_for_outputs(1, timeout=5)) == 1
    assert SETTLE_WAIT - 0.05 <= time.monotonic() - started < SETTLE_WAIT + 0.5


def test_a_standin_death_counts_the_in_memory_events_in_flight_as_lost_once() -> None:
    tracker = EventTracker()
    heard: list[dict[str, object]] = []
    tracker.listen(heard.append)
    memory = {"name": "events", "type": "pubsub.in-memory"}
    for seq in range(1, 5):
        tracker({"kind": "in", "seq": seq, **memory})
    tracker({"kind": "in", "seq": 5, "name": "orders", "type": "pubsub.redis"})
    tracker({"kind": "delivered", "seq": 6, "name": "events"})
    tracker({"kind": "dead-letter", "seq": 7, "name": "events"})
    # Two in-memory events in flight die with the stand-in; Redis redelivers its own.
    assert tracker.mark_lost() == 2 and tracker.lost == 2 and tracker.standin_restarts == 1
    assert heard[-1]["kind"] == "standin-restart" and heard[-1]["lost"] == 2
    tracker({"kind": "in", "seq": 1, **memory})  # the new process numbers from 1 again
    tracker({"kind": "delivered", "seq": 2, "name": "events"})
    assert tracker.mark_lost() == 0 and tracker.lost == 2 and tracker.standin_restarts == 2
    assert tracker.stats()["events_in"] == 6


def test_a_resync_makes_the_counts_exact_and_counts_what_follows_once() -> None:
    """The follower fell behind the stand-in's log: the counts it missed come as totals as of
    a point; the tracker takes them (never lowering one), wakes a waiter, and tells listeners
    once how many records it missed."""
    tracker = EventTracker()
    heard: list[dict[str, object]] = []
    tracker.listen(heard.append)
    memory = {"name": "events", "type": "pubsub.in-memory"}
    tracker({"kind": "in", "seq": 1, **memory})
    tracker(out(2))
    tracker({"kind": "delivered", "seq": 3, "name": "events"})
    waited: list[int] = []
    waiter = threading.Thread(target=lambda: waited.append(
        len(tracker.wait_for_outputs(101, timeout=5))))
    waiter.start()
    # Records 4..300 fell off: 100 events more were in, delivered and sent on; and the
    # tracker keeps a count higher than the point's (a retry it saw) as it was.
    tracker({"kind": "retry", "seq": 301, "name": "events"})
    missed = tracker.resync({"in": 100, "delivered": 100, "out": 100, "retry": 0},
                            {"events": {"in": 100, "delivered": 100}},
                            {"events": "pubsub.in-memory"})
    assert missed == 297
    tracker({"kind": "in", "seq": 302, **memory})  # after the point: counted as usual
    tracker(out(303))
    tracker({"kind": "delivered", "seq": 304, "name": "events"})
    waiter.join(5)
    assert waited == [2]  # the outputs it saw; the rows that fell off are gone
    assert tracker.total_outputs == 101
    assert tracker.stats() == {"events_in": 101, "delivered": 101, "events_out": 101,
                               "retries": 1, "dead_letters": 0, "errors": 0}
    assert [e["missed"] for e in heard if e["kind"] == "resync"] == [297]
    assert tracker.resync({"in": 50, "out": 60}) == 0  # older totals lower nothing
    assert tracker.stats()["events_in"] == 101
    tracker({"kind": "in", "seq": 305, **memory})  # in flight when the stand-in dies
    assert tracker.mark_lost() == 1


def test_a_resync_after_a_restart_compares_with_the_new_process_only() -> None:
    """A new stand-in process counts from 0: its totals add to what the old one reported."""
    tracker = EventTracker()
    for seq in range(1, 6):
        tracker({"kind": "in", "seq": seq, "name": "orders", "type": "pubsub.redis"})
    tracker.mark_lost()
    assert tracker.resync({"in": 3}) == 3 and tracker.stats()["events_in"] == 8
