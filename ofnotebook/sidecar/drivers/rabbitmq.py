"""RabbitMQ pub/sub and bindings through pika, behaving as daprd's ``rabbitmq`` components.

* ``pubsub.rabbitmq``: an exchange per topic (``exchangeKind``, default fanout; ``durable``
  default true and ``deletedWhenUnused`` default true, as daprd's code), a queue per consumer,
  ``{consumerID}-{topic}`` (``consumerID`` defaults to the component name; daprd to the app ID),
  bound to it. Publishing declares the exchange and publishes to it (``routingKey``,
  ``ttlInSeconds``, ``priority``, ``contentType``, ``messageId``... from the request metadata).
* ``bindings.rabbitmq``: ``host`` (alias ``connectionString``) and ``queueName`` are required.
  ``create`` publishes to that queue (persistent, request metadata as AMQP headers); ``read``
  consumes it and passes the string headers as metadata, URL-query-escaped as daprd does.

One ``BlockingConnection`` per driver, used only by its I/O thread: publishes and acks from other
threads are handed over with ``add_callback_threadsafe``. Acknowledgements are manual (unless
``autoAck``): a message not acknowledged is requeued by the broker when the channel closes.

At speed (issue 14): acks that arrive while one hand-over to the I/O thread waits go with it, as
one ``basic_ack(multiple=True)`` up to the highest tag below which every delivery of the channel
is acked (never past one still in the app: at-least-once stays exact). Acks beyond a gap wait
for it; once they are half the prefetch window they go one by one, so a slow message cannot
starve the window, and closing sends them all. Without ``prefetchCount`` the window is
``PREFETCH`` (daprd: unlimited), above what the Dispatcher keeps in flight (4 bulk calls of 100
entries) and the acks a gap holds, so a long queue is not pulled into the stand-in's memory at
once; ``0`` is unlimited.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import ssl
import threading
from typing import Any, Callable, Mapping, Sequence, TypeVar
from urllib.parse import quote, quote_plus, urlsplit

from ..golang import parse_bool
from .acks import AckWindow
from .base import ComponentConfig, ComponentError, Deliver, Driver, InboundEvent

import pika
import pika.exceptions

log = logging.getLogger(__name__)
T = TypeVar("T")
WAIT = 10.0
KINDS = ("fanout", "topic", "direct", "headers")
#: Unacked messages per consumer when prefetchCount is not set: the Dispatcher's 400 in flight
#: (4 bulk calls x 100) plus the acks a gap may hold back (half the window) still leave room.
PREFETCH = 1024


def _bool(value: str, default: bool) -> bool:
    """Go's ``strconv.ParseBool`` (any case); daprd keeps the default on a value it cannot
    parse."""
    return parse_bool(value.strip().lower(), default)


def _find(md: Mapping[str, str], *keys: str) -> str:
    """A request metadata value by any of ``keys``, case-insensitively (daprd's tryGetProperty)."""
    lowered = {k.lower(): v for k, v in md.items() if v}
    return next((lowered[k.lower()] for k in keys if k.lower() in lowered), "")


class _Acks:
    """One channel's deliveries waiting for their acks, by delivery tag (the driver's lock
    guards it; the I/O thread sends what ``take`` gives)."""

    def __init__(self, channel: Any, singles_at: int) -> None:
        self.channel = channel
        self.window = AckWindow()
        self.singles_at = singles_at
        self.scheduled = False  # a flush is waiting on the I/O thread

    def take(self, everything: bool) -> tuple[int | None, list[int]]:
        """The tag up to which every delivery is acked (one multiple ack) and, when
        ``everything`` or once they fill ``singles_at``, the acked tags beyond the first gap."""
        top = self.window.advance()
        gapped = everything or self.window.gapped >= self.singles_at
        return top, self.window.take_gapped() if gapped else []


class RabbitMQDriver(Driver):
    """``pubsub.rabbitmq`` and ``bindings.rabbitmq`` on a real RabbitMQ."""

    def __init__(self, component: ComponentConfig) -> None:
        super().__init__(component)
        self.is_binding = component.type.lower().startswith("bindings.")
        self._conn: Any = None
        self._io: threading.Thread | None = None
        self._stop = threading.Event()
        self._pub: Any = None
        self._declared: set[str] = set()
        self._subs: list[tuple[str, Deliver]] = []
        self._ack_lock = threading.Lock()
        self._acks: list[_Acks] = []  # the consuming channels' (I/O thread)

    def _parse(self) -> None:
        c = self.component
        if self.is_binding:
            self.url = c.get("host") or c.get("connectionString") or c.require("host")
            self.queue = c.require("queueName")
            self.durable = _bool(c.get("durable"), False)
            self.auto_delete = _bool(c.get("deleteWhenUnused"), False)
            self.exclusive = _bool(c.get("exclusive"), False)
        else:
            self.url = c.get("connectionString") or c.get("host")
            if not self.url and not c.get("hostname"):
                raise ComponentError(f"component {self.name!r} ({c.type}) needs metadata "
                                     "'connectionString' (amqp://user:pass@host:5672) or "
                                     "'hostname', 'username' and 'password'")
            if not self.url:
                user = quote(c.get("username"), safe="")
                auth = f"{user}:{quote(c.get('password'), safe='')}@" if user else ""
                self.url = f"{c.get('protocol', 'amqp')}://{auth}{c.require('hostname')}"
            self.consumer_id = c.get("consumerID", self.name)
            self.durable = _bool(c.get("durable"), True)
            self.auto_delete = _bool(c.get("deletedWhenUnused"), True)
            self.kind = c.get("exchangeKind", "fanout")
            if self.kind not in KINDS:
                raise ComponentError(f"component {self.name!r}: metadata 'exchangeKind' must be "
                                     f"one of {', '.join(KINDS)} (got {self.kind!r})")
            self.auto_ack = _bool(c.get("autoAck"), False)
            self.dead_letter = _bool(c.get("enableDeadLetter"), False)
            self.props_to_md = _bool(c.get("publishMessagePropertiesToMetadata"), False)
            self.delivery_mode = self._int("deliveryMode", 0, 2)
            self.max_len = self._int("maxLen", 0)
            self.max_len_bytes = self._int("maxLenBytes", 0)
        self.prefetch = self._int("prefetchCount", PREFETCH, 65535)
        self.ttl = self._int("ttlInSeconds", 0)
        self.max_priority = self._int("maxPriority", 0, 255) if self.is_binding else 0
        wait_key = "reconnectWaitInSeconds" if self.is_binding else "reconnectWaitSeconds"
        self.reconnect_wait = float(self._int(wait_key, 5 if self.is_binding else 3) or 3)
        address = urlsplit(self.url)
        self.address = f"{address.hostname or '?'}:{address.port or 5672}"

    def _int(self, key: str, default: int, top: int = 2**62) -> int:
        raw = self.component.get(key, str(default)).strip().removesuffix("s")
        if not raw.isdigit() or int(raw) > top:
            raise ComponentError(f"component {self.name!r}: metadata {key!r} must be a number "
                                 f"from 0 to {top} (got {self.component.get(key)!r})")
        return int(raw)

    def _connect(self) -> Any:
        try:
            params = pika.URLParameters(self.url)
        except Exception as exc:  # noqa: BLE001 - pika raises several kinds for a bad URL
            raise ComponentError(f"component {self.name!r}: bad RabbitMQ connection string "
                                 f"{self.url!r}: {exc}") from exc
        params.socket_timeout = 3
        params.stack_timeout = 5
        params.connection_attempts = 1
        params.heartbeat = 10  # daprd's heartBeat default
        if self.component.get("clientName"):
            params.client_properties = {"connection_name": self.component.get("clientName")}
        if urlsplit(self.url).scheme == "amqps":
            context = ssl.create_default_context(cadata=self.component.get("caCert") or None)
            params.ssl_options = pika.SSLOptions(context, params.host)
        try:
            return pika.BlockingConnection(params)
        except pika.exceptions.AMQPError as exc:
            raise ComponentError(
                f"component {self.name!r} ({self.component.type}) cannot connect to RabbitMQ at "
                f"{self.address}: {exc!r}; start it (rabbitmq-server -detached) or fix the "
                f"metadata {'host' if self.is_binding else 'connectionString'!r}") from exc

    def _start(self) -> None:
        self._parse()
        self._conn = self._connect()
        try:
            if self.is_binding:
                self._declare_queue(self._publisher())  # as daprd's Init
        except Exception as exc:
            raise ComponentError(f"component {self.name!r}: declaring queue {self.queue!r} "
                                 f"failed: {exc!r}") from exc
        self._io = threading.Thread(target=self._run, name=f"rabbitmq-io-{self.name}",
                                    daemon=True)
        self._io.start()

    def _run(self) -> None:
        """The I/O thread: the only one that touches the connection and its channels."""
        while not self._stop.is_set():
            try:
                self._conn.process_data_events(time_limit=0.25)
            except Exception as exc:  # noqa: BLE001 - connection lost: reconnect
                if self._stop.is_set():
                    break
                log.warning("RabbitMQ connection of %s lost (%r); reconnecting", self.name, exc)
                self._reconnect()
        try:
            for acks in self._acks:  # acked, waiting for a gap: sent now, not redelivered
                self._flush(acks, everything=True)
            if self._conn is not None and self._conn.is_open:
                self._conn.close()  # closes the channels: unacknowledged messages are requeued
        except Exception:  # noqa: BLE001 - close must not raise
            log.debug("closing RabbitMQ connection of %s", self.name, exc_info=True)

    def _reconnect(self) -> None:
        while not self._stop.wait(self.reconnect_wait):
            try:
                self._conn = self._connect()
                self._pub, self._declared, self._acks = None, set(), []
                if self.is_binding:
                    self._declare_queue(self._publisher())
                for topic, deliver in self._subs:
                    self._consume(topic, deliver)
                return
            except Exception as exc:  # noqa: BLE001 - keep trying until closed
                log.warning("reconnecting %s to RabbitMQ failed: %r", self.name, exc)

    def _close(self) -> None:
        self._stop.set()
        try:
            if self._io is not None:  # the I/O thread closes the connection: wake it now
                self._conn.add_callback_threadsafe(lambda: None)
            elif self._conn is not None and self._conn.is_open:
                self._conn.close()
        except Exception:  # noqa: BLE001 - close must not raise
            log.debug("closing RabbitMQ connection of %s", self.name, exc_info=True)
        if self._io is not None:
            self._io.join(self._time_left())
        self._io = None

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the I/O thread and return its result."""
        self._require_started(self._conn)
        if self._io is None or threading.current_thread() is self._io:
            return fn()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    future.set_exception(exc)

        try:
            self._conn.add_callback_threadsafe(run)
            return future.result(WAIT)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise ComponentError(f"component {self.name!r}: RabbitMQ at {self.address} did not "
                                 f"answer within {WAIT:.0f}s") from exc
        except pika.exceptions.AMQPError as exc:
            self._pub = None  # a channel error closed it: open a new one next time
            raise ComponentError(f"component {self.name!r}: RabbitMQ error: {exc!r}") from exc

    def _publisher(self) -> Any:
        if self._pub is None or not self._pub.is_open:
            self._pub = self._conn.channel()
            if _bool(self.component.get("publisherConfirm"), False):
                self._pub.confirm_delivery()
        return self._pub

    def _declare_queue(self, ch: Any) -> None:
        args: dict[str, Any] = {}
        if self.ttl:
            args["x-message-ttl"] = self.ttl * 1000
        if self.max_priority:
            args["x-max-priority"] = self.max_priority
        ch.queue_declare(self.queue, durable=self.durable, auto_delete=self.auto_delete,
                         exclusive=self.exclusive, arguments=args)

    def _exchange(self, ch: Any, name: str, kind: str, durable: bool) -> None:
        if name not in self._declared:
            ch.exchange_declare(name, exchange_type=kind, durable=durable,
                                auto_delete=self.auto_delete)
            self._declared.add(name)

    def _consume(self, topic: str, deliver: Deliver) -> None:
        ch = self._conn.channel()
        acks = _Acks(ch, max(1, self.prefetch // 2) if self.prefetch else 2**31)
        self._acks.append(acks)
        on_message = functools.partial(self._on_message, topic, deliver, acks)
        if self.is_binding:
            ch.basic_qos(prefetch_count=self.prefetch, global_qos=True)
            ch.basic_consume(self.queue, on_message)
            return
        queue_name = f"{self.consumer_id}-{topic}"
        self._exchange(ch, topic, self.kind, self.durable)
        args: dict[str, Any] = {"x-queue-type": "classic"}
        if self.max_len:
            args["x-max-length"] = self.max_len
        if self.max_len_bytes:
            args["x-max-length-bytes"] = self.max_len_bytes
        if self.dead_letter:  # as daprd: dlx-{queue} (fanout, durable) -> dlq-{queue} (lazy)
            dlx, dlq = f"dlx-{queue_name}", f"dlq-{queue_name}"
            self._exchange(ch, dlx, "fanout", True)
            ch.queue_declare(dlq, durable=True, auto_delete=self.auto_delete,
                             arguments={**args, "x-queue-mode": "lazy"})
            ch.queue_bind(dlq, dlx)
            args["x-dead-letter-exchange"] = dlx
        ch.queue_declare(queue_name, durable=self.durable, auto_delete=self.auto_delete,
                         arguments=args)
        if self.prefetch:
            ch.basic_qos(prefetch_count=self.prefetch)
        ch.queue_bind(queue_name, topic, routing_key="")
        ch.basic_consume(queue_name, on_message, auto_ack=self.auto_ack,
                         consumer_tag=queue_name)

    def _on_message(self, topic: str, deliver: Deliver, acks: _Acks, ch: Any, method: Any,
                    props: Any, body: bytes) -> None:
        md: dict[str, str] = {}
        headers = props.headers or {}
        if self.is_binding:
            md = {quote_plus(str(k)): quote_plus(v.decode() if isinstance(v, bytes) else v)
                  for k, v in headers.items() if isinstance(v, (str, bytes))}
        elif self.props_to_md:
            for key, value in (("messageid", props.message_id), ("type", props.type),
                               ("correlationid", props.correlation_id),
                               ("contenttype", props.content_type)):
                if value:
                    md[key] = value
            md.update({str(k): v.decode() if isinstance(v, bytes) else str(v)
                       for k, v in headers.items() if v is not None})
        acker = None
        if self.is_binding or not self.auto_ack:
            with self._ack_lock:
                acks.window.add(method.delivery_tag)
            acker = functools.partial(self._ack, acks, method.delivery_tag)
        self._hand_off(deliver, InboundEvent(data=body, metadata=md, topic=topic, _ack=acker))

    def _ack(self, acks: _Acks, tag: int) -> None:
        """From the stand-in's threads: record the ack; the first one while no flush waits
        hands one over to the I/O thread, and every ack until it runs goes with it."""
        with self._ack_lock:
            acks.window.ack(tag)
            if acks.scheduled:
                return
            acks.scheduled = True
        try:
            self._conn.add_callback_threadsafe(functools.partial(self._flush, acks))
        except Exception:  # noqa: BLE001 - closed: the broker requeued the message
            log.debug("RabbitMQ ack of %s after close", self.name, exc_info=True)

    def _flush(self, acks: _Acks, everything: bool = False) -> None:
        """On the I/O thread: one multiple ack for the contiguous acked run, and the acks
        beyond a gap when ``take`` gives them. A closed channel: the broker requeued them."""
        with self._ack_lock:
            acks.scheduled = False
            top, singles = acks.take(everything)
        if not acks.channel.is_open:
            return
        if top is not None:
            acks.channel.basic_ack(top, multiple=True)
        for tag in singles:
            acks.channel.basic_ack(tag)

    def _properties(self, md: Mapping[str, str], **extra: Any) -> Any:
        ttl = _find(md, "ttlInSeconds") or (str(self.ttl) if self.ttl and not self.is_binding
                                            else "")
        priority = _find(md, "priority")
        return pika.BasicProperties(
            content_type=_find(md, "contentType") or "text/plain",
            expiration=str(int(ttl) * 1000) if ttl.isdigit() else None,
            priority=int(priority) if priority.isdigit() else None, **extra)

    def _publish(self, topic: str, data: bytes, metadata: Mapping[str, str]) -> None:
        failed = self._publish_many(topic, [(data, metadata)])
        if failed:
            raise failed[0][1]

    def _publish_many(self, topic: str, entries: Sequence[tuple[bytes, Mapping[str, str]]]
                      ) -> list[tuple[int, ComponentError]]:
        """All entries in one hand-over to the I/O thread (one wake-up, the frames written
        together; with ``publisherConfirm`` each still waits for its confirm)."""
        def send() -> list[tuple[int, ComponentError]]:
            failed: list[tuple[int, ComponentError]] = []
            for index, (data, metadata) in enumerate(entries):
                props = self._properties(
                    metadata, delivery_mode=self.delivery_mode or None,
                    message_id=_find(metadata, "messageId") or None,
                    correlation_id=_find(metadata, "correlationId") or None,
                    type=_find(metadata, "type") or None)
                try:
                    ch = self._publisher()
                    self._exchange(ch, topic, self.kind, self.durable)
                    ch.basic_publish(topic, metadata.get("routingKey", ""), data, props)
                except pika.exceptions.AMQPError as exc:  # a closed channel opens again next
                    self._pub = None
                    failed.append((index, ComponentError(
                        f"component {self.name!r}: publishing to RabbitMQ exchange {topic!r} "
                        f"failed: {exc!r}")))
            return failed

        return self._call(send)

    def _subscribe(self, topic: str, deliver: Deliver) -> None:
        self._call(lambda: self._consume(topic, deliver))
        self._subs.append((topic, deliver))

    def _invoke(self, operation: str, data: bytes, metadata: Mapping[str, str]
                ) -> tuple[bytes, dict[str, str]]:
        if operation != "create":
            raise ComponentError(f"component {self.name!r} ({self.component.type}) supports "
                                 f"operation 'create', not {operation!r}")
        props = self._properties(metadata, delivery_mode=2, headers=dict(metadata))
        self._call(lambda: self._publisher().basic_publish("", self.queue, data, props))
        return b"", {}

    def _read(self, deliver: Deliver) -> None:
        self._call(lambda: self._consume(self.queue, deliver))
        self._subs.append((self.queue, deliver))
