"""Redis ``pubsub.redis`` (Streams), ``bindings.redis`` and ``state.redis``, stored as daprd does,
so a real daprd can take over the same Redis.

* pub/sub: XADD with the CloudEvent in field ``data`` (``metadata`` JSON too when the publish had
  some); group and consumer both named ``consumerID`` (default: the component name; daprd: the app
  ID), created at ``0`` with MKSTREAM; XACK on ``event.ack()``. Unacked entries stay pending: they
  are replayed (XREADGROUP from ``0``) when a consumer (re)starts or reconnects, and entries idle
  past ``processingTimeout`` at any consumer are XAUTOCLAIMed every ``redeliverInterval``. An entry
  in flight in this process is never delivered twice.
* state: one HASH per key, fields ``data`` and ``version`` (the etag). binding: SET/GET/DEL/INCR.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from functools import partial
from typing import Any, Mapping, Sequence

from ..golang import is_truthy, metadata_duration
from .base import (ComponentError, Deliver, Driver, EtagInvalid, EtagMismatch, InboundEvent,
                   StateOperation)

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

_BLOCK_MS = 500  # XREADGROUP BLOCK: short, so close() returns promptly
_MAX_PAUSE = 1.0  # reconnect backoff cap: a local server comes back fast
_OPERATIONS = ("create", "get", "delete", "increment")
_NET = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

# One script for SaveState, DeleteState and ExecuteStateTransaction. KEYS are the keys, ARGV four
# values per key: operation, etag ("0" when none was given), value, ttl. Each etag is checked the
# way Dapr's setDefaultQuery/delDefaultQuery check it (without one the write wins unless daprd
# marked the key first-write; a plain string, written without etags, is replaced), against the
# state the operations before it leave; only then is anything written: all or nothing, where
# Dapr's MULTI of per-key scripts would keep the writes before a failed one.
_STATE_SCRIPT = """local seen = {}
for i, key in ipairs(KEYS) do
  local op, etag = ARGV[i * 4 - 3], ARGV[i * 4 - 2]
  local s = seen[key]
  if not s then
    local version = redis.pcall("HGET", key, "version")
    if type(version) == "table" then s = {wrong = true}
    else s = {version = version, fwr = redis.call("HGET", key, "first-write")} end
    seen[key] = s
  end
  local v = s.version
  local ok = s.wrong or not v or v == "" or v == etag
  if op == "upsert" then ok = ok or (not s.fwr and etag == "0") else ok = ok or etag == "0" end
  if not ok then return redis.error_reply("etag mismatch " .. i) end
  if op == "upsert" then s.version = tostring((tonumber(v) or 0) + 1)
  else s.version = false; s.fwr = false end
  s.wrong = false
end
for i, key in ipairs(KEYS) do
  if ARGV[i * 4 - 3] == "upsert" then
    local kind = redis.call("TYPE", key)["ok"]
    if kind ~= "hash" and kind ~= "none" then redis.call("DEL", key) end
    redis.call("HSET", key, "data", ARGV[i * 4 - 1])
    redis.call("HINCRBY", key, "version", 1)
    local ttl = tonumber(ARGV[i * 4])
    if ttl > 0 then redis.call("EXPIRE", key, ttl)
    elseif ttl < 0 then redis.call("PERSIST", key) end
  else
    redis.call("DEL", key)
  end
end
return #KEYS"""



