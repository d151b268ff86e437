"""Figures for async functions on the local target at speed (issues #3 and #14).

    .venv/bin/python benchmarks/bench_async.py [--events 20000] [--unary-events 3000]
        [--reps 3] [--single 60] [--brokers memory,redis,kafka,mqtt,jetstream,rabbitmq]
        [--million 1000000] [--kill-events 50000]

Every event goes the real way: ``handle.publish_many`` (one request per 1,000 events to the
stand-in's control API) -> the broker (in-memory bus in the stand-in, or the real broker on
127.0.0.1; Kafka is a tansu started here) -> the stand-in's dispatcher -> gRPC
``OnBulkTopicEvent`` (``OnTopicEvent`` for a lone event) -> the runtime process runs the
function -> ``ctx.send`` -> one ``BulkPublishEvent`` back to the stand-in -> in-memory output,
recorded in the stand-in's event log -> long-polled by this process into the handle. The
function parses an access-log line with a regex and sends a small dict.

1. Throughput, events/s = N / elapsed, from just before the first ``publish_many`` to the
   moment this process has seen the N-th output in ``handle.outputs``. Baseline in the same
   run, interleaved: the same function deployed with ``OFNOTEBOOK_BULK=off`` (the runtime
   declares no bulk subscription, so the stand-in delivers unary: the path before issue #14),
   fed the same way. Medians over ``--reps``; each repetition listed.
2. One event at a time, ``publish`` -> visible in ``handle.outputs`` (the clock stops when
   ``handle.wait_for_outputs`` returns), p50/p95, bulk and unary deployments.
3. RSS (psutil) of the stand-in and of the runtimes at start and after the runs; with
   ``--million N``, of the stand-in and of one runtime every 100,000 events of N.
4. With ``--kill-events N``: N events into Redis Streams with ``publish_many`` while the runtime
   is SIGKILLed once a fifth of the outputs were seen (its supervisor starts it again): events
   lost (must be 0) and delivered twice (at least once allows it).

Prints a Markdown table and writes benchmarks/results/async.json. Nothing here is a test.
Only 127.0.0.1 is used; the Redis streams made here have unique names and are deleted.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import linecache
import os
import platform
import signal
import statistics
import sys
import tempfile
import textwrap
import threading
import time
import types
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379

SOURCE = '''
import re

LINE = re.compile(r'^(\\S+) \\S+ \\S+ \\[([^\\]]+)\\] "(\\S+) (\\S+) [^"]*" (\\d{3}) (\\d+)')


def handle(ctx, data):
    host, stamp, method, path, status, size = LINE.match(data["line"]).groups()
    ctx.send("out", {"i": data["i"], "alert": status == "404", "host": host,
                     "path": path.split("?")[0], "bytes": int(size)})
'''

LOG_LINE = ('10.0.{a}.{b} - - [10/Oct/2024:13:55:36 +0000] "GET /item/{i}?q=1 HTTP/1.1" {status} '
            '{size}')

#: Input URIs by broker (``kafka``: the bootstrap of the tansu started here).
URIS: dict[str, Callable[[str, str], str]] = {
    "memory": lambda topic, _: f"memory://{topic}",
    "redis": lambda topic, _: f"redis://{REDIS_HOST}:{REDIS_PORT}/{topic}",
    "kafka": lambda topic, k: f"pubsub+kafka://{k}/{topic}?initialOffset=oldest",
    "mqtt": lambda topic, _: f"pubsub+mqtt://127.0.0.1:1883/{topic}",
    "jetstream": lambda topic, _: f"nats://127.0.0.1:4222/{topic}",
    "rabbitmq": lambda topic, _: f"amqp://guest:guest@127.0.0.1:5672/{topic}",
}
#: Events ahead of the outputs, by broker (see Bench.run); the others get the whole burst.
WINDOWS = {"mqtt": 400}
TARGETS = {"memory": ">= 10000/s", "redis": ">= 3000/s", "kafka": ">= 2000/s"}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


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

    return float(psutil.Process(pid).memory_info().rss / 2**20)


class Bench:
    """One deployed function; a listener notes which events' outputs were seen here."""

    def __init__(self, label: str, handle: Any, stream: str = "") -> None:
        self.label, self.handle, self.stream = label, handle, stream
        self.lock = threading.Lock()
        self.seen: collections.Counter[int] = collections.Counter()  # i -> outputs seen
        self.next_i = 0
        handle.deployment.events.listen(self._on_event)

    def _on_event(self, ev: dict[str, Any]) -> None:
        if ev.get("kind") == "out":
            data = ev.get("data")
            with self.lock:
                self.seen[int(data["i"] if isinstance(data, dict) else data)] += 1

    @property
    def pid(self) -> int:
        return int(self.handle.deployment.process.pid)

    def take(self, count: int) -> range:
        start, self.next_i = self.next_i, self.next_i + count
        return range(start, start + count)

    def run(self, count: int, timeout: float = 600) -> float:
        """``count`` events through ``publish_many``; events/s until the last output is seen.
        Into MQTT at most WINDOW events are ahead of the outputs: Mosquitto queues at most
        ``max_queued_messages`` (1,000 by default) QoS 1 messages for a client and drops the
        rest (measured here: a 3,000-event burst into a unary consumer lost 833)."""
        ids = self.take(count)
        tracker = self.handle.deployment.events
        target = tracker.total_outputs + count
        window = WINDOWS.get(self.label.split("-")[0], count)
        start = time.perf_counter()
        for first in range(0, count, window):
            chunk = ids[first:first + window]
            if first:
                self.handle.wait_for_outputs(target - count + first - window, timeout=timeout)
            self.handle.publish_many("in", (event(i) for i in chunk))
        self.handle.wait_for_outputs(target, timeout=timeout)
        elapsed = time.perf_counter() - start
        with self.lock:
            missing = [i for i in ids if not self.seen[i]]
            for i in ids:
                self.seen.pop(i, None)
        assert not missing, f"{self.label}: {len(missing)} outputs missing, e.g. {missing[:5]}"
        return count / elapsed

    def single(self, count: int) -> list[float]:
        samples = []
        for i in self.take(count):
            target = self.handle.deployment.events.total_outputs + 1
            start = time.perf_counter()
            self.handle.publish("in", event(i))
            self.handle.wait_for_outputs(target, timeout=30)
            samples.append((time.perf_counter() - start) * 1000)
        with self.lock:
            self.seen.clear()
        return samples


