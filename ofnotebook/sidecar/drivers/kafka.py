"""Kafka driver for ``bindings.kafka`` and ``pubsub.kafka``, on confluent-kafka (librdkafka).

It behaves as daprd's kafka components (components-contrib ``common/component/kafka``):

* binding ``create`` and pub/sub ``publish`` produce one record and wait for the broker. Metadata
  ``partitionKey`` (daprd's name), ``__key`` or ``key`` becomes the record key; every metadata
  entry is also a header, and data ``null`` is a tombstone, as in daprd;
* inbound events carry the headers plus ``__key`` (when set), ``__topic``, ``__partition``,
  ``__offset`` and ``__timestamp`` (Unix ms);
* missing topics are created with one partition, so the local order is total;
* ``authType`` is required; only ``none`` works locally.

Why real consumer groups and not partitions assigned by hand: against tansu 0.6 with librdkafka
2.16, a JoinGroup answers after about max(1 s, session.timeout.ms / 2). That is 23 s with
librdkafka's 45 s default, 5 s with daprd's 10 s and ~1.1 s with the 2 s used here. At that speed
groups keep daprd's semantics (members share partitions; offsets live in the broker). A broker
reporting a higher ``group.min.session.timeout.ms`` (Apache Kafka: 6 s) gets that instead.

At-least-once, in order: a partition's committed offset only advances on ``ack()``. It moves to
the lowest offset still waiting for its ack, so whatever was never acked is read again by the
group's next consumer. ``subscribe()``/``read()`` return once the group has assigned partitions.
With ``initialOffset=newest`` the first assignment commits its start position, so a later
rebalance cannot skip what was published after they returned. Events reach ``deliver`` through a
``DeliveryPump``; fetching pauses while the pump's backlog is long, so poll() never blocks.

At speed (issue 14): the poll thread takes what librdkafka has fetched in batches
(``consume``, up to ``FETCH_BATCH``; when nothing waits, ``poll`` returns on the first record, so
an isolated event does not wait for a batch to fill). Acks may come in any order: each moves
its partition's mark to the lowest offset still unacked (``AckWindow``), and the poll thread
commits the marks that moved, asynchronously, once per round (one commit for every ack since the
last). ``publish_many`` produces all its records and flushes once: librdkafka sends them as one
batch per partition.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any, Mapping, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from ..golang import metadata_duration
from .acks import AckWindow
from .base import ComponentConfig, ComponentError, Deliver, Driver, InboundEvent

log = logging.getLogger(__name__)

#: daprd's authType values (components-contrib common/component/kafka/metadata.go).
AUTH_TYPES = ("none", "password", "oidc", "oidc_private_key_jwt", "mtls", "certificate", "awsiam")
KEY_NAMES = ("partitionKey", "__key", "key")
CONNECT_TIMEOUT = 3.0  # s: how long start() waits for the broker's metadata
PRODUCE_TIMEOUT_MS = 5000  # librdkafka gives up on a record after this
JOIN_TIMEOUT = 15.0  # s: how long subscribe()/read() wait for the group's assignment
#: Events handed over that deliver() has not returned from, above what the Dispatcher keeps in
#: flight (4 bulk calls x 100 entries): past it the poll thread waits for deliveries (see _flow).
BACKLOG = 1000
FETCH_BATCH = 500  # messages taken from librdkafka's queue per consume() call
HOLD = 0.1  # s: the longest the poll thread waits for a full backlog to drain before a poll
SESSION_MS, HEARTBEAT_MS = 2000, 300  # fast joins on tansu (see the module docstring)


class _LibrdkafkaLog:
    """librdkafka logs each refused reconnect at ERROR: keep it at DEBUG, the driver reports."""

    def log(self, _level: int, fmt: str, *args: object) -> None:
        log.debug("librdkafka: " + fmt, *args)


def _text(value: str | bytes | None) -> str:
    """A record key or header value as text: a consumer hands bytes (the stub allows str)."""
    if isinstance(value, str):
        return value
    return (value or b"").decode("utf-8", "replace")


def _duration_ms(text: str, key: str) -> int:
    """A ``time.Duration`` field as daprd decodes it (a bare number counts seconds)."""
    try:
        return int(metadata_duration(text) * 1000)
    except ValueError:
        raise ComponentError(f"metadata {key!r}={text!r} is not a duration; use e.g. 500ms or 10s"
                             ) from None


class KafkaDriver(Driver):
    """One Kafka component: a producer, and one consumer-group member for every topic it reads."""

    #: Delivery order: a partition's records reach the app one at a time, as daprd's consumer
    #: (sequential per partition). Not needed for the acks: ``AckWindow`` takes any order.
    ordered = True

    def __init__(self, component: ComponentConfig) -> None:
        super().__init__(component)
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None
        self._thread: threading.Thread | None = None
        self._backlog = 0  # events handed to the pump that deliver() has not returned from
        self._paused = False
        self._stop = threading.Event()
        # Guards handlers and offsets. Only the poll thread touches the consumer: with
        # confluent-kafka 2.16 a commit() from another thread blocks while poll() loops.
        self._lock = threading.Lock()
        self._assigned = threading.Condition(self._lock)
        self._drained = threading.Condition(self._lock)  # the backlog fell to half
        self._handlers: dict[str, Deliver] = {}
        self._wanted = self._applied = self._assigned_version = 0
        self._topics: set[str] = set()
        self._pending: dict[tuple[str, int], AckWindow] = {}
        self._next: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}
        self._to_commit: dict[tuple[str, int], int] = {}
        self._errors_seen: set[int] = set()  # consumer errors logged since the last message

    # -- lifecycle ----------------------------------------------------------------------------

    def _start(self) -> None:
        cfg = self.component
        self._brokers = cfg.require("brokers").replace(" ", "")
        auth = cfg.require("authType").lower()
        if auth not in AUTH_TYPES:
            raise ComponentError(f"component {self.name!r}: authType {auth!r} is not valid; daprd "
                                 f"accepts {', '.join(AUTH_TYPES)} (use none for a local broker)")
        if auth != "none":
            raise ComponentError(f"component {self.name!r}: authType {auth!r} is not supported by "
                                 "the local stand-in; only authType none works locally. Point "
                                 "'brokers' at a local broker without authentication, or run daprd")
        offset = cfg.get("initialOffset", "newest").lower()
        if offset not in ("newest", "oldest"):
            raise ComponentError(f"component {self.name!r}: initialOffset must be newest or "
                                 f"oldest, not {offset!r}")
        self._oldest = offset == "oldest"
        timing = {k: _duration_ms(cfg.get(k), k) for k in ("sessionTimeout", "heartbeatInterval")
                  if cfg.get(k)}
        # daprd: consumerGroup, else the consumerID the runtime fills in (the app id).
        self._group = cfg.get("consumerGroup") or cfg.get("consumerID") or self.name
        self._base = {"bootstrap.servers": self._brokers, "logger": _LibrdkafkaLog(),
                      "client.id": cfg.get("clientID", "ofnotebook")}
        # The stub types conf values as str/int/float/bool, but librdkafka's binding takes the
        # 'logger' object in conf too (as Producer and Consumer, whose stubs allow Any).
        admin = AdminClient(dict(self._base))  # type: ignore[arg-type]
        try:
            meta = admin.list_topics(timeout=CONNECT_TIMEOUT)
        except KafkaException as exc:
            raise ComponentError(
                f"component {self.name!r} ({cfg.type}): no Kafka broker answered at "
                f"{self._brokers} within {CONNECT_TIMEOUT:.0f} s ({exc.args[0].str()}). Start a "
                "broker there (for example `tansu broker --listener-url tcp://127.0.0.1:9092 "
                "--advertised-listener-url tcp://127.0.0.1:9092`) or fix the metadata 'brokers'"
            ) from None
        self._admin = admin
        session = timing.get("sessionTimeout") or max(SESSION_MS, self._min_session_ms(admin, meta))
        heartbeat = timing.get("heartbeatInterval") or max(HEARTBEAT_MS, session // 7)
        self._session = (session, min(heartbeat, session // 3))
        self._producer = Producer({**self._base, "acks": "all", "linger.ms": 0,
                                   "message.timeout.ms": PRODUCE_TIMEOUT_MS})

    def _min_session_ms(self, admin: AdminClient, meta: Any) -> int:
        """The broker's ``group.min.session.timeout.ms`` if reported (Kafka does, tansu not)."""
        try:
            resource = ConfigResource(ResourceType.BROKER, str(next(iter(meta.brokers))))
            futures = admin.describe_configs([resource], request_timeout=CONNECT_TIMEOUT)
            configs = futures[resource].result(timeout=CONNECT_TIMEOUT)
            entry = configs.get("group.min.session.timeout.ms")
            return int(entry.value) if entry is not None and entry.value else 0
        except Exception:  # noqa: BLE001 - an optional probe: the default applies
            return 0

    def _close(self) -> None:
        # The base closed the pump: events still queued stay unacknowledged, so the group
        # reads them again.
        self._stop.set()
        with self._lock:
            self._assigned.notify_all()
            self._drained.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self._time_left(0.5))
            if thread.is_alive():
                log.warning("kafka component %r: the consumer did not stop within the close "
                            "budget", self.name)
        producer, self._producer, self._admin = self._producer, None, None
        if producer is not None:
            try:
                producer.purge()  # publishes already waited for their result: nothing is lost
                producer.close()
            except Exception:  # noqa: BLE001 - close never raises
                log.debug("kafka component %r: producer close failed", self.name, exc_info=True)

    # -- output: binding create, pub/sub publish --------------------------------------------

    def _invoke(self, operation: str, data: bytes, metadata: Mapping[str, str]
                ) -> tuple[bytes, dict[str, str]]:
        if operation != "create":
            raise ComponentError(f"component {self.name!r} (bindings.kafka) supports operation "
                                 f"'create' only, not {operation!r}")
        topic = metadata.get("topic") or self.component.require("publishTopic")
        self._produce(topic, data, metadata)
        return b"", {}

    def _publish(self, topic: str, data: bytes, metadata: Mapping[str, str]) -> None:
        self._produce(topic, data, metadata)

    def _produce(self, topic: str, data: bytes, metadata: Mapping[str, str]) -> None:
        """Produce one record and wait for the broker, so the caller learns of a failure."""
        failed = self._produce_all(topic, [(data, metadata)])
        if failed:
            raise failed[0][1]

    def _publish_many(self, topic: str, entries: Sequence[tuple[bytes, Mapping[str, str]]]
                      ) -> list[tuple[int, ComponentError]]:
        """Many records in one produce batch and one flush (librdkafka sends them together)."""
        return self._produce_all(topic, entries)

    def _produce_all(self, topic: str, entries: Sequence[tuple[bytes, Mapping[str, str]]]
                     ) -> list[tuple[int, ComponentError]]:
        """Produce every entry, then flush once and wait for the broker's answers; returns
        the entries that failed, each with its reason."""
        producer = self._started(self._producer)
        self._ensure_topic(topic)
        outcomes: dict[int, str] = {}
        for index, (data, metadata) in enumerate(entries):
            key = next((str(metadata[k]) for k in KEY_NAMES if metadata.get(k)), None)
            headers: list[tuple[str, str | bytes | None]] = [
                (str(k), str(v).encode()) for k, v in metadata.items()]

            def done(err: KafkaError | None, _msg: Message, index: int = index) -> None:
                outcomes[index] = err.str() if err is not None else ""

            for _attempt in range(2):
                try:
                    producer.produce(topic, value=None if data == b"null" else data, key=key,
                                     headers=headers or None, on_delivery=done)
                    break
                except BufferError:  # librdkafka's queue is full: send what waits, then retry
                    producer.flush(PRODUCE_TIMEOUT_MS / 1000 + 1)
                except KafkaException as exc:  # e.g. a record over message.max.bytes
                    outcomes[index] = exc.args[0].str()
                    break
        producer.flush(PRODUCE_TIMEOUT_MS / 1000 + 1)
        return [(index, ComponentError(
            f"component {self.name!r}: publishing to Kafka topic {topic!r} at {self._brokers} "
            f"failed: {outcomes.get(index, 'timed out') or 'timed out'}"))
            for index in range(len(entries)) if outcomes.get(index) != ""]

    def _ensure_topic(self, topic: str) -> None:
        """Create a missing topic explicitly: a consumer of a missing topic only gets errors."""
        if topic in self._topics:
            return
        admin = self._started(self._admin)
        future = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)],
                                     request_timeout=CONNECT_TIMEOUT)[topic]
        try:
            future.result(timeout=CONNECT_TIMEOUT + 2)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise ComponentError(f"component {self.name!r}: cannot create Kafka topic "
                                     f"{topic!r} at {self._brokers}: {exc.args[0].str()}"
                                     ) from None
        self._topics.add(topic)

    # -- input: binding read, pub/sub subscribe ---------------------------------------------

    def _read(self, deliver: Deliver) -> None:
        topics = [t.strip() for t in self.component.require("topics").split(",") if t.strip()]
        self._consume(topics, deliver)

    def _subscribe(self, topic: str, deliver: Deliver) -> None:
        self._consume([topic], deliver)

    def _consume(self, topics: list[str], deliver: Deliver) -> None:
        """Join the group for ``topics`` too; return once the group has assigned partitions."""
        for topic in topics:
            self._ensure_topic(topic)
        with self._lock:
            for topic in topics:
                self._handlers[topic] = deliver
            self._wanted += 1
            wanted = self._wanted
            if self._thread is None:
                session, heartbeat = self._session
                consumer = Consumer({
                    **self._base, "group.id": self._group, "enable.auto.commit": False,
                    "auto.offset.reset": "earliest" if self._oldest else "latest",
                    "session.timeout.ms": session, "heartbeat.interval.ms": heartbeat,
                    "fetch.wait.max.ms": 100, "on_commit": self._on_commit})
                self._thread = threading.Thread(target=self._loop, args=(consumer,),
                                                name=f"kafka-{self.name}", daemon=True)
                self._thread.start()
            done = self._assigned.wait_for(
                lambda: self._assigned_version >= wanted or self._stop.is_set(), JOIN_TIMEOUT)
        if not done:
            log.warning("kafka component %r: group %r got no partitions of %s within %.0f s; "
                        "messages published now may be missed", self.name, self._group,
                        ", ".join(topics), JOIN_TIMEOUT)

    def _loop(self, consumer: Consumer) -> None:
        """Poll, (re)subscribe when topics were added, and hand messages to their handler."""
        try:
            while not self._stop.is_set():
                if self._applied != self._wanted:
                    with self._lock:
                        topics, self._applied = sorted(self._handlers), self._wanted
                    consumer.subscribe(topics, on_assign=self._on_assign)
                self._commit(consumer, asynchronous=True)
                room = self._flow(consumer)
                # A batch of what is fetched already, else wait for one message: a batch call
                # would wait its whole timeout for the batch to fill (an isolated event too).
                # With no room, poll only for the callbacks (rebalance, commits, errors).
                batch = consumer.consume(min(FETCH_BATCH, room), 0) if room > 0 else []
                if not batch:  # paused: nothing comes, so wait (HOLD) rather than spin
                    one = consumer.poll(0.1 if room > 0 else HOLD if self._paused else 0)
                    batch = [one] if one is not None else []
                ready: dict[str, list[InboundEvent]] = {}  # by topic: one hand-over each
                for msg in batch:
                    error = msg.error()
                    if error is not None:
                        if error.code() not in self._errors_seen:
                            log.warning("kafka component %r: %s", self.name, error.str())
                        self._errors_seen.add(error.code())
                        continue
                    self._errors_seen.clear()
                    event = self._event(msg)
                    if event is not None:
                        ready.setdefault(event.topic, []).append(event)
                for topic, events in ready.items():
                    self._hand_off_many(functools.partial(self._deliver, self._handlers[topic]),
                                        events)
        except Exception:  # noqa: BLE001 - a daemon thread: report, then close below
            log.exception("kafka component %r: the consumer loop failed", self.name)
        finally:
            try:
                self._commit(consumer, asynchronous=False)  # the acks that came last
                consumer.close()
            except Exception:  # noqa: BLE001
                log.debug("kafka component %r: consumer close failed", self.name, exc_info=True)

    def _commit(self, consumer: Consumer, asynchronous: bool) -> None:
        """Commit the positions ``ack()`` recorded (on the poll thread, see ``__init__``)."""
        with self._lock:
            marks, self._to_commit = self._to_commit, {}
        if not marks:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in marks.items()]
        try:  # one call per literal: the stub overloads commit() on asynchronous's value
            if asynchronous:
                consumer.commit(offsets=offsets, asynchronous=True)
            else:
                consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # not fatal: those messages are redelivered later
            log.warning("kafka component %r: offset commit failed: %s", self.name, exc)

    def _flow(self, consumer: Consumer) -> int:
        """Back-pressure without blocking poll(); returns how many records may be taken now.

        librdkafka's pause drops what it prefetched for the partition and resume fetches it
        again (~0.25 s on tansu: cycling at every full backlog capped the driver at ~1,500
        events/s), so a full backlog first waits for deliveries, up to ``HOLD`` between polls
        (callbacks, and at most one record each). Only when the handler stalls long enough for
        those to reach twice ``BACKLOG`` are the partitions paused, until half is left."""
        with self._lock:
            if self._backlog >= BACKLOG and not self._paused:
                self._drained.wait_for(
                    lambda: self._backlog <= BACKLOG // 2 or self._stop.is_set(), HOLD)
            backlog = self._backlog
        if not self._paused and backlog >= 2 * BACKLOG:
            consumer.pause(consumer.assignment())
            self._paused = True
        elif self._paused and backlog <= BACKLOG // 2:
            consumer.resume(consumer.assignment())
            self._paused = False
        return 0 if self._paused else BACKLOG - backlog

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start at the committed offset; with none, pin the ``initialOffset`` position by
        committing it, so that a later rebalance resumes there instead of at the new end."""
        pins: list[TopicPartition] = []
        try:
            positions = consumer.committed(partitions, timeout=CONNECT_TIMEOUT)
            for tp in positions:
                if tp.offset < 0 and not self._oldest:
                    _low, high = consumer.get_watermark_offsets(tp, timeout=CONNECT_TIMEOUT,
                                                                cached=False)
                    tp.offset = high
                    pins.append(TopicPartition(tp.topic, tp.partition, high))
            consumer.assign(positions)
            if pins:
                consumer.commit(offsets=pins, asynchronous=False)
        except (KafkaException, RuntimeError) as exc:
            log.warning("kafka component %r: resolving start offsets failed (%s); using the "
                        "broker's", self.name, exc)
            pins = []
            consumer.assign(partitions)
        with self._lock:
            for tp in pins:
                self._committed[(tp.topic, tp.partition)] = tp.offset
            self._assigned_version = self._applied
            self._assigned.notify_all()
        self._paused = False  # a new assignment fetches; _flow pauses it again if need be

    def _event(self, msg: Message) -> InboundEvent | None:
        """The event of ``msg``, counted in the backlog; None if it was handed over already."""
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is None or partition is None or offset is None:  # only error events lack them
            raise RuntimeError(f"a Kafka message without topic, partition or offset: {topic!r}, "
                               f"{partition!r}, {offset!r}")
        tp = (topic, partition)
        with self._lock:
            if offset < self._next.get(tp, -1):
                return None  # handed over before a rebalance and still pending: not again
            self._next[tp] = offset + 1
            self._pending.setdefault(tp, AckWindow()).add(offset)
            self._backlog += 1
        metadata: dict[str, str] = {}
        key = msg.key()
        if key is not None:
            metadata["__key"] = _text(key)
        _kind, timestamp = msg.timestamp()
        metadata.update({"__offset": str(offset), "__topic": topic,
                         "__timestamp": str(timestamp), "__partition": str(partition)})
        headers = msg.headers() or []
        for name, header in headers.items() if isinstance(headers, dict) else headers:
            metadata[name] = _text(header)
        value = msg.value()
        return InboundEvent(data=b"null" if value is None else value, metadata=metadata,
                            topic=topic, _ack=lambda: self._ack(tp, offset))

    def _deliver(self, deliver: Deliver, event: InboundEvent) -> None:
        """On the pump's thread: the stand-in's deliver() blocks while an ordered event is in
        flight, which must not stall poll() (heartbeats, commits, leaving the group on close)."""
        try:
            deliver(event)
        finally:
            with self._lock:
                self._backlog -= 1
                if self._backlog == BACKLOG // 2:
                    self._drained.notify_all()

    def _ack(self, tp: tuple[str, int], offset: int) -> None:
        """Record ``tp``'s lowest offset still waiting for its ack; the poll thread commits it
        within ~0.1 s, and ``close()`` commits what is left."""
        with self._lock:
            window = self._pending.get(tp)
            lowest = None
            if window is not None:
                window.ack(offset)
                window.advance()
                lowest = window.lowest()
            mark = self._next.get(tp, offset + 1) if lowest is None else lowest
            if mark > self._committed.get(tp, -1):
                self._committed[tp] = self._to_commit[tp] = mark

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None or any(tp.error is not None for tp in partitions):
            log.warning("kafka component %r: offset commit failed: %s", self.name,
                        error or partitions)
