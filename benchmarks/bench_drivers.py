"""Figures for the stand-in's broker drivers at speed (issue 14 item 5): consume -> ack rate.

    .venv/bin/python benchmarks/bench_drivers.py [--before REV] [--reps 3] [--only kafka,mqtt]

For each driver (Kafka on a tansu broker this script starts, JetStream, RabbitMQ and MQTT on the
local servers), the driver as of ``--before`` (its source from git, loaded as a module next to
the current one) against the driver in the working tree, interleaved, median of ``--reps``:

1. N messages are put in the broker first (a raw client, not timed);
2. a started driver subscribes; its ``deliver`` is the Dispatcher's shape: ``unary`` keeps 10
   events in flight (1 for an ``ordered`` driver: Kafka), each acked by a pool thread; ``bulk``
   (not for an ordered driver) keeps 4 x 100 in flight, acked by 4 threads a batch at a time,
   as a bulk call's entries are;
3. events/s = N / (first delivery -> N-th ``ack()`` returned), and this process's CPU time per
   event from ``subscribe`` to then (the driver, its client library, the acking threads: less
   swayed by other load on the machine than events/s). Then the driver is closed and a second
   one reads the same subscription: ``again`` counts what came back within a second (every ack
   must have reached the broker: 0 expected; for MQTT a session resumes it).

4. publishing: N entries to a topic nobody reads, in chunks of ``PUBLISH_CHUNK`` (the kernel's
   ``handle.publish_many`` chunk), through the driver's ``publish_many`` against the base
   class's default (one ``publish`` per entry, what every driver did before), same run.

Writes benchmarks/results/drivers.json. Nothing here is a test. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.util
import json
import statistics
import subprocess
import sys
import threading
import time
import types
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ofnotebook.sidecar.drivers.base import ComponentConfig, Driver, InboundEvent  # noqa: E402

#: The drivers as they were before issue 14 item 5 (the commit this work started from).
BEFORE = "6525273"
DRIVERS = {"kafka": "KafkaDriver", "jetstream": "JetStreamDriver", "rabbitmq": "RabbitMQDriver",
           "mqtt": "MqttDriver"}
UNARY, BULK, BULK_CALLS = 10, 100, 4  # delivery.DELIVERY_CONCURRENCY, maxMessagesCount, calls
PUBLISH_CHUNK = 1000  # handle.PUBLISH_CHUNK


def driver_class(name: str, rev: str | None) -> type[Driver]:
    """The driver class of the working tree, or of ``rev`` (loaded from ``git show``)."""
    if rev is None:
        module = importlib.import_module(f"ofnotebook.sidecar.drivers.{name}")
    else:
        source = subprocess.run(["git", "show", f"{rev}:ofnotebook/sidecar/drivers/{name}.py"],
                                cwd=ROOT, check=True, capture_output=True, text=True).stdout
        qualified = f"ofnotebook.sidecar.drivers._before_{name}"
        module = types.ModuleType(qualified)
        module.__package__ = "ofnotebook.sidecar.drivers"
        sys.modules[qualified] = module  # dataclasses look their module up
        exec(compile(source, f"{rev}:{name}.py", "exec"), module.__dict__)
    cls: type[Driver] = getattr(module, DRIVERS[name])
    return cls


class Consumer:
    """A ``deliver`` shaped as the Dispatcher: bounded room, acks from worker threads."""

    def __init__(self, mode: str, ordered: bool) -> None:
        self.bulk = mode == "bulk" and not ordered
        room = BULK * BULK_CALLS if self.bulk else (1 if ordered else UNARY)
        self.room = threading.BoundedSemaphore(room)
        self.pool = ThreadPoolExecutor(BULK_CALLS if self.bulk else room)
        self.waiting: list[InboundEvent] = []
        self.cond = threading.Condition()
        self.acked = 0
        self.first = self.last = 0.0
        self.seen: set[bytes] = set()
        self.done = threading.Event()
        self.target = 0

    def __call__(self, event: InboundEvent) -> None:
        self.room.acquire()
        with self.cond:
            if not self.first:
                self.first = time.perf_counter()
            self.seen.add(event.data)
            self.waiting.append(event)
        self.pool.submit(self._work)

    def _work(self) -> None:
        with self.cond:
            batch = self.waiting[:BULK if self.bulk else 1]
            del self.waiting[:len(batch)]
        for event in batch:
            event.ack()
            self.room.release()
        with self.cond:
            self.acked += len(batch)
            if self.acked >= self.target and not self.done.is_set():
                self.last = time.perf_counter()
                self.done.set()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class Rig:
    """One broker's set-up: make a component, preload N messages, subscribe."""

    name = ""  # the driver module
    type_ = "pubsub.x"

    def metadata(self, group: str) -> dict[str, str]:
        raise NotImplementedError

    def preload(self, topic: str, group: str, count: int) -> None:
        raise NotImplementedError

    def make(self, cls: type[Driver], group: str) -> Driver:
        driver = cls(ComponentConfig(f"bench-{group}", self.type_, self.metadata(group)))
        driver.start()
        return driver

    def cleanup(self, topic: str, group: str) -> None:
        pass