def deploy(label: str, broker: str, uid: str, kafka: str, bulk: bool) -> Bench:
    import ofnotebook

    topic = f"ofn-bench-{uid}-{label}"
    handle = ofnotebook.deploy(notebook_function(SOURCE, "handle"), f"bench-{label}",
                               inputs={"in": URIS[broker](topic, kafka)},
                               outputs={"out": f"memory://bench-{uid}-{label}-out"},
                               env={} if bulk else {"OFNOTEBOOK_BULK": "off"})
    assert handle.runtime == "async", handle.runtime
    return Bench(label, handle, topic if broker == "redis" else "")


def million(bench: Bench, total: int, step: int = 100_000) -> list[dict[str, float]]:
    """``total`` events in steps; RSS of the stand-in and the runtime after each step."""
    from ofnotebook.backends.standin import get_standin

    standin_pid = get_standin().proc.pid
    samples = []
    for done in range(step, total + 1, step):
        rate = bench.run(step)
        samples.append({"events": done, "events_per_s": rate,
                        "standin_mb": rss_mb(standin_pid), "runtime_mb": rss_mb(bench.pid)})
        print(f"  million: {done:>9,} events, {rate:6.0f} ev/s, RSS stand-in "
              f"{samples[-1]['standin_mb']:.0f} MB, runtime {samples[-1]['runtime_mb']:.0f} MB",
              flush=True)
    return samples


def kill_mid_stream(bench: Bench, count: int) -> dict[str, Any]:
    """``count`` events into Redis; SIGKILL the runtime once a fifth of the outputs came."""
    ids = bench.take(count)
    producer = threading.Thread(target=bench.handle.publish_many,
                                args=("in", (event(i) for i in ids)))
    start = time.perf_counter()
    producer.start()
    while True:
        with bench.lock:
            seen = sum(1 for i in ids if bench.seen[i])  # ids is a range: cheap enough
        if seen >= count // 5:
            break
        time.sleep(0.01)
    rate_before = seen / (time.perf_counter() - start)
    killed = bench.pid
    os.kill(killed, signal.SIGKILL)
    producer.join()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with bench.lock:
            missing = [i for i in ids if not bench.seen[i]]
        if not missing:
            break
        time.sleep(0.2)
    elapsed = time.perf_counter() - start
    with bench.lock:
        twice = sum(1 for i in ids if bench.seen[i] > 1)
    return {"events": count, "events_per_s_before_kill": rate_before,
            "events_per_s_overall": count / elapsed, "lost": len(missing),
            "delivered_more_than_once": twice, "restarts": bench.handle.restarts,
            "killed_pid": killed}


