"""MQTT 3.1.1 pub/sub and bindings through paho-mqtt, behaving as daprd's ``mqtt3`` components.

* ``pubsub.mqtt3``: one client, ID ``consumerID``, publishes and subscribes (QoS ``qos``, default
  1; ``retain``; ``cleanSession`` default false). daprd defaults ``consumerID`` to the app ID;
  here it defaults to the component name. Event metadata is ``{"retained": "true|false"}``.
* ``bindings.mqtt3``: ``url``, ``topic`` and ``consumerID`` are required (daprd's Go code
  requires ``consumerID`` although the metadata.yaml says optional). ``create`` publishes with
  client ``{consumerID}-producer`` (QoS 1, as daprd ignores ``qos`` for bindings); ``read``
  subscribes with client ``{consumerID}-consumer``. Event metadata is ``{"topic": <topic>}``.

Messages are acknowledged by hand (paho ``manual_ack``): the PUBACK goes out only when the
stand-in calls ``event.ack()``, so with a persistent session (``cleanSession: false``, daprd's
default) a message not acknowledged is redelivered when the consumer connects again.

At speed (issue 14): the PUBACKs go in the order the Dispatcher acks, which is not the order
the messages came; MQTT 3.1.1 (4.6, MQTT-4.6.0-2) asks a client for arrival order, but
Mosquitto matches a PUBACK by its packet id, and holding acks back for order would let one slow
message stop the stream. The broker bounds what it sends unacknowledged (Mosquitto's
``max_inflight_messages``, default 20); 3.1.1 has no Receive Maximum for a client to ask for
more (MQTT 5 has), so 20 are in flight: above the Dispatcher's 10 unary deliveries, below a
bulk call's 100. ``publish_many`` queues every message, then waits for the PUBACKs together
(``MAX_INFLIGHT`` on the wire).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import Any, Mapping, Sequence
from urllib.parse import unquote, urlsplit

from ..golang import is_truthy
from .base import ComponentConfig, ComponentError, Deliver, Driver, InboundEvent

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

WAIT = 10.0  # seconds for CONNACK, SUBACK and PUBACK (daprd: 10-20 s)
BACKLOG = 1000  # pub/sub messages kept until a subscription for their topic arrives
MAX_INFLIGHT = 100  # our QoS 1/2 publishes on the wire at once (paho's default: 20)

# Client IDs held by live drivers of this process: a second driver with the same ID would make
# the broker disconnect the first one, in a loop (one driver per endpoint in the stand-in).
_ids_lock = threading.Lock()
_ids_in_use: set[str] = set()


def _claim_id(wanted: str) -> str:
    with _ids_lock:
        client_id, n = wanted, 1
        while client_id in _ids_in_use:
            n += 1
            client_id = f"{wanted}-{n}"
        _ids_in_use.add(client_id)
    if client_id != wanted:
        log.warning("MQTT client ID %r is in use in this process; using %r", wanted, client_id)
    return client_id


class _Client:
    """One paho client with its network thread; its subscriptions are renewed on reconnect."""

    def __init__(self, driver: MqttDriver, client_id: str, on_message: Any) -> None:
        self.driver, self.client_id = driver, _claim_id(client_id)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                  clean_session=driver.clean_session, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda _c, _u, msg: self._guard(on_message, msg)
        self.client.max_inflight_messages_set(MAX_INFLIGHT)
        self.subs: dict[str, int] = {}
        self._lock = threading.Lock()
        self._answered = threading.Event()
        self._refused = ""
        self._closed = False
        self._suback: dict[int, tuple[threading.Event, list[Any]]] = {}

    def _guard(self, on_message: Any, msg: Any) -> None:
        try:  # an exception escaping a callback would end paho's network thread
            on_message(self, msg)
        except Exception:  # noqa: BLE001
            log.exception("handling an MQTT message of %s failed", self.driver.name)

    def connect(self) -> None:
        d = self.driver
        c = self.client
        c.connect_timeout = 3.0
        c.reconnect_delay_set(1, 10)
        if d.username:
            c.username_pw_set(d.username, d.password or None)
        if d.tls:
            context = ssl.create_default_context(cadata=d.component.get("caCert") or None)
            c.tls_set_context(context)
        try:
            c.connect(d.host, d.port, keepalive=30)
        except (OSError, ValueError) as exc:
            self.close()
            raise ComponentError(
                f"component {d.name!r} ({d.component.type}) cannot reach the MQTT broker at "
                f"{d.host}:{d.port}: {exc}; start it (mosquitto -d) or fix metadata 'url'") from exc
        c.loop_start()
        if not self._answered.wait(WAIT) or self._refused:
            self.close()
            raise ComponentError(
                f"component {d.name!r}: the MQTT broker at {d.host}:{d.port} refused client "
                f"{self.client_id!r}: {self._refused or 'no CONNACK'}; check 'url' credentials")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        self._refused = str(reason) if reason.is_failure else ""
        self._answered.set()
        if reason.is_failure:
            return
        with self._lock:  # after a reconnect: subscribe again, as daprd's OnConnect does
            topics = list(self.subs.items())
        if topics:
            client.subscribe(topics)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        with self._lock:
            waiter = self._suback.pop(mid, None)
        if waiter is not None:
            waiter[1].extend(reasons)
            waiter[0].set()

    def subscribe(self, topic: str, qos: int) -> None:
        done, reasons = threading.Event(), []
        with self._lock:  # the SUBACK callback takes this lock: it cannot run before we wait
            self.subs[topic] = qos
            try:
                rc, mid = self.client.subscribe(topic, qos)
            except ValueError as exc:  # paho checks the topic filter itself
                rc, mid = mqtt.MQTT_ERR_INVAL, 0
                reasons.append(exc)
            if rc == mqtt.MQTT_ERR_SUCCESS and mid is not None:  # paho: a mid on success
                self._suback[mid] = (done, reasons)
        ok = rc == mqtt.MQTT_ERR_SUCCESS and done.wait(WAIT)
        if not ok or any(getattr(r, "is_failure", True) for r in reasons):
            with self._lock:
                self.subs.pop(topic, None)
            why = reasons[0] if reasons else f"{mqtt.error_string(rc)}, no SUBACK"
            raise ComponentError(f"component {self.driver.name!r}: subscribing to MQTT topic "
                                 f"{topic!r} failed: {why}")

    def publish(self, topic: str, data: bytes, qos: int, retain: bool) -> None:
        failed = self.publish_many(topic, [data], qos, retain)
        if failed:
            raise failed[0][1]

    def publish_many(self, topic: str, datas: Sequence[bytes], qos: int, retain: bool
                     ) -> list[tuple[int, ComponentError]]:
        """Queue every message, then wait for their PUBACKs together (paho keeps
        ``MAX_INFLIGHT`` on the wire), rather than one round trip each."""
        failed: list[tuple[int, ComponentError]] = []
        sent: list[tuple[int, Any]] = []
        for index, data in enumerate(datas):
            try:
                sent.append((index, self.client.publish(topic, data, qos=qos, retain=retain)))
            except (RuntimeError, ValueError) as exc:
                failed.append((index, ComponentError(
                    f"component {self.driver.name!r}: publishing to MQTT topic {topic!r} "
                    f"failed: {exc}")))
        deadline = time.monotonic() + WAIT
        for index, info in sent:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
                ok = info.is_published()
            except (RuntimeError, ValueError) as exc:
                failed.append((index, ComponentError(
                    f"component {self.driver.name!r}: publishing to MQTT topic {topic!r} "
                    f"failed: {exc}")))
                continue
            if not ok:
                failed.append((index, ComponentError(
                    f"component {self.driver.name!r}: no PUBACK from the broker for topic "
                    f"{topic!r} within {WAIT:.0f}s")))
        return sorted(failed, key=lambda item: item[0])

    def ack(self, mid: int, qos: int) -> None:
        try:
            self.client.ack(mid, qos)
        except Exception:  # noqa: BLE001 - disconnected: the broker redelivers it
            log.debug("MQTT ack of message %s failed", mid, exc_info=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.client.disconnect()  # no UNSUBSCRIBE: a persistent session keeps its position
            self.client.loop_stop()
        except Exception:  # noqa: BLE001 - close must not raise
            log.debug("closing MQTT client %s", self.client_id, exc_info=True)
        finally:
            with _ids_lock:
                _ids_in_use.discard(self.client_id)


class MqttDriver(Driver):
    """``pubsub.mqtt3`` / ``bindings.mqtt3`` (and the ``mqtt`` aliases) on a real broker."""

    def __init__(self, component: ComponentConfig) -> None:
        super().__init__(component)
        self.is_binding = component.type.lower().startswith("bindings.")
        self._main: _Client | None = None
        self._consumer: _Client | None = None
        self._handlers: dict[str, Deliver] = {}
        self._binding_deliver: Deliver | None = None
        self._backlog: list[Any] = []
        self._lock = threading.Lock()

    def _parse(self) -> None:
        c = self.component
        url = urlsplit(c.require("url"))
        if url.scheme not in ("tcp", "mqtt", "ssl", "mqtts", "tcps", "tls") or not url.hostname:
            raise ComponentError(f"component {self.name!r}: metadata 'url' must look like "
                                 f"tcp://host:1883 (got {c.get('url')!r})")
        self.tls = url.scheme not in ("tcp", "mqtt")
        self.host, self.port = url.hostname, url.port or (8883 if self.tls else 1883)
        self.username = unquote(url.username or "")
        self.password = unquote(url.password or "")
        self.retain = is_truthy(c.get("retain", "false"))
        self.clean_session = is_truthy(c.get("cleanSession", "false"))
        if self.is_binding:
            self.topic = c.require("topic")
            self.client_id = c.require("consumerID")
            self.qos = 1
        else:
            self.client_id = c.get("consumerID", self.name)
            self.qos = int(c.get("qos", "1")) if c.get("qos", "1") in ("0", "1", "2") else -1
            if self.qos < 0:
                raise ComponentError(f"component {self.name!r}: metadata 'qos' must be 0, 1 or 2 "
                                     f"(got {c.get('qos')!r})")

    def _start(self) -> None:
        self._parse()
        suffix = "-producer" if self.is_binding else ""
        self._main = _Client(self, self.client_id + suffix, self._on_message)
        self._main.connect()

    def _event(self, client: _Client, msg: Any, topic: str, metadata: dict[str, str]
               ) -> InboundEvent:
        ack = (lambda: client.ack(msg.mid, msg.qos)) if msg.qos > 0 else None
        return InboundEvent(data=bytes(msg.payload), metadata=metadata, topic=topic, _ack=ack)

    def _on_message(self, client: _Client, msg: Any) -> None:
        """Pub/sub messages; one for a topic nobody subscribed to yet (a persistent session
        resumed before ``subscribe``) waits in a backlog instead of being lost until the next
        reconnect, as it would be in daprd."""
        with self._lock:
            found = self._match(msg.topic)
            if found is None:
                if len(self._backlog) < BACKLOG:
                    self._backlog.append((client, msg))
                return
        topic, deliver = found
        md = {"retained": "true" if msg.retain else "false"}
        self._hand_off(deliver, self._event(client, msg, topic, md))

    def _match(self, topic: str) -> tuple[str, Deliver] | None:
        if topic in self._handlers:
            return topic, self._handlers[topic]
        for sub, deliver in self._handlers.items():  # wildcards; "$share/GROUP/" is no part
            shared = sub.startswith("$share/") and sub.count("/") > 1
            if mqtt.topic_matches_sub(sub.split("/", 2)[2] if shared else sub, topic):
                return sub, deliver
        return None

    def _on_binding_message(self, client: _Client, msg: Any) -> None:
        assert self._binding_deliver is not None
        self._hand_off(self._binding_deliver,
                       self._event(client, msg, self.topic, {"topic": msg.topic}))

    def _publish(self, topic: str, data: bytes, metadata: Mapping[str, str]) -> None:
        if not topic:
            raise ComponentError(f"component {self.name!r}: topic name is empty")
        retain = is_truthy(metadata["retain"]) if metadata.get("retain") else self.retain
        self._connected().publish(topic, data, self.qos, retain)

    def _publish_many(self, topic: str, entries: Sequence[tuple[bytes, Mapping[str, str]]]
                      ) -> list[tuple[int, ComponentError]]:
        if not topic:
            raise ComponentError(f"component {self.name!r}: topic name is empty")
        failed: list[tuple[int, ComponentError]] = []
        runs: list[tuple[bool, list[int]]] = []  # consecutive entries of one retain: in order
        for index, (_data, metadata) in enumerate(entries):
            retain = is_truthy(metadata["retain"]) if metadata.get("retain") else self.retain
            if not runs or runs[-1][0] != retain:
                runs.append((retain, []))
            runs[-1][1].append(index)
        for retain, indexes in runs:
            refused = self._connected().publish_many(
                topic, [entries[i][0] for i in indexes], self.qos, retain)
            failed += [(indexes[i], error) for i, error in refused]
        return failed

    def _subscribe(self, topic: str, deliver: Deliver) -> None:
        client = self._connected()
        with self._lock:
            self._handlers[topic] = deliver
        try:
            client.subscribe(topic, self.qos)
        except ComponentError:
            with self._lock:
                self._handlers.pop(topic, None)
            raise
        with self._lock:
            waiting, self._backlog = self._backlog, []
        for client_, msg in waiting:
            self._on_message(client_, msg)

    def _invoke(self, operation: str, data: bytes, metadata: Mapping[str, str]
                ) -> tuple[bytes, dict[str, str]]:
        if operation != "create":
            raise ComponentError(f"component {self.name!r} ({self.component.type}) supports "
                                 f"operation 'create', not {operation!r}")
        self._connected().publish(metadata.get("topic") or self.topic, data, 1, self.retain)
        return b"", {}

    def _read(self, deliver: Deliver) -> None:
        self._connected()
        if self._consumer is not None:
            raise ComponentError(f"component {self.name!r}: the input binding is already read")
        self._binding_deliver = deliver
        consumer = _Client(self, self.client_id + "-consumer", self._on_binding_message)
        consumer.connect()
        self._consumer = consumer
        consumer.subscribe(self.topic, 1)

    def _connected(self) -> _Client:
        self._require_started(self._main)
        assert self._main is not None
        return self._main

    def _close(self) -> None:
        for client in (self._consumer, self._main):
            if client is not None:
                client.close()
        self._main = self._consumer = None
