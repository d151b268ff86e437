"""Figures for async functions on the local target (issue #3).

    .venv/bin/python benchmarks/bench_async.py [--memory-events 1000] [--redis-events 500]
                                               [--reps 3] [--single 60] [--threads 4]

(about 2.5 minutes on 2 cores with the defaults; 2000/1000 events take about 4.5 minutes)

Every event goes the real way: producer -> broker (in-memory bus or Redis Streams, in the
stand-in process) -> the stand-in's dispatcher -> gRPC ``OnTopicEvent`` -> the runtime process
runs the function -> ``ctx.send`` -> gRPC ``PublishEvent`` back to the stand-in -> in-memory
output, recorded in the stand-in's event log -> long-polled by this process into the handle.

1. Throughput, events/s = N / elapsed. N events are injected as fast as the producer can, then
   we wait until all N outputs were seen here; elapsed runs from just before the first injection
   to the moment this process has seen the N-th output (so it includes the last long-poll hop).
   Producers, labelled in the table:
     * ``publish x1``: ``handle.publish`` in one thread (one HTTP request per event to the
       stand-in's control API, which then goes through the broker);
     * ``publish xT``: ``handle.publish`` from T threads (in-memory has no outside producer);
     * ``XADD``: for Redis, a client writing straight into the stream, pipelined 100 entries a
       round trip, each entry exactly what the stand-in's redis driver writes for
       ``handle.publish`` (field ``data`` = the daprd CloudEvent bytes from
       ``sidecar/cloudevents.py``, ``app_id`` "ofnotebook", the input's component name as
       ``pubsubname``); checked against an entry the stand-in itself wrote, in the same run.
   Per-event latency under that load: every event carries a sequence number ``i``; the time
   just before its injection is kept here, and its latency is the ``time`` the stand-in stamped
   on the output record (``OutputEvent.time``, ``time.time()`` in the stand-in, same host clock)
   minus that. All N events are in flight at once, so these p50/p99 are mostly queueing delay:
   they say how long an event waits in a burst, not the cost of one event (that is figure 2).
   Baseline, in the same run and interleaved: the same delivery path with a function whose body
   does nothing but send one output (``relay``: ``ctx.send("out", data["i"])``), against the
   "real" function (parses an access-log line with a regex and sends a small dict). The ratio
   real/relay says how much of the rate the function's own work costs; the function body alone
   is also timed in-process, for scale only (it is not a baseline: it skips the whole path).
   Every figure is the median over ``--reps`` repetitions, configurations interleaved; the
   table also lists each repetition.
2. ``publish`` -> visible in ``handle.outputs``: one event at a time, the clock stops when
   ``handle.wait_for_outputs`` returns (it wakes as the tracker appends the output); p50/p95.
3. RSS (psutil) of the stand-in process and of the async runtime processes, right after they
   started (the stand-in before any app is registered, a runtime once its deploy returned) and
   after the throughput runs.

Prints a Markdown table and writes benchmarks/results/async.json. Nothing here is a test.
Only 127.0.0.1 is used; the Redis streams made here have unique names and are deleted.
"""

from __future__ import annotations

import argparse
import json
import linecache
import os
import platform
import statistics
import sys
import tempfile
import textwrap
import threading
import time
import types
import uuid
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379

REAL_SOURCE = '''
import re

LINE = re.compile(r'^(\\S+) \\S+ \\S+ \\[([^\\]]+)\\] "(\\S+) (\\S+) [^"]*" (\\d{3}) (\\d+)')


def handle(ctx, data):
    host, stamp, method, path, status, size = LINE.match(data["line"]).groups()
    ctx.send("out", {"i": data["i"], "alert": status == "404", "host": host,
                     "path": path.split("?")[0], "bytes": int(size)})
'''

RELAY_SOURCE = '''
def relay(ctx, data):
    ctx.send("out", data["i"])
'''

LOG_LINE = ('10.0.{a}.{b} - - [10/Oct/2024:13:55:36 +0000] "GET /item/{i}?q=1 HTTP/1.1" {status} '
            '{size}')


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def notebook_function(source: str, name: str) -> types.FunctionType:
    """A function defined the way a notebook cell defines it (text in linecache)."""
    ns: dict[str, Any] = {"__name__": "__main__"}
    text = textwrap.dedent(source)
    filename = f"<cell-bench-{name}-{uuid.uuid4().hex[:6]}>"
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    exec(compile(text, filename, "exec"), ns)
    return ns[name]  # type: ignore[no-any-return]