class KafkaRig(Rig):
    name = "kafka"
    type_ = "pubsub.kafka"

    def __init__(self) -> None:
        from ofnotebook.testing.kafka import start_tansu
        self.broker = start_tansu()

    def metadata(self, group: str) -> dict[str, str]:
        return {"brokers": self.broker.bootstrap, "authType": "none", "consumerGroup": group,
                "initialOffset": "oldest"}

    def preload(self, topic: str, group: str, count: int) -> None:
        from confluent_kafka import Producer
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": self.broker.bootstrap})
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(10)
        producer = Producer({"bootstrap.servers": self.broker.bootstrap, "linger.ms": 5})
        for n in range(count):
            producer.produce(topic, b"m%d" % n)
            if n % 1000 == 999:
                producer.poll(0)
        assert producer.flush(30) == 0

    def close(self) -> None:
        self.broker.stop()


class JetStreamRig(Rig):
    name = "jetstream"
    type_ = "pubsub.jetstream"
    URL = "nats://127.0.0.1:4222"

    def metadata(self, group: str) -> dict[str, str]:
        return {"natsURL": self.URL, "durableName": group, "ackWait": "30s"}

    def preload(self, topic: str, group: str, count: int) -> None:
        import nats

        async def run() -> None:
            nc = await nats.connect(self.URL)
            js = nc.jetstream()
            await js.add_stream(name=topic.replace(".", "_"), subjects=[topic])
            for start in range(0, count, 500):
                await asyncio.gather(*(js.publish(topic, b"m%d" % n)
                                       for n in range(start, min(count, start + 500))))
            await nc.close()
        asyncio.run(run())

    def cleanup(self, topic: str, group: str) -> None:
        import nats

        async def run() -> None:
            nc = await nats.connect(self.URL)
            await nc.jetstream().delete_stream(topic.replace(".", "_"))
            await nc.close()
        asyncio.run(run())


class RabbitRig(Rig):
    name = "rabbitmq"
    type_ = "pubsub.rabbitmq"
    URL = "amqp://guest:guest@127.0.0.1:5672"

    def metadata(self, group: str) -> dict[str, str]:
        return {"connectionString": self.URL, "consumerID": group, "deletedWhenUnused": "false",
                "durable": "false"}

    def preload(self, topic: str, group: str, count: int) -> None:
        import pika
        declare = driver_class("rabbitmq", None)(ComponentConfig(
            "declare", self.type_, self.metadata(group)))
        declare.start()
        declare.subscribe(topic, lambda event: None)  # the queue, bound; nothing published yet
        declare.close()
        conn = pika.BlockingConnection(pika.URLParameters(self.URL))
        ch = conn.channel()
        for n in range(count):
            ch.basic_publish(topic, "", b"m%d" % n)
        conn.close()

    def cleanup(self, topic: str, group: str) -> None:
        import pika
        conn = pika.BlockingConnection(pika.URLParameters(self.URL))
        ch = conn.channel()
        ch.queue_delete(f"{group}-{topic}")
        ch.exchange_delete(topic)
        conn.close()


class MqttRig(Rig):
    """Mosquitto queues at most max_queued_messages (1000) for an offline session: N <= 1000."""

    name = "mqtt"
    type_ = "pubsub.mqtt3"

    def metadata(self, group: str) -> dict[str, str]:
        return {"url": "tcp://127.0.0.1:1883", "consumerID": group, "qos": "1"}

    def preload(self, topic: str, group: str, count: int) -> None:
        import paho.mqtt.client as mqtt
        declare = driver_class("mqtt", None)(ComponentConfig("declare", self.type_,
                                                            self.metadata(group)))
        declare.start()
        declare.subscribe(topic, lambda event: None)  # the persistent session, subscribed
        declare.close()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pre-{group}")
        client.max_inflight_messages_set(100)
        client.connect("127.0.0.1", 1883)
        client.loop_start()
        infos = [client.publish(topic, b"m%d" % n, qos=1) for n in range(count)]
        for info in infos:
            info.wait_for_publish(30)
        client.disconnect()
        client.loop_stop()

    def cleanup(self, topic: str, group: str) -> None:
        import paho.mqtt.client as mqtt
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=group,
                             clean_session=True)  # ends the persistent session
        client.connect("127.0.0.1", 1883)
        client.disconnect()


