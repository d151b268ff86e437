"""Figures for producers from the notebook (issue 14 item 4): ``handle.publish`` in a loop
against ``handle.publish_many``, into the local stand-in, in memory and on Redis Streams.

    .venv/bin/python benchmarks/bench_publish.py [--loop-events 1000] [--many-events 20000]
                                                 [--reps 3] [--chunks 100,1000,5000]

1. events/s into the stand-in = N / the time the producer call(s) took: ``publish`` one
   HTTP request per event (each a CloudEvent built and one broker write), ``publish_many``
   one framed request per chunk (``protocol.pack_frames``) and one ``Driver.publish_many``
   (in memory: one lock and one pump item a subscriber; Redis: one pipelined XADD batch).
   A real function is deployed on each input (``def sink(ctx, data): pass``) and consumes
   meanwhile, as it would in a notebook; after each run we wait until it delivered every
   event, so runs do not overlap, and that time is given too ("delivered", events/s from the
   first publish to the last delivery seen here). Configurations are interleaved; medians
   of ``--reps``.
2. Memory: ``publish_many`` of a generator of ``--generator-events`` events into the in-memory
   input; the RSS of this process (the kernel) sampled every 50 ms, before and at its peak,
   and of the stand-in after. The kernel holds one chunk at a time, so its peak must not grow
   with N.
3. The framing of one chunk, in this process: ``pack_frames`` + ``unpack_frames`` against a
   JSON list of base64 strings (the obvious alternative), us an event, 1,000 events of the
   benchmark's payload.

Prints a Markdown table and writes benchmarks/results/publish.json. Nothing here is a test.
Only 127.0.0.1 is used; the Redis streams made here have unique names and are deleted.
"""

from __future__ import annotations

import argparse
import base64
import json
import linecache
import os
import platform
import statistics
import sys
import time
import types
import uuid
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ofnotebook  # noqa: E402
from ofnotebook import handle as handle_module  # noqa: E402
from ofnotebook.runtime.outputs import encode  # noqa: E402
from ofnotebook.sidecar.protocol import pack_frames, unpack_frames  # noqa: E402

SINK = "def sink(ctx, data):\n    pass\n"


def notebook_function(source: str, name: str) -> types.FunctionType:
    filename = f"<ipython-input-bench-{name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, filename, "exec"), namespace)
    function: types.FunctionType = namespace[name]
    return function


def event(i: int) -> dict[str, Any]:
    return {"i": i, "line": f'127.0.0.1 - - "GET /item/{i} HTTP/1.1" 200 {i % 997}'}


def delivered(handle: Any) -> int:
    return int(handle.stats["delivered"])


def run(handle: Any, count: int, produce: Callable[[Any, int], None]) -> dict[str, float]:
    """Produce ``count`` events; the producer's events/s and the delivered events/s."""
    start_delivered = delivered(handle)
    started = time.perf_counter()
    produce(handle, count)
    produced = time.perf_counter() - started
    deadline = time.monotonic() + 300
    while delivered(handle) < start_delivered + count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {delivered(handle) - start_delivered} of {count} "
                             f"delivered: {handle.stats}")
        time.sleep(0.01)
    total = time.perf_counter() - started
    return {"produce_per_s": count / produced, "delivered_per_s": count / total}


def loop(handle: Any, count: int) -> None:
    for i in range(count):
        handle.publish("in", event(i))


def many(chunk: int) -> Callable[[Any, int], None]:
    def produce(handle: Any, count: int) -> None:
        handle_module.PUBLISH_CHUNK = chunk
        assert handle.publish_many("in", (event(i) for i in range(count))) == count
    return produce


def rss_mb(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).memory_info().rss / 2**20)


def generator_memory(handle: Any, count: int) -> dict[str, float]:
    """RSS of this process before and at its peak while ``count`` events go from a
    generator, and the events/s."""
    import threading

    from ofnotebook.backends.standin import get_standin

    handle_module.PUBLISH_CHUNK = 1000
    me, peak, done = os.getpid(), [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_mb(me))

    before = rss_mb(me)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = run(handle, count, lambda h, n: h.publish_many("in", (event(i) for i in range(n))))
    done.set()
    sampler.join()
    return {"events": count, "kernel_before_mb": before, "kernel_peak_mb": peak[0],
            "standin_after_mb": rss_mb(get_standin().proc.pid), **result}