@contextlib.contextmanager
def kafka_broker(wanted: bool) -> Iterator[str]:
    if not wanted:
        yield ""
        return
    from ofnotebook.testing import local_kafka

    with local_kafka() as kafka:
        yield kafka.bootstrap


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--unary-events", type=int, default=3000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--single", type=int, default=60)
    parser.add_argument("--brokers", default="memory,redis,kafka,mqtt,jetstream,rabbitmq")
    parser.add_argument("--million", type=int, default=0)
    parser.add_argument("--kill-events", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    brokers = [b for b in args.brokers.split(",") if b]
    unknown = set(brokers) - set(URIS)
    if unknown:
        parser.error(f"unknown brokers {sorted(unknown)}; known: {', '.join(URIS)}")
    os.environ.setdefault("OFNOTEBOOK_CACHE_DIR", tempfile.mkdtemp(prefix="ofn-bench-"))

    import redis

    import ofnotebook
    from ofnotebook.backends import active_backends
    from ofnotebook.backends.standin import get_standin, stop_standin

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    client.ping()
    uid = uuid.uuid4().hex[:8]
    benches: dict[str, Bench] = {}
    runs: dict[str, list[float]] = {}
    results: dict[str, Any] = {}
    started = time.monotonic()
    with kafka_broker("kafka" in brokers) as bootstrap:
        try:
            standin = get_standin()
            rss_start = {"standin": rss_mb(standin.proc.pid)}
            for broker in brokers:
                for mode in ("bulk", "unary"):
                    label = f"{broker}-{mode}"
                    benches[label] = b = deploy(label, broker, uid, bootstrap, mode == "bulk")
                    rss_start[label] = rss_mb(b.pid)
                    b.run(args.warmup)  # gRPC channels, the runtime's DaprClient, groups
            for rep in range(args.reps):
                for label, b in benches.items():
                    count = args.events if label.endswith("-bulk") else args.unary_events
                    rate = b.run(count)
                    runs.setdefault(label, []).append(rate)
                    print(f"rep {rep + 1}: {label:16} N={count:6} {rate:7.0f} events/s",
                          flush=True)
            rss_after = {"standin": rss_mb(standin.proc.pid)}
            rss_after.update({label: rss_mb(b.pid) for label, b in benches.items()})
            single = {label: benches[label].single(args.single)
                      for label in ("memory-bulk", "memory-unary", "redis-bulk", "redis-unary")
                      if label in benches}
            if args.million:
                results["million"] = million(benches["memory-bulk"], args.million)
            if args.kill_events:
                results["kill"] = kill_mid_stream(benches["redis-bulk"], args.kill_events)
                print(f"  kill: {results['kill']}", flush=True)
            for b in benches.values():
                stats = b.handle.stats
                assert stats["dead_letters"] == 0, (b.label, stats)
        finally:
            ofnotebook.stop(all=True)
            for backend in active_backends():
                backend.close()
            stop_standin()
            for b in benches.values():
                if b.stream:
                    client.delete(b.stream)
            client.close()
    results.update({
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                   f"Python {platform.python_version()}",
        "wall_s": time.monotonic() - started,
        "events": {"bulk": args.events, "unary": args.unary_events},
        "throughput": {label: {"events_per_s_median": statistics.median(rates), "reps": rates}
                       for label, rates in runs.items()},
        "publish_to_output_ms": {label: {"p50": pct(s, 50), "p95": pct(s, 95), "events": len(s)}
                                 for label, s in single.items()},
        "rss_mb": {"at_start": rss_start, "after_throughput": rss_after},
    })
    out = ROOT / "benchmarks" / "results" / "async.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    report(results, brokers)


def report(results: dict[str, Any], brokers: list[str]) -> None:
    throughput = results["throughput"]
    print(f"machine: {results['machine']}; whole run {results['wall_s']:.0f} s")
    print("| figure | value | target |\n|---|---|---|")
    for broker in brokers:
        bulk, unary = throughput[f"{broker}-bulk"], throughput[f"{broker}-unary"]
        each = ", ".join(f"{r:.0f}" for r in bulk["reps"])
        print(f"| {broker}: events/s fed by publish_many, bulk [each rep] (unary baseline), "
              f"ratio | {bulk['events_per_s_median']:.0f} [{each}] "
              f"({unary['events_per_s_median']:.0f}), "
              f"{bulk['events_per_s_median'] / unary['events_per_s_median']:.1f}x | "
              f"{TARGETS.get(broker, 'reported')} |")
    for label, s in results["publish_to_output_ms"].items():
        print(f"| publish -> in handle.outputs, {label}, one at a time, p50 / p95 "
              f"({s['events']} events) | {s['p50']:.1f} / {s['p95']:.1f} ms | <= 10 ms p50 |")
    r0, r1 = results["rss_mb"]["at_start"], results["rss_mb"]["after_throughput"]
    for label in r0:
        print(f"| RSS {label}, at start -> after the runs | {r0[label]:.0f} -> "
              f"{r1[label]:.0f} MB | <= 80 MB |")
    samples = results.get("million", [])
    for sample in [s for k, s in enumerate(samples) if k % 3 == 0 or k == len(samples) - 1]:
        print(f"| RSS after {sample['events']:,} events, stand-in / runtime | "
              f"{sample['standin_mb']:.0f} / {sample['runtime_mb']:.0f} MB | <= 80 MB, flat |")
    if "kill" in results:
        k = results["kill"]
        print(f"| Redis, runtime SIGKILLed mid-stream ({k['events']} events, "
              f"{k['events_per_s_before_kill']:.0f} ev/s before): lost / delivered twice | "
              f"{k['lost']} / {k['delivered_more_than_once']} | 0 lost |")


if __name__ == "__main__":
    main()