def run_once(rig: Rig, cls: type[Driver], mode: str, count: int) -> dict[str, float]:
    group = f"b{uuid.uuid4().hex[:8]}"
    topic = f"bench.{group}"
    rig.preload(topic, group, count)
    consumer = Consumer(mode, cls.ordered)
    consumer.target = count
    driver = rig.make(cls, group)
    cpu = time.process_time()
    try:
        driver.subscribe(topic, consumer)
        if not consumer.done.wait(120):
            raise RuntimeError(f"{cls.__module__}: {consumer.acked} of {count} acked in 120 s")
        cpu = time.process_time() - cpu  # this process: the driver, its client, the acks
    finally:
        driver.close()
        consumer.close()
    again = Consumer("unary", False)
    again.target = 1
    second = rig.make(cls, group)
    try:
        second.subscribe(topic, again)
        again.done.wait(1.0)
    finally:
        second.close()
        again.close()
        rig.cleanup(topic, group)
    return {"events_per_s": count / (consumer.last - consumer.first),
            "cpu_us_per_event": cpu / count * 1e6, "again": len(again.seen)}


def publish_rates(rig: Rig, count: int, reps: int) -> dict[str, int]:
    """Entries/s of ``publish_many`` (the driver's) against ``Driver._publish_many`` (one by
    one), interleaved, median of ``reps``."""
    cls = driver_class(type(rig).name, None)
    rates: dict[str, list[float]] = {"one_by_one": [], "publish_many": []}
    for _rep in range(reps):
        for label in rates:
            group = f"p{uuid.uuid4().hex[:8]}"
            topic = f"bench.{group}"
            driver = rig.make(cls, group)
            many = driver._publish_many if label == "publish_many" else functools.partial(
                Driver._publish_many, driver)
            entries: list[tuple[bytes, dict[str, str]]] = [(b"m%d" % n, {}) for n in range(count)]
            try:
                driver.publish(topic, b"first", {})  # the topic (stream, exchange) exists
                began = time.perf_counter()
                for start in range(0, count, PUBLISH_CHUNK):
                    assert not many(topic, entries[start:start + PUBLISH_CHUNK])
                rates[label].append(count / (time.perf_counter() - began))
            finally:
                driver.close()
                rig.cleanup(topic, group)
    return {f"{label}_per_s": round(statistics.median(r)) for label, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default=BEFORE, help="git revision of the old drivers")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--events", type=int, default=3000, help="per run (MQTT: at most 1000)")
    parser.add_argument("--only", default=",".join(DRIVERS))
    args = parser.parse_args()
    rigs: dict[str, Callable[[], Rig]] = {"kafka": KafkaRig, "jetstream": JetStreamRig,
                                          "rabbitmq": RabbitRig, "mqtt": MqttRig}
    results: dict[str, Any] = {"before": args.before, "events": args.events, "drivers": {}}
    for name in args.only.split(","):
        rig = rigs[name]()
        count = min(args.events, 1000) if name == "mqtt" else args.events
        versions = {"before": driver_class(name, args.before), "after": driver_class(name, None)}
        runs: dict[str, list[dict[str, float]]] = {}
        try:
            published = publish_rates(rig, count, args.reps)
            # An ordered driver's events go one at a time (no bulk): its bulk run is the same.
            modes = ("unary",) if versions["after"].ordered else ("unary", "bulk")
            for _rep in range(args.reps):
                for mode in modes:
                    for label, cls in versions.items():
                        runs.setdefault(f"{label}/{mode}", []).append(
                            run_once(rig, cls, mode, count))
        finally:
            close = getattr(rig, "close", None)
            if close is not None:
                close()
        figures = {key: {"events_per_s": round(statistics.median(r["events_per_s"] for r in rs)),
                         "cpu_us_per_event": round(statistics.median(
                             r["cpu_us_per_event"] for r in rs)),
                         "again": max(r["again"] for r in rs)} for key, rs in runs.items()}
        results["drivers"][name] = {"events": count, **figures, "publish": published}
        print(name, json.dumps(figures), json.dumps(published), flush=True)
    out = ROOT / "benchmarks" / "results" / "drivers.json"
    if out.exists() and set(args.only.split(",")) != set(DRIVERS):  # keep the other drivers'
        kept = json.loads(out.read_text()).get("drivers", {})
        results["drivers"] = {**kept, **results["drivers"]}
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