class RedisDriver(Driver):
    """One Redis component; each subscription runs in a daemon thread with its own connection."""

    def __init__(self, component: Any) -> None:
        super().__init__(component)
        self._client: Any = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._consumers: dict[str, _StreamConsumer] = {}

    def _bad(self, key: str, value: str, expected: str) -> ComponentError:
        return ComponentError(f"component {self.name!r} ({self.component.type}): metadata {key}="
                              f"{value!r} is not {expected}; fix it in the component spec")

    def _number(self, key: str, default: float, duration: bool = False) -> float:
        """An integer, or for durations seconds (dapr/kit: a bare number means seconds)."""
        raw = self.component.get(key)
        if not raw:
            return default
        if duration:
            try:
                return metadata_duration(raw)
            except ValueError:
                raise self._bad(key, raw, "a duration such as 500ms, 30s or 1m") from None
        if not re.fullmatch(r"-?\d+", raw):
            raise self._bad(key, raw, "an integer")
        return int(raw)

    def _configure(self) -> None:
        meta = self.component
        if meta.get("redisType", "node") != "node" or is_truthy(meta.get("failover")):
            raise ComponentError(f"component {self.name!r}: only a single Redis node is supported "
                                 "locally; remove redisType=cluster/failover for local runs")
        raw = meta.require("redisHost").strip()
        match = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:,\s]+)(?::(\d+))?", raw)
        if not match:
            raise self._bad("redisHost", raw, "host:port (one Redis node, e.g. 127.0.0.1:6379)")
        self._host = match.group(1) or match.group(3)
        self._port = int(match.group(2) or match.group(4) or meta.get("redisPort", "6379"))
        self._address = f"{self._host}:{self._port}"
        self._db = int(self._number("redisDB", 0))
        self._max_len = int(self._number("maxLenApprox", 0))
        self._stream_ttl = self._number("streamTTL", 0, duration=True)
        self._ttl = int(self._number("ttlInSeconds", 0))
        self._depth = max(1, int(self._number("queueDepth", 100)))
        # Dapr's code defaults (its metadata.yaml lists them the other way round).
        self._processing = self._number("processingTimeout", 60, duration=True)
        self._redeliver = self._number("redeliverInterval", 15, duration=True)
        self._group = meta.get("consumerID", self.name)

    def _new_client(self, retries: int) -> Any:
        tls: dict[str, Any] = {}
        if is_truthy(self.component.get("enableTLS")):
            skip = is_truthy(self.component.get("insecureSkipTLSVerify"))
            tls = {"ssl": True, "ssl_cert_reqs": "none" if skip else "required"}
        return redis.Redis(
            host=self._host, port=self._port, db=self._db,
            username=self.component.get("redisUsername") or None,
            password=self.component.get("redisPassword") or None,
            socket_connect_timeout=2.0, socket_timeout=5.0,
            retry=Retry(ExponentialBackoff(cap=0.512, base=0.008), retries), **tls)  # Dapr's

    def _start(self) -> None:
        self._configure()
        self._pump_size = self._depth  # the XREADGROUP loop waits while a batch is queued
        client = self._new_client(retries=0)  # fail fast: no retries for the first PING
        try:
            client.ping()
        except redis.exceptions.RedisError as exc:
            client.close()
            if isinstance(exc, _NET) and not isinstance(exc, redis.exceptions.AuthenticationError):
                raise ComponentError(
                    f"component {self.name!r} ({self.component.type}) cannot reach Redis at "
                    f"{self._address}: {exc}. Start Redis there (e.g. `redis-server --port "
                    f"{self._port}`) or point metadata redisHost at a running server.") from None
            raise ComponentError(f"component {self.name!r} ({self.component.type}): Redis at "
                                 f"{self._address} refused the connection: {exc}; fix "
                                 "redisPassword/redisUsername") from None
        client.set_retry(Retry(ExponentialBackoff(cap=0.512, base=0.008), 2))
        self._client = client
        self._state_script = client.register_script(_STATE_SCRIPT)

    def _close(self) -> None:
        self._stop.set()
        for consumer in list(self._consumers.values()):
            consumer.thread.join(self._time_left(0.1))
        if self._client is not None:
            self._client.close()

    def _need(self) -> Any:
        self._require_started(self._client)
        return self._client

    def _failed(self, what: str, exc: Exception) -> ComponentError:
        if isinstance(exc, _NET):
            return ComponentError(f"component {self.name!r}: Redis at {self._address} is "
                                  f"unreachable while {what}: {exc}; is the server running?")
        return ComponentError(f"component {self.name!r}: {what} failed: {exc}")

    def _fields(self, data: bytes, metadata: Mapping[str, str]) -> dict[str, Any]:
        fields: dict[str, Any] = {"data": data}
        if metadata:
            fields["metadata"] = json.dumps(dict(metadata))
        return fields

    def _trim(self) -> dict[str, Any]:
        if self._max_len > 0:
            return {"maxlen": self._max_len, "approximate": True}
        if self._stream_ttl > 0:
            return {"minid": f"{int((time.time() - self._stream_ttl) * 1000)}-0"}
        return {}

    def _publish(self, topic: str, data: bytes, metadata: Mapping[str, str]) -> None:
        client = self._need()
        fields, trim = self._fields(data, metadata), self._trim()
        for pause in (0.2, 0.5, 1.0, None):  # ride out a Redis restart
            try:
                client.xadd(topic, fields, **trim)
                return
            except redis.exceptions.RedisError as exc:
                if pause is None or not isinstance(exc, _NET) or self._stop.is_set():
                    raise self._failed(f"publishing to {topic!r}", exc) from None
                time.sleep(pause)

    def _publish_many(self, topic: str, entries: Sequence[tuple[bytes, Mapping[str, str]]]
                      ) -> list[tuple[int, ComponentError]]:
        """One pipelined batch of XADDs (no MULTI: one round trip, and an entry Redis refuses,
        a WRONGTYPE key or an OOM past ``maxmemory``, fails alone). A connection lost under
        the batch sends it again after a pause, as ``_publish`` does: entries that had
        arrived are then in the stream twice (at-least-once, as daprd's retries are)."""
        client = self._need()
        trim = self._trim()
        for pause in (0.2, 0.5, 1.0, None):
            pipe = client.pipeline(transaction=False)
            for data, metadata in entries:
                pipe.xadd(topic, self._fields(data, metadata), **trim)
            try:
                replies = pipe.execute(raise_on_error=False)
            except redis.exceptions.RedisError as exc:
                if pause is None or not isinstance(exc, _NET) or self._stop.is_set():
                    error = self._failed(f"publishing to {topic!r}", exc)
                    return [(index, error) for index in range(len(entries))]
                time.sleep(pause)
                continue
            finally:
                pipe.reset()
            return [(index, self._failed(f"publishing to {topic!r}", reply))
                    for index, reply in enumerate(replies) if isinstance(reply, Exception)]
        return []  # not reached: the last pause is None

    def _create_group(self, client: Any, topic: str) -> None:
        try:
            client.xgroup_create(topic, self._group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _subscribe(self, topic: str, deliver: Deliver) -> None:
        client = self._need()
        with self._lock:
            if topic in self._consumers:
                raise ComponentError(f"component {self.name!r} is already subscribed to {topic!r}")
            try:
                self._create_group(client, topic)
            except redis.exceptions.RedisError as exc:
                raise self._failed(f"creating group {self._group!r} on {topic!r}", exc) from None
            consumer = self._consumers[topic] = _StreamConsumer(self, topic, deliver)
        consumer.thread.start()

    def _invoke(self, operation: str, data: bytes, metadata: Mapping[str, str]
                ) -> tuple[bytes, dict[str, str]]:
        client = self._need()
        if operation not in _OPERATIONS:
            raise ComponentError(f"invalid operation type: {operation!r}; component {self.name!r} "
                                 f"(bindings.redis) supports {', '.join(_OPERATIONS)}")
        key = metadata.get("key", "")
        if not key:
            raise ComponentError("redis binding: missing key in request metadata; pass "
                                 "metadata key=<redis key>")
        ttl = metadata.get("ttlInSeconds", "") or "0"
        if not re.fullmatch(r"-?\d+", ttl):
            raise ComponentError(f"incorrect value for metadata ttlInSeconds: {ttl!r}")
        try:
            if operation == "get":
                get = client.getdel if metadata.get("delete") == "true" else client.get
                return get(key) or b"", {}
            if operation == "delete":
                client.delete(key)
            elif operation == "create":
                client.set(key, data)
            else:
                client.incr(key)
            if int(ttl) > 0 and operation in ("create", "increment"):
                client.expire(key, int(ttl))
        except redis.exceptions.RedisError as exc:
            raise self._failed(f"{operation} on key {key!r}", exc) from None
        return b"", {}

    def _get_state(self, key: str) -> tuple[bytes | None, str]:
        client = self._need()
        try:
            try:
                fields = client.hgetall(key)
            except redis.exceptions.ResponseError as exc:
                if "WRONGTYPE" not in str(exc):
                    raise
                return client.get(key), ""  # a plain string written without etags, as Dapr reads
        except redis.exceptions.RedisError as exc:
            raise self._failed(f"reading state {key!r}", exc) from None
        if not fields:
            return None, ""
        return fields.get(b"data", b""), fields.get(b"version", b"").decode()

    def _save_state(self, key: str, value: bytes, etag: str | None) -> None:
        self._transact([StateOperation("upsert", key, value, etag)])

    def _delete_state(self, key: str, etag: str | None) -> None:
        self._transact([StateOperation("delete", key, etag=etag)])

    def _transact(self, operations: Sequence[StateOperation]) -> None:
        """One EVAL of ``_STATE_SCRIPT``: atomic on the server (the component-wide
        ``ttlInSeconds`` applies to each write, as in Dapr)."""
        client = self._need()
        args: list[Any] = []
        for op in operations:
            if op.etag and not re.fullmatch(r"-?\d+", op.etag):
                raise EtagInvalid(f"invalid etag {op.etag!r} for key {op.key!r}: Redis etags "
                                  "are the integers get_state returns")
            args += [op.kind, op.etag or "0", op.value, self._ttl]
        try:
            self._state_script(keys=[op.key for op in operations], args=args, client=client)
        except redis.exceptions.RedisError as exc:
            match = re.search(r"etag mismatch (\d+)", str(exc))
            if isinstance(exc, redis.exceptions.ResponseError) and match:
                op = operations[int(match.group(1)) - 1]
                raise EtagMismatch(f"etag mismatch for key {op.key!r}: the stored version is "
                                   f"not {op.etag!r}; read the key again and retry") from None
            what = f"writing state {operations[0].key!r}" if len(operations) == 1 else (
                f"a transaction of {len(operations)} operations")
            raise self._failed(what, exc) from None


class _StreamConsumer:
    """The XREADGROUP loop of one topic; reconnects with backoff and never dies."""

    def __init__(self, driver: RedisDriver, topic: str, deliver: Deliver) -> None:
        self.driver, self.topic, self.deliver = driver, topic, deliver
        self.group = driver._group
        self.client = driver._new_client(retries=0)  # own connection; the loop has its backoff
        self.lock = threading.Lock()
        self.inflight: set[bytes] = set()  # delivered, not acked yet: never delivered twice
        self.unacked: set[bytes] = set()  # acks that failed while Redis was away
        self.to_ack: list[bytes] = []  # acks waiting for the XACK on the wire to return
        self.acking = False  # a thread is sending XACKs
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"ofnotebook-redis-{driver.name}-{topic}")

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self.client.close()

    def _loop(self) -> None:
        d, stop = self.driver, self.driver._stop
        reclaim = d._processing > 0 and d._redeliver > 0  # "0" disables redelivery, as in Dapr
        pause, setup, next_reclaim, down = 0.1, True, 0.0, False
        while not stop.is_set():
            try:
                if setup:  # (re)connected: the stream and group may be gone after a restart
                    d._create_group(self.client, self.topic)
                    self._flush_acks()
                    self._replay()
                    setup, next_reclaim = False, 0.0
                    if down:
                        log.info("redis %s: reconnected to %s", d.name, d._address)
                        down = False
                if reclaim and time.monotonic() >= next_reclaim:
                    self._reclaim()
                    next_reclaim = time.monotonic() + d._redeliver
                self._flush_acks()
                reply = self.client.xreadgroup(self.group, self.group, {self.topic: ">"},
                                               count=d._depth, block=_BLOCK_MS)
                for _stream, entries in reply or []:
                    self._handle(entries)
                pause = 0.1
            except Exception as exc:  # keep consuming whatever happens
                setup = True
                if "NOGROUP" in str(exc):
                    log.warning("redis %s: group %r on %r is gone (server restarted or stream "
                                "deleted); recreating it", d.name, self.group, self.topic)
                    stop.wait(0.05)
                    continue
                if isinstance(exc, _NET):
                    if not down:
                        log.warning("redis %s: lost %s (%s); retrying", d.name, d._address, exc)
                    down = True
                else:
                    log.error("redis %s: reading %r failed: %r", d.name, self.topic, exc)
                stop.wait(pause)
                pause = min(pause * 2, _MAX_PAUSE)

    def _replay(self) -> None:
        """Deliver the entries pending at this consumer (delivered earlier, never acked)."""
        last: Any = "0"
        while not self.driver._stop.is_set():
            reply = self.client.xreadgroup(self.group, self.group, {self.topic: last},
                                           count=self.driver._depth)
            entries = reply[0][1] if reply else []
            if not entries:
                return
            self._handle(entries)
            last = entries[-1][0]

    def _reclaim(self) -> None:
        """XAUTOCLAIM entries idle longer than processingTimeout at any consumer of the group."""
        d, start = self.driver, "0-0"
        while not d._stop.is_set():
            next_start, entries, *_ = self.client.xautoclaim(
                self.topic, self.group, self.group, min_idle_time=int(d._processing * 1000),
                start_id=start, count=d._depth)
            self._handle(entries)
            if next_start in (b"0-0", "0-0"):
                return
            start = next_start

    def _handle(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        for entry_id, fields in entries:
            if not fields:  # trimmed or deleted while pending: drop it from the PEL, as Dapr does
                self.client.xack(self.topic, self.group, entry_id)
                continue
            with self.lock:
                if entry_id in self.inflight:
                    continue
                self.inflight.add(entry_id)
            try:
                metadata = {str(k): str(v) for k, v in json.loads(fields[b"metadata"]).items()}
            except (KeyError, ValueError, AttributeError):  # none, or not a JSON object
                metadata = {}
            event = InboundEvent(data=fields.get(b"data", b""), metadata=metadata,
                                 topic=self.topic, _ack=partial(self.ack, entry_id))
            self.driver._hand_off(partial(self._deliver, entry_id), event)

    def _deliver(self, entry_id: bytes, event: InboundEvent) -> None:
        """On the pump's thread: a failed hand-over leaves the entry pending for a reclaim."""
        try:
            self.deliver(event)
        except Exception:
            log.exception("redis %s: delivering %r failed; it stays pending",
                          self.driver.name, entry_id)
            with self.lock:
                self.inflight.discard(entry_id)

    def ack(self, entry_id: bytes) -> None:
        """XACK, called from the stand-in's threads: acks that arrive while one XACK is on
        the wire go together in the next (one round trip for many entries, as a bulk
        delivery acks its entries at once); if Redis is away, retried on reconnect."""
        d = self.driver
        if d._stop.is_set():
            return  # left pending: the group's next consumer gets it again (at-least-once)
        with self.lock:
            self.to_ack.append(entry_id)
            if self.acking:
                return  # the thread on the wire takes it with its next XACK
            self.acking = True
        ids: list[bytes] = []
        try:
            while True:
                with self.lock:
                    ids, self.to_ack = self.to_ack, []
                    if not ids:
                        self.acking = False
                        return
                try:
                    d._client.xack(self.topic, self.group, *ids)
                except redis.exceptions.RedisError as exc:
                    log.warning("redis %s: XACK of %d entries failed (%s); retrying later",
                                d.name, len(ids), exc)
                    with self.lock:
                        self.unacked.update(ids)
                    continue
                with self.lock:
                    self.inflight.difference_update(ids)
                ids = []
        except BaseException:  # kept for the consumer loop's flush, never left un-acked
            with self.lock:
                self.acking = False
                self.unacked.update(ids, self.to_ack)
                self.to_ack = []
            raise

    def _flush_acks(self) -> None:
        with self.lock:
            pending = list(self.unacked)
        for entry_id in pending:
            self.client.xack(self.topic, self.group, entry_id)
            with self.lock:
                self.unacked.discard(entry_id)
                self.inflight.discard(entry_id)