def framing_us(count: int = 1000, reps: int = 20) -> dict[str, float]:
    items = [encode(event(i)) for i in range(count)]

    def frames() -> None:
        unpack_frames(pack_frames(items))

    def json_b64() -> None:
        body = json.dumps([[base64.b64encode(p).decode(), ct] for p, ct in items]).encode()
        [(base64.b64decode(p), ct) for p, ct in json.loads(body)]

    out = {}
    for name, fn in (("frames", frames), ("json_base64", json_b64)):
        times = []
        for _ in range(reps):
            started = time.perf_counter()
            fn()
            times.append((time.perf_counter() - started) / count * 1e6)
        out[name] = statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loop-events", type=int, default=1000)
    parser.add_argument("--many-events", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--chunks", default="100,1000,5000")
    parser.add_argument("--redis", default="127.0.0.1:6379")
    parser.add_argument("--generator-events", type=int, default=200000)
    args = parser.parse_args()
    chunks = [int(c) for c in args.chunks.split(",")]
    from ofnotebook.backends.local import LocalBackend

    backend = LocalBackend(start_timeout=60)
    uid = uuid.uuid4().hex[:8]
    stream = f"ofn-bench-publish-{uid}"
    handles = {
        "memory": ofnotebook.deploy(notebook_function(SINK, "sink"), f"pub-mem-{uid}",
                                    target=backend, inputs={"in": f"memory://pub-{uid}"}),
        "redis": ofnotebook.deploy(notebook_function(SINK, "sink"), f"pub-redis-{uid}",
                                   target=backend,
                                   inputs={"in": f"redis://{args.redis}/{stream}"}),
    }
    configs: list[tuple[str, str, int, Callable[[Any, int], None]]] = []
    for transport in handles:
        configs.append((transport, "publish loop", args.loop_events, loop))
        for chunk in chunks:
            configs.append((transport, f"publish_many chunk {chunk}", args.many_events,
                            many(chunk)))
    runs: dict[str, list[dict[str, float]]] = {f"{t} · {label}": [] for t, label, _n, _p
                                                in configs}
    try:
        for handle in handles.values():  # warm-up: connections, the runtime's first calls
            run(handle, 200, many(100))
            run(handle, 50, loop)
        for rep in range(args.reps):
            for transport, label, count, produce in configs:
                result = run(handles[transport], count, produce)
                runs[f"{transport} · {label}"].append(result)
                print(f"rep {rep + 1} {transport} {label}: {result['produce_per_s']:,.0f} "
                      f"events/s in, {result['delivered_per_s']:,.0f} delivered",
                      file=sys.stderr)
        memory = generator_memory(handles["memory"], args.generator_events) \
            if args.generator_events else {}
        framing = framing_us()
    finally:
        backend.close()
        try:
            import redis

            host, _, port = args.redis.partition(":")
            redis.Redis(host=host, port=int(port or 6379)).delete(stream)
        except Exception:
            pass
    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "args": vars(args),
        "events_per_s": {name: {
            "produce_median": statistics.median(r["produce_per_s"] for r in rs),
            "produce_runs": [round(r["produce_per_s"]) for r in rs],
            "delivered_median": statistics.median(r["delivered_per_s"] for r in rs)}
            for name, rs in runs.items()},
        "framing_us_per_event": framing,
        "generator_memory": memory,
    }
    out = Path(__file__).resolve().parent / "results" / "publish.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print("| producer | events/s into the stand-in (median) | runs | delivered events/s |")
    print("|---|---|---|---|")
    for name, r in results["events_per_s"].items():
        runs_text = ", ".join(f"{v:,}" for v in r["produce_runs"])
        print(f"| {name} | {r['produce_median']:,.0f} | {runs_text} | "
              f"{r['delivered_median']:,.0f} |")
    if memory:
        print(f"\n{memory['events']:,} events from a generator: {memory['produce_per_s']:,.0f} "
              f"events/s in; kernel RSS {memory['kernel_before_mb']:.0f} MB before, peak "
              f"{memory['kernel_peak_mb']:.0f} MB; stand-in after "
              f"{memory['standin_after_mb']:.0f} MB")
    print(f"\nframing of 1,000 events, us an event: frames {framing['frames']:.2f}, "
          f"JSON list of base64 {framing['json_base64']:.2f}")


if __name__ == "__main__":
    main()
