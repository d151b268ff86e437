"""The stand-in's event log: bounded, so a reader that falls behind by more than it keeps is
told so, with the exact counts as of the point it resumes from (no count stays low for ever)."""

from __future__ import annotations

import threading

from ofnotebook.sidecar.eventlog import EventLog


def _fill(log: EventLog, n: int, app: str = "f", name: str = "events") -> None:
    for i in range(n):
        log.record(app, "in", name=name, type="pubsub.in-memory", i=i)
        log.record(app, "delivered", name=name)
        log.record(app, "out", name="seen")


def test_a_reader_within_the_log_gets_every_record_and_no_resync() -> None:
    log = EventLog(maxlen=10)
    _fill(log, 3)
    events, last, resync = log.poll(0, 0)
    assert [e["seq"] for e in events] == list(range(1, 10)) and last == 9 and resync is None
    assert log.since(4, 0) == events[4:]


def test_a_reader_behind_the_log_gets_the_newest_records_and_the_counts_before_them() -> None:
    log = EventLog(maxlen=10)
    _fill(log, 10, app="f")  # 30 records: 1..20 dropped
    log.record("g", "in", name="orders", type="pubsub.redis")
    log.record("g", "dead-letter", name="orders")  # 32 records in all, 23..32 kept
    events, last, resync = log.poll(5, 0, limit=4)
    assert [e["seq"] for e in events] == [29, 30, 31, 32] and last == 32
    assert resync is not None and resync["seq"] == 28 and resync["missed"] == 23
    # As of seq 28: f had 10 in, 9 delivered (one at 29), 9 out (one at 30); g nothing yet.
    assert resync["apps"] == {"f": {"counts": {"in": 10, "delivered": 9, "out": 9},
                                    "inputs": {"events": {"in": 10, "delivered": 9}},
                                    "types": {"events": "pubsub.in-memory"}}}
    # Counts as of the point plus the records returned are the log's totals: each once.
    totals: dict[tuple[str, str], int] = {}
    for app, entry in resync["apps"].items():
        for kind, n in entry["counts"].items():
            totals[(app, kind)] = n
    for event in events:
        key = (event["app"], event["kind"])
        totals[key] = totals.get(key, 0) + 1
    assert totals == dict(log.counters)


def test_a_reader_of_one_app_gets_only_that_apps_counts() -> None:
    log = EventLog(maxlen=4)
    _fill(log, 2, app="f")
    _fill(log, 2, app="g")
    events, _, resync = log.poll(0, 0, app="f")
    assert events == [] and resync is not None and resync["seq"] == 12
    assert list(resync["apps"]) == ["f"] and resync["apps"]["f"]["counts"]["out"] == 2


def test_the_resync_counts_are_exact_while_records_keep_coming() -> None:
    """Writers record while a slow reader resyncs over and over: at every answer, the counts
    as of its point plus the records it returns add up to a consistent total, never more than
    what was recorded and, at the end, exactly it."""
    log = EventLog(maxlen=50)
    writers = [threading.Thread(target=_fill, args=(log, 2000, app)) for app in ("f", "g")]
    for writer in writers:
        writer.start()
    seen: dict[tuple[str, str], int] = {}
    after, resyncs = 0, 0
    while any(w.is_alive() for w in writers) or after < log.last_seq:
        events, last, resync = log.poll(after, 0.05, limit=20)
        if resync is not None:
            resyncs += 1
            for app, entry in resync["apps"].items():
                for kind, n in entry["counts"].items():
                    assert n >= seen.get((app, kind), 0)  # never lower than what was had
                    seen[(app, kind)] = n
            after = resync["seq"]
        for event in events:
            assert event["seq"] == after + 1  # consecutive, from the resync point on
            seen[(event["app"], event["kind"])] = seen.get((event["app"], event["kind"]), 0) + 1
            after = event["seq"]
    assert resyncs > 0
    assert seen == dict(log.counters) == {(a, k): 2000 for a in ("f", "g")
                                          for k in ("in", "delivered", "out")}

