"""Acks that arrive out of order, for brokers that acknowledge up to a position.

The Dispatcher acks an input's events from its delivery threads, in whatever order the app
answers (10 unary or 4 bulk calls in flight). Kafka commits an offset, RabbitMQ can ack
``multiple`` up to a delivery tag, JetStream's ``AckAll`` acks up to a consumer sequence: each
acknowledges *everything* below a position, so the position may only move past deliveries the
stand-in has acked, never past one still in the app (at-least-once stays exact).
:class:`AckWindow` keeps that position: the deliveries in the order the broker numbered them
(ascending) and the acked ones among them.

Not thread-safe: its driver holds a lock around it.
"""

from __future__ import annotations

import collections


class AckWindow:
    """One ordered source's deliveries waiting for their acks; ``ack`` in any order, O(1)
    amortized, and ``advance`` to the highest position below which everything is acked."""

    def __init__(self) -> None:
        self._order: collections.deque[int] = collections.deque()
        self._acked: set[int] = set()  # acked beyond the first still waiting

    def add(self, position: int) -> None:
        """A delivery, numbered above every one added before (the broker's order)."""
        self._order.append(position)

    def ack(self, position: int) -> None:
        self._acked.add(position)

    def advance(self) -> int | None:
        """Drop the acked run at the front; its highest position (None: the front waits)."""
        order, acked, top = self._order, self._acked, None
        while order and order[0] in acked:
            top = order.popleft()
            acked.discard(top)
        return top

    def lowest(self) -> int | None:
        """The first delivery still waiting for its ack (None: none waits)."""
        return self._order[0] if self._order else None

    @property
    def gapped(self) -> int:
        """How many acked deliveries wait behind an unacked one (after ``advance``)."""
        return len(self._acked)

    def take_gapped(self) -> list[int]:
        """The acked deliveries behind the gap, ascending, taken out of the window (for a
        broker that can also ack one by one: a stuck delivery then holds nothing else)."""
        taken = sorted(self._acked)
        if taken:
            self._acked.clear()
            kept = set(taken)
            self._order = collections.deque(p for p in self._order if p not in kept)
        return taken
