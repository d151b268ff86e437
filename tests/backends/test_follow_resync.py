"""The kernel's follower falls behind the stand-in's bounded event log (a slow view, a cell
holding the GIL): it is resynchronised with the stand-in's exact counts, so ``handle.stats``
and ``wait_for_outputs`` stay right although records fell off unseen. A real stand-in process
with a log of 100 records, a real async function on the in-memory bus."""

from __future__ import annotations

import time
from typing import Any

import pytest

import ofnotebook
from ofnotebook.backends.standin import stop_standin
from ofnotebook.sidecar.protocol import EVENT_LOG_SIZE_ENV
from tests.helpers import make_function, uid, wait_for

ECHO = """
def echo(ctx, data):
    ctx.send("seen", data["i"])
"""
TOTAL = 3000


def test_a_follower_behind_the_log_ends_with_the_exact_counts(
        local_backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    stop_standin()  # the next Dapr function starts one with the tiny log
    monkeypatch.setenv(EVENT_LOG_SIZE_ENV, "100")
    try:
        name = f"resync-{uid()}"
        handle = ofnotebook.deploy(make_function(ECHO, name="echo"), name,
                                   target=local_backend, inputs={"events": f"memory://{name}"},
                                   outputs={"seen": f"memory://{name}-out"})
        tracker = handle.deployment.events
        heard: list[dict[str, Any]] = []

        def slow_view(event: dict[str, Any]) -> None:
            heard.append(event)
            if event.get("kind") == "in" and len(heard) < 5:
                time.sleep(1.0)  # the follower's thread: ~3 records an event pile up meanwhile

        tracker.listen(slow_view)
        assert handle.publish_many("events", ({"i": i} for i in range(TOTAL))) == TOTAL
        handle.wait_for_outputs(TOTAL, timeout=60)  # woken by the resync's count
        assert len(handle.outputs) < TOTAL  # the rows that fell off are gone...
        missed = [e["missed"] for e in heard if e.get("kind") == "resync"]
        assert missed and all(n > 0 for n in missed)  # ...and a view was told how many
        wait_for(lambda: handle.stats["delivered"] == TOTAL, 30,
                 lambda: f"stats: {handle.stats}")
        own = handle.deployment.standin.stats()["counts"][name]
        assert handle.stats == {"events_in": own.get("in", 0),
                                "delivered": own.get("delivered", 0),
                                "events_out": own.get("out", 0),
                                "retries": own.get("retry", 0),
                                "dead_letters": own.get("dead-letter", 0),
                                "errors": own.get("error", 0)}
        assert handle.stats["events_in"] == TOTAL == tracker.total_outputs
        assert tracker.mark_lost() == 0  # the per-input counts were resynchronised too
        handle.stop()
    finally:
        stop_standin()  # later tests get a stand-in with the default log
