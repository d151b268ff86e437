"""Acking as the Dispatcher does: from several threads, in any order, while events arrive."""

from __future__ import annotations

import queue
import random
from concurrent.futures import ThreadPoolExecutor

from ofnotebook.sidecar.drivers.base import InboundEvent


def receive_acking_scrambled(got: queue.Queue[InboundEvent], count: int, keep: bytes,
                             timeout: float = 5.0) -> list[InboundEvent]:
    """Take ``count`` events from ``got``, acking each group that waits (up to 7) shuffled, on
    8 threads, all but the one whose data is ``keep``: a broker with a bounded in-flight window
    (prefetch, Mosquitto's 20) must keep sending although ``keep`` is never acked."""
    rng = random.Random(14)
    received: list[InboundEvent] = []
    with ThreadPoolExecutor(8) as pool:
        while len(received) < count:
            batch = [got.get(timeout=timeout)]
            while len(batch) < 7 and not got.empty():
                batch.append(got.get())
            received += batch
            rng.shuffle(batch)
            list(pool.map(InboundEvent.ack, [e for e in batch if e.data != keep]))
    return received
