"""Redis Streams at speed (issue 14 item 5): acks that arrive together go in one XACK, and
none is lost, against the real Redis on 127.0.0.1:6379."""

from __future__ import annotations

import queue
import threading
from typing import Any

import pytest

from ofnotebook.sidecar.drivers.base import ComponentConfig, InboundEvent
from tests.helpers import wait_for
from tests.sidecar.support import needs_broker, nothing, uid

redis = pytest.importorskip("redis")
from ofnotebook.sidecar.drivers.redis import RedisDriver  # noqa: E402

pytestmark = needs_broker("Redis")


def _driver(drivers: list[Any], group: str) -> RedisDriver:
    driver = RedisDriver(ComponentConfig(name=f"redis-{uid()}", type="pubsub.redis",
                                         metadata={"redisHost": "127.0.0.1:6379",
                                                   "consumerID": group}))
    drivers.append(driver)
    driver.start()
    return driver


def test_acks_from_many_threads_at_once_all_reach_redis(drivers: list[Any]) -> None:
    raw = redis.Redis(host="127.0.0.1", port=6379)
    topic, group = f"ofn-test-bulk-{uid()}", f"grp-{uid()}"
    try:
        driver = _driver(drivers, group)
        got: queue.Queue[InboundEvent] = queue.Queue()
        driver.subscribe(topic, got.put)
        for i in range(600):
            driver.publish(topic, str(i).encode(), {})
        events = [got.get(timeout=10) for _ in range(600)]
        assert sorted(int(e.data) for e in events) == list(range(600))
        assert raw.xpending(topic, group)["pending"] == 600
        chunks = [events[i::12] for i in range(12)]
        threads = [threading.Thread(target=lambda c=c: [e.ack() for e in c]) for c in chunks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        wait_for(lambda: raw.xpending(topic, group)["pending"] == 0, timeout=5,
                 message=lambda: f"{raw.xpending(topic, group)['pending']} left pending")
        driver.close()
        again = _driver(drivers, group)  # nothing acked comes back to the group's next consumer
        redelivered: queue.Queue[InboundEvent] = queue.Queue()
        again.subscribe(topic, redelivered.put)
        nothing(redelivered)
    finally:
        raw.delete(topic)
        raw.close()
