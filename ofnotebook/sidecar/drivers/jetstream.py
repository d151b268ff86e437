"""NATS JetStream pub/sub through nats-py, behaving as daprd's ``pubsub.jetstream``.

``natsURL`` is required. Publishing is ``js.publish(topic, data)`` with the CloudEvent ``id`` as
``Nats-Msg-Id`` (JetStream deduplication, as daprd). Subscribing creates (or updates) the durable
push consumer ``durableName`` (default: the component name; daprd has no default) filtered on the
topic, with ``deliverPolicy`` (all, new, last, sequence, time; default all), ``ackWait``,
``maxDeliver``, ``maxAckPending``, ``ackPolicy`` (explicit), ``queueGroupName`` as deliver group
and a manual ack on ``event.ack()``: an event not acknowledged is redelivered after ``ackWait``.
Event metadata is ``{"Topic": <subject>}``.

Difference from daprd: daprd finds the stream by subject (``streamName`` optional), so the
stream must already exist, and fails otherwise. Locally, when no stream covers the topic (or
``streamName`` names a missing one), the driver creates one (file storage, subjects ``[topic]``)
so that a notebook needs no ``nats stream add`` first.

nats-py is asyncio: each driver runs one event loop in a daemon thread and the Driver methods
hand coroutines to it with ``run_coroutine_threadsafe``. Acks from the stand-in's threads reach
the loop in groups (``_Acks``), and none waits for the server's reply (nats-py's ``ack``, as
daprd's). With ``ackPolicy: all`` only the highest consumer sequence below which every message
is acked goes out, as that ack covers all before it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import functools
import json
import logging
import re
import threading
from typing import Any, Callable, Coroutine, Mapping, Sequence, TypeVar

from ..golang import is_truthy, metadata_duration, metadata_durations
from .acks import AckWindow
from .base import ComponentConfig, ComponentError, Deliver, Driver, InboundEvent

import nats
import nats.errors
import nats.js.errors
from nats.js import api

log = logging.getLogger(__name__)
T = TypeVar("T")
WAIT = 10.0
CONNECT_WAIT = 3.0


def _seconds(key: str, value: str) -> float:
    """A ``time.Duration`` field as daprd decodes it (a bare number counts seconds)."""
    try:
        return metadata_duration(value)
    except ValueError:
        raise ComponentError(f"metadata {key!r} must be a duration such as 30s (got {value!r})"
                             ) from None


def _dedupe(data: bytes) -> dict[str, str] | None:
    """The CloudEvent ``id`` as ``Nats-Msg-Id`` (JetStream deduplication, as daprd); none for
    data that is not a CloudEvent."""
    try:
        event = json.loads(data)
    except ValueError:
        return None
    if isinstance(event, dict) and isinstance(event.get("id"), str) and event["id"]:
        return {"Nats-Msg-Id": event["id"]}
    return None


class _Acks:
    """One subscription's acks, sent from the event loop in groups: the acks that arrive while
    one hand-over to the loop waits go with it (one wake-up and one task for many; nats-py
    buffers the publishes, so they leave together). With ``ackPolicy: all`` an ack covers every
    message up to its consumer sequence, so only the highest sequence below which all are
    acked is sent (``AckWindow``): never one still in the app."""

    def __init__(self, driver: JetStreamDriver, loop: asyncio.AbstractEventLoop,
                 ack_all: bool) -> None:
        self.driver, self.loop, self.ack_all = driver, loop, ack_all
        self.lock = threading.Lock()
        self.ready: list[Any] = []  # explicit: acked messages to send
        self.window = AckWindow()  # ack_all: consumer sequences delivered, in order
        self.waiting: dict[int, Any] = {}  # ack_all: sequence -> message not yet covered
        self.scheduled = False

    def delivered(self, msg: Any) -> Callable[[], None]:
        """On the loop, as ``msg`` arrives: its ``InboundEvent`` ack."""
        if not self.ack_all:
            return functools.partial(self.ack, msg, 0)
        seq = msg.metadata.sequence.consumer
        with self.lock:
            self.window.add(seq)
            self.waiting[seq] = msg
        return functools.partial(self.ack, msg, seq)

    def ack(self, msg: Any, seq: int) -> None:
        """From the stand-in's threads."""
        with self.lock:
            if self.ack_all:
                self.window.ack(seq)
            else:
                self.ready.append(msg)
            if self.scheduled:
                return
            self.scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._flush)
        except RuntimeError:  # loop closed: redelivered after ackWait
            log.debug("JetStream ack of %s after close", self.driver.name)

    def _flush(self) -> None:
        with self.lock:
            self.scheduled = False
            send, self.ready = self.ready, []
            top = self.window.advance() if self.ack_all else None
            if top is not None:
                send = [self.waiting[top]]
                for seq in [s for s in self.waiting if s <= top]:
                    del self.waiting[seq]
        if send:
            self.loop.create_task(self._send(send))

    async def _send(self, messages: list[Any]) -> None:
        for msg in messages:
            try:
                await msg.ack()
            except nats.errors.Error as exc:  # disconnected: redelivered after ackWait
                log.debug("JetStream ack of %s failed: %r", self.driver.name, exc)


