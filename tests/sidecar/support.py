"""Plain helpers shared by the sidecar tests: broker probes, ids, queue reads, the SDK spec.

Fixtures live in ``conftest.py``; the driver conformance suite in ``conformance.py``.
"""

from __future__ import annotations

import queue
import socket
import time
import uuid
from typing import Any

import pytest

from ofnotebook.sidecar.drivers import Driver
from ofnotebook.sidecar.drivers.base import CLOSE_BUDGET, InboundEvent
from ofnotebook.spec import ComponentSpec, FunctionSpec
from tests.helpers import free_port

__all__ = ["BROKERS", "EVENTS", "OUT", "SPEC", "STORE", "close_all", "free_port", "get", "needs_broker",
           "nothing", "uid", "wait_port"]

# The function the SDK tests register with a stand-in (the ``standin`` fixture).
BUS = f"standin-{uuid.uuid4().hex[:6]}"
OUT = ComponentSpec(name="out", type="bindings.in-memory", metadata=(("bus", BUS),),
                    operation="create")
EVENTS = ComponentSpec(name="events", type="pubsub.in-memory", metadata=(("bus", BUS),),
                       topic="orders")
STORE = ComponentSpec(name="store", type="state.in-memory", metadata=(("bus", BUS),))
SPEC = FunctionSpec(name="sdk-user", outputs=(OUT, EVENTS), states=(STORE,))

#: The brokers of shared/reference/machine-services.md: port and how to start it.
BROKERS: dict[str, tuple[int, str]] = {
    "Redis": (6379, "redis-server --daemonize yes --port 6379 --save '' --appendonly no"),
    "PostgreSQL": (5432, "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main "
                         "start"),
    "RabbitMQ": (5672, "rabbitmq-server -detached"),
    "Mosquitto": (1883, "mosquitto -d -c /etc/mosquitto/mosquitto.conf"),
    "NATS": (4222, "nats-server -a 127.0.0.1 -p 4222 -js"),
}


def _up(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def needs_broker(name: str) -> pytest.MarkDecorator:
    """Skip when the broker is not running, with the command that starts it (under CI the
    root conftest turns that skip into a failure)."""
    port, start = BROKERS[name]
    return pytest.mark.skipif(not _up(port), reason=f"{name} is not running on 127.0.0.1:"
                              f"{port}; start it with: {start} (see machine-services.md)")


def wait_port(port: int, timeout: float = 5.0) -> None:
    """Wait until something listens on 127.0.0.1:``port`` (a broker the test started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _up(port):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def close_all(drivers: list[Driver] | list[Any]) -> None:
    """Close every driver a test made; each must stay within the close budget."""
    for driver in drivers:
        began = time.monotonic()
        driver.close()
        assert time.monotonic() - began < CLOSE_BUDGET + 0.5, f"closing {driver.name} took long"


def uid() -> str:
    return uuid.uuid4().hex[:12]


def get(q: queue.Queue[InboundEvent], timeout: float = 5.0) -> InboundEvent:
    return q.get(timeout=timeout)


def nothing(q: queue.Queue[InboundEvent], wait: float = 0.8) -> None:
    with pytest.raises(queue.Empty):
        q.get(timeout=wait)