def event(i: int) -> dict[str, Any]:
    return {"i": i, "line": LOG_LINE.format(a=i // 256 % 256, b=i % 256, i=i,
                                            status=404 if i % 7 == 0 else 200, size=512 + i)}


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


class Bench:
    """One deployed function, its producer(s) and a listener that stamps every output."""

    def __init__(self, label: str, transport: str, body: str, handle: Any, stream: str = ""
                 ) -> None:
        self.label, self.transport, self.body = label, transport, body
        self.handle, self.stream = handle, stream
        self.lock = threading.Lock()
        self.sent: dict[int, float] = {}
        self.seen: list[tuple[int, float, float]] = []  # (i, stand-in time, time seen here)
        self.seq = 0
        handle.deployment.events.listen(self._on_event)

    def _on_event(self, ev: dict[str, Any]) -> None:
        if ev.get("kind") != "out":
            return
        data = ev.get("data")
        i = data["i"] if isinstance(data, dict) else data
        with self.lock:
            self.seen.append((int(i), float(ev["time"]), time.time()))

    def take(self, count: int) -> list[int]:
        with self.lock:
            start, self.seq = self.seq, self.seq + count
        return list(range(start, start + count))

    def expect(self, count: int) -> int:
        return self.handle.deployment.events.total_outputs + count

    # -- producers ---------------------------------------------------------------------------

    def publish(self, ids: list[int], threads: int) -> None:
        def worker(chunk: list[int]) -> None:
            for i in chunk:
                self.sent[i] = time.time()
                self.handle.publish("in", event(i))

        if threads == 1:
            worker(ids)
            return
        pool = [threading.Thread(target=worker, args=(ids[k::threads],)) for k in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()

    def xadd(self, ids: list[int], client: Any, entry: Callable[[int], bytes],
             batch: int = 100) -> None:
        for start in range(0, len(ids), batch):
            pipe = client.pipeline(transaction=False)
            now = time.time()
            for i in ids[start:start + batch]:
                self.sent[i] = now
                pipe.xadd(self.stream, {"data": entry(i)})
            pipe.execute()

    # -- one run -----------------------------------------------------------------------------

    def run(self, count: int, produce: Callable[[list[int]], None], timeout: float = 120
            ) -> dict[str, float]:
        ids = self.take(count)
        target = self.expect(count)
        with self.lock:
            self.seen.clear()
        start = time.time()
        produce(ids)
        injected = time.time()
        self.handle.wait_for_outputs(target, timeout=timeout)
        end = time.time()
        with self.lock:
            seen = [s for s in self.seen if s[0] in self.sent and s[0] >= ids[0]]
        assert len({s[0] for s in seen}) == count, (len(seen), count)
        lat = [(standin - self.sent[i]) * 1000 for i, standin, _ in seen]
        return {"events_per_s": count / (end - start),
                "inject_per_s": count / (injected - start),
                "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}


def deploy(label: str, transport: str, body: str, uid: str) -> Bench:
    import ofnotebook

    source, entry = (REAL_SOURCE, "handle") if body == "real" else (RELAY_SOURCE, "relay")
    fn = notebook_function(source, entry)
    stream = ""
    if transport == "memory":
        inputs = {"in": f"memory://bench-{uid}-{label}"}
    else:
        stream = f"ofn-bench-{uid}-{label}"
        inputs = {"in": f"redis://{REDIS_HOST}:{REDIS_PORT}/{stream}"}
    handle = ofnotebook.deploy(fn, f"bench-{label}", inputs=inputs,
                               outputs={"out": f"memory://bench-{uid}-{label}-out"})
    assert handle.runtime == "async", handle.runtime
    return Bench(label, transport, body, handle, stream)


def redis_entry_factory(bench: Bench, client: Any) -> Callable[[int], bytes]:
    """Entries as the stand-in's redis driver writes them for ``handle.publish``, checked
    against one the stand-in wrote in this run (all but the event id and time must match)."""
    from ofnotebook.context import component_name
    from ofnotebook.runtime.outputs import encode
    from ofnotebook.sidecar import cloudevents

    spec = bench.handle.package.spec
    pubsub = component_name(spec, spec.inputs[0])

    def entry(i: int) -> bytes:
        payload, content_type = encode(event(i))
        return cloudevents.to_bytes(cloudevents.new_cloud_event(
            app_id="ofnotebook", pubsub_name=pubsub, topic=bench.stream, data=payload,
            data_content_type=content_type, metadata={}))

    # the stand-in's own entry for a warm-up event just published through handle.publish
    (_, fields), = client.xrevrange(bench.stream, count=1)
    theirs = json.loads(fields[b"data"])
    i = theirs["data"]["i"]
    mine = json.loads(entry(i))
    assert set(fields) == {b"data"}, fields.keys()
    assert {k: v for k, v in theirs.items() if k not in ("id", "time")} == \
        {k: v for k, v in mine.items() if k not in ("id", "time")}, (theirs, mine)
    return entry


def body_cost_us(count: int = 20000) -> dict[str, float]:
    """The function bodies alone, in this process, with a ctx whose send does nothing."""
    class Ctx:
        def send(self, name: str, data: Any) -> None:
            return None

    out = {}
    for body, (source, entry) in (("real", (REAL_SOURCE, "handle")),
                                  ("relay", (RELAY_SOURCE, "relay"))):
        fn, ctx, events = notebook_function(source, entry), Ctx(), [event(i) for i in range(count)]
        start = time.perf_counter()
        for ev in events:
            fn(ctx, ev)
        out[body] = (time.perf_counter() - start) / count * 1e6
    return out


def single_events(bench: Bench, count: int) -> list[float]:
    samples = []
    for i in bench.take(count):
        target = bench.expect(1)
        start = time.perf_counter()
        bench.handle.publish("in", event(i))
        bench.handle.wait_for_outputs(target, timeout=30)
        samples.append((time.perf_counter() - start) * 1000)
        assert any(o.data == i or (isinstance(o.data, dict) and o.data.get("i") == i)
                   for o in bench.handle.outputs[-3:])
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--memory-events", type=int, default=1000)
    parser.add_argument("--redis-events", type=int, default=500)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--single", type=int, default=60)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    os.environ.setdefault("OFNOTEBOOK_CACHE_DIR", tempfile.mkdtemp(prefix="ofn-bench-"))

    import redis

    import ofnotebook
    from ofnotebook.backends import active_backends
    from ofnotebook.backends.standin import get_standin, stop_standin

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    client.ping()
    uid = uuid.uuid4().hex[:8]
    benches: dict[str, Bench] = {}
    started = time.monotonic()
    try:
        standin = get_standin()
        rss_start = {"standin": rss_mb(standin.proc.pid)}
        for label, transport, body in (("mem-real", "memory", "real"),
                                       ("mem-relay", "memory", "relay"),
                                       ("redis-real", "redis", "real"),
                                       ("redis-relay", "redis", "relay")):
            benches[label] = b = deploy(label, transport, body, uid)
            rss_start[label] = rss_mb(b.handle.deployment.process.pid)
        assert get_standin() is standin

        # warm-up: gRPC channels, the runtime's DaprClient, Redis groups
        for b in benches.values():
            b.run(args.warmup, lambda ids, b=b: b.publish(ids, 1))
        entries = {label: redis_entry_factory(benches[label], client)
                   for label in ("redis-real", "redis-relay")}

        producers: list[tuple[str, str, int, Callable[[Bench, list[int]], None]]] = [
            ("memory", "publish x1", args.memory_events, lambda b, ids: b.publish(ids, 1)),
            ("memory", f"publish x{args.threads}", args.memory_events,
             lambda b, ids: b.publish(ids, args.threads)),
            ("redis", "publish x1", args.redis_events, lambda b, ids: b.publish(ids, 1)),
            ("redis", "XADD", args.redis_events,
             lambda b, ids: b.xadd(ids, client, entries[b.label])),
        ]
        runs: dict[tuple[str, str, str], list[dict[str, float]]] = {}
        for rep in range(args.reps):
            for transport, producer, count, produce in producers:
                for body in ("real", "relay"):
                    b = benches[f"{'mem' if transport == 'memory' else 'redis'}-{body}"]
                    result = b.run(count, lambda ids, b=b, p=produce: p(b, ids))
                    runs.setdefault((transport, producer, body), []).append(result)
                    print(f"rep {rep + 1}: {transport:6} {producer:10} {body:5} "
                          f"{result['events_per_s']:7.0f} ev/s  inject "
                          f"{result['inject_per_s']:7.0f}/s  p50 {result['p50_ms']:6.0f} ms  "
                          f"p99 {result['p99_ms']:6.0f} ms", flush=True)

        rss_after = {"standin": rss_mb(standin.proc.pid)}
        for label, b in benches.items():
            rss_after[label] = rss_mb(b.handle.deployment.process.pid)

        single = {"memory": single_events(benches["mem-real"], args.single),
                  "redis": single_events(benches["redis-real"], args.single)}
        bodies = body_cost_us()
        for b in benches.values():
            assert b.handle.stats["dead_letters"] == 0 and b.handle.stats["retries"] == 0, \
                b.handle.stats
    finally:
        ofnotebook.stop(all=True)
        for backend in active_backends():
            backend.close()
        stop_standin()
        for b in benches.values():
            if b.stream:
                client.delete(b.stream)
        client.close()
    total_s = time.monotonic() - started

    throughput: dict[str, Any] = {}
    for (transport, producer, body), results in runs.items():
        throughput.setdefault(transport, {}).setdefault(producer, {})[body] = {
            "events": args.memory_events if transport == "memory" else args.redis_events,
            "events_per_s_median": statistics.median(r["events_per_s"] for r in results),
            "inject_per_s_median": statistics.median(r["inject_per_s"] for r in results),
            "latency_p50_ms_median": statistics.median(r["p50_ms"] for r in results),
            "latency_p99_ms_median": statistics.median(r["p99_ms"] for r in results),
            "reps": results}
    for transport in throughput.values():
        for producer in transport.values():
            producer["ratio_real_to_relay"] = (producer["real"]["events_per_s_median"]
                                               / producer["relay"]["events_per_s_median"])
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "wall_s": total_s,
        "throughput": throughput,
        "publish_to_output_ms": {
            name: {"p50": pct(s, 50), "p95": pct(s, 95), "max": max(s), "events": len(s)}
            for name, s in single.items()},
        "function_body_us_in_process": bodies,
        "rss_mb": {"at_start": rss_start, "after_throughput": rss_after},
    }
    out = ROOT / "benchmarks" / "results" / "async.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")

    print(f"machine: {results['machine']}; whole run {total_s:.0f} s")
    print("| figure | value | target |\n|---|---|---|")
    for transport, target in (("memory", ">= 2000/s"), ("redis", ">= 1000/s")):
        for producer, r in throughput[transport].items():
            real, relay = r["real"], r["relay"]
            each = ", ".join(f"{x['events_per_s']:.0f}" for x in real["reps"])
            print(f"| {transport}, producer {producer}, N={real['events']}: events/s real "
                  f"[each rep] (relay baseline), real/relay | {real['events_per_s_median']:.0f} "
                  f"[{each}] ({relay['events_per_s_median']:.0f}), "
                  f"{r['ratio_real_to_relay']:.2f} | {target} |")
            print(f"| {transport}, producer {producer}: injection rate; latency in the burst "
                  f"p50 / p99, real | {real['inject_per_s_median']:.0f}/s; "
                  f"{real['latency_p50_ms_median']:.0f} / {real['latency_p99_ms_median']:.0f} ms "
                  f"| |")
    for name, s in results["publish_to_output_ms"].items():
        print(f"| publish -> in handle.outputs, {name}, one at a time, p50 / p95 "
              f"({s['events']} events) | {s['p50']:.1f} / {s['p95']:.1f} ms | <= 50 ms p50 |")
    print(f"| function body alone in-process (scale only), real / relay | "
          f"{bodies['real']:.1f} / {bodies['relay']:.1f} us | |")
    r0, r1 = rss_start, rss_after
    runtimes = [k for k in r0 if k != "standin"]
    print(f"| RSS stand-in, at start -> after throughput | {r0['standin']:.0f} -> "
          f"{r1['standin']:.0f} MB | <= 80 MB |")
    for k in runtimes:
        print(f"| RSS async runtime {k}, at start -> after throughput | {r0[k]:.0f} -> "
              f"{r1[k]:.0f} MB | <= 80 MB |")


if __name__ == "__main__":
    main()