class JetStreamDriver(Driver):
    """``pubsub.jetstream`` on a real NATS server with JetStream enabled."""

    def __init__(self, component: ComponentConfig) -> None:
        super().__init__(component)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._nc: Any = None
        self._js: Any = None
        self._subs: list[Any] = []
        self._streams: dict[str, str] = {}
        self._last_error = ""
        self._failed: asyncio.Future[None] | None = None

    def _consumer_config(self, topic: str) -> Any:
        c = self.component
        policy = c.get("deliverPolicy", "all")
        if policy not in ("all", "last", "new", "sequence", "time"):
            raise ComponentError(f"component {self.name!r}: metadata 'deliverPolicy' must be one "
                                 f"of all, last, new, sequence, time (got {policy!r})")
        ack = {"explicit": api.AckPolicy.EXPLICIT, "all": api.AckPolicy.ALL,
               "none": api.AckPolicy.NONE}.get(c.get("ackPolicy", "explicit"),
                                              api.AckPolicy.EXPLICIT)
        cfg = api.ConsumerConfig(
            durable_name=self.durable,
            deliver_group=c.get("queueGroupName") or None, filter_subject=topic,
            deliver_policy=api.DeliverPolicy({"sequence": "by_start_sequence",
                                              "time": "by_start_time"}.get(policy, policy)),
            ack_policy=ack, flow_control=is_truthy(c.get("flowControl")) or None,
            mem_storage=is_truthy(c.get("memoryStorage")) or None)

        def whole(key: str) -> int:
            try:
                return int(c.get(key))
            except ValueError:
                raise ComponentError(f"component {self.name!r}: metadata {key!r} must be a "
                                     f"whole number (got {c.get(key)!r})") from None

        for key, attr in (("startSequence", "opt_start_seq"), ("maxDeliver", "max_deliver"),
                          ("maxAckPending", "max_ack_pending"), ("replicas", "num_replicas"),
                          ("rateLimit", "rate_limit_bps")):
            if c.get(key):
                setattr(cfg, attr, whole(key))
        if c.get("startTime"):  # unix seconds, as daprd
            cfg.opt_start_time = datetime.datetime.fromtimestamp(whole("startTime"),
                                                                 tz=datetime.timezone.utc)
        for key, attr in (("ackWait", "ack_wait"), ("heartbeat", "idle_heartbeat")):
            if c.get(key):
                setattr(cfg, attr, _seconds(key, c.get(key)))
        if c.get("backOff"):
            try:
                cfg.backoff = metadata_durations(c.get("backOff").strip("[]"))
            except ValueError:
                raise ComponentError(f"metadata 'backOff' must be durations such as 1s,5s "
                                     f"(got {c.get('backOff')!r})") from None
        return cfg

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = WAIT) -> T:
        loop = self._loop
        if loop is None or not loop.is_running():
            coro.close()
            raise self._not_started()  # the loop is gone
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise ComponentError(f"component {self.name!r}: NATS at {self.address} did not answer "
                                 f"within {timeout:.0f}s") from exc
        except (nats.errors.Error, ValueError) as exc:
            raise ComponentError(f"component {self.name!r}: NATS JetStream error: {exc!r}") from exc

    def _loop_main(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    async def _error(self, exc: Exception) -> None:
        self._last_error = repr(exc)
        log.debug("NATS error for %s: %r", self.name, exc)
        if self._failed is not None and not self._failed.done():
            self._failed.set_result(None)  # the first connection attempt failed: stop there

    async def _connect(self) -> None:
        c = self.component
        options: dict[str, Any] = {"name": c.get("name", "dapr.io - pubsub.jetstream")}
        if c.get("token"):
            options["token"] = c.get("token")
        self._nc = nats.NATS()
        self._failed = asyncio.get_running_loop().create_future()
        connect = asyncio.ensure_future(self._nc.connect(
            [u.strip() for u in self.url.split(",")], connect_timeout=2, reconnect_time_wait=1,
            max_reconnect_attempts=-1, error_cb=self._error, **options))
        await asyncio.wait([connect, self._failed], timeout=CONNECT_WAIT,
                           return_when=asyncio.FIRST_COMPLETED)
        self._failed.cancel()
        self._failed = None
        if not connect.done() or connect.cancelled() or connect.exception() is not None:
            connect.cancel()
            await asyncio.gather(connect, return_exceptions=True)
            await self._nc.close()
            raise ComponentError(
                f"component {self.name!r} ({c.type}) cannot reach NATS at {self.address}: "
                f"{self._last_error or 'no answer'}; start it (nats-server -js) or fix metadata "
                f"'natsURL'")
        self._js = self._nc.jetstream(domain=c.get("domain") or None,
                                      prefix=c.get("apiPrefix") or "$JS.API")
        try:
            await self._js.account_info()
        except nats.errors.Error as exc:
            await self._nc.close()
            raise ComponentError(f"component {self.name!r}: NATS at {self.address} has no "
                                 f"JetStream ({exc}); start nats-server with -js") from exc

    async def _stream_for(self, topic: str) -> str:
        """The stream holding ``topic``, created when missing (daprd would fail instead)."""
        if topic in self._streams:
            return self._streams[topic]
        name = self.component.get("streamName")
        try:
            if name:
                await self._js.stream_info(name)
            else:
                name = await self._js.find_stream_name_by_subject(topic)
        except nats.js.errors.NotFoundError:
            name = name or re.sub(r"[^A-Za-z0-9_-]", "_", topic.replace("*", "ALL")
                                  .replace(">", "REST"))
            log.info("creating JetStream stream %r for subject %r", name, topic)
            await self._js.add_stream(name=name, subjects=[topic])
        self._streams[topic] = name
        return name

    def _start(self) -> None:
        self.url = self.component.require("natsURL")
        self.address = self.url.split("://", 1)[-1].rsplit("@", 1)[-1]
        self.durable = re.sub(r"[.*>\s]", "_", self.component.get("durableName", self.name))
        for key in ("jwt", "seedKey", "tls_client_cert", "tls_client_key"):
            if self.component.get(key):
                raise ComponentError(f"component {self.name!r}: metadata {key!r} (JWT or TLS "
                                     "client authentication) is not supported locally; use "
                                     "'token' or no authentication")
        self._consumer_config(self.durable)  # bad metadata fails now, not at subscribe
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop_main, args=(self._loop,),
                                        name=f"jetstream-{self.name}", daemon=True)
        self._thread.start()
        self._run(self._connect(), CONNECT_WAIT + 2)

    def _publish(self, topic: str, data: bytes, metadata: Mapping[str, str]) -> None:
        failed = self._publish_many(topic, [(data, metadata)])
        if failed:
            raise failed[0][1]

    def _publish_many(self, topic: str, entries: Sequence[tuple[bytes, Mapping[str, str]]]
                      ) -> list[tuple[int, ComponentError]]:
        """Every entry's publish at once on the loop (written in order on the one connection,
        the server's acks awaited together: one round trip rather than one per entry)."""
        async def send() -> list[BaseException | None]:
            await self._stream_for(topic)
            return await asyncio.gather(*(self._js.publish(topic, data, headers=_dedupe(data))
                                          for data, _metadata in entries),
                                        return_exceptions=True)

        return [(index, ComponentError(f"component {self.name!r}: publishing to JetStream "
                                       f"subject {topic!r} failed: {outcome!r}"))
                for index, outcome in enumerate(self._run(send()))
                if isinstance(outcome, BaseException)]

    def _subscribe(self, topic: str, deliver: Deliver) -> None:
        cfg = self._consumer_config(topic)
        manual = cfg.ack_policy != api.AckPolicy.NONE
        loop = self._started(self._loop)

        acks = _Acks(self, loop, cfg.ack_policy == api.AckPolicy.ALL)

        async def on_msg(msg: Any) -> None:
            ack = None
            if manual:
                ack = acks.delivered(msg)
            self._hand_off(deliver, InboundEvent(data=msg.data, metadata={"Topic": msg.subject},
                                                 topic=topic, _ack=ack))

        async def bind() -> None:
            cfg.deliver_subject = self._nc.new_inbox()
            stream = await self._stream_for(topic)
            try:
                info = await self._js.consumer_info(stream, self.durable)
            except nats.js.errors.NotFoundError:
                info = None
            if info is not None and info.config.filter_subject not in (None, topic):
                raise ComponentError(
                    f"component {self.name!r}: durable consumer {self.durable!r} of stream "
                    f"{stream!r} already follows {info.config.filter_subject!r}; set a "
                    f"different 'durableName' to subscribe to {topic!r}")
            if info is not None and info.push_bound and not cfg.deliver_group:
                raise ComponentError(
                    f"component {self.name!r}: durable consumer {self.durable!r} is in use by "
                    f"another subscriber; set a different 'durableName' or a 'queueGroupName'")
            if info is None or not info.push_bound:  # else join the queue group as it is
                info = await self._js.add_consumer(stream, cfg)
            self._subs.append(await self._js.subscribe_bind(
                stream=stream, config=info.config, consumer=info.name, cb=on_msg,
                manual_ack=True))

        self._run(bind())

    def _close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                future.result(max(0.1, self._time_left() - 1.0))
            except Exception:  # noqa: BLE001 - close must not raise
                future.cancel()
                log.debug("closing NATS connection of %s", self.name, exc_info=True)
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(self._time_left())
        self._loop = self._thread = None

    async def _shutdown(self) -> None:
        for sub in self._subs:  # the durable consumer stays, as daprd's Unsubscribe leaves it
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001
                log.debug("unsubscribing %s", self.name, exc_info=True)
        self._subs.clear()
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.flush(1)  # acknowledgements already handed over
            except Exception:  # noqa: BLE001
                pass
            await self._nc.close()
