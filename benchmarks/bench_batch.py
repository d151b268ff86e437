"""Figure: a batch function (``--batch 100``) against the same logic one event at a time
(issue 14 item 3).

    .venv/bin/python benchmarks/bench_batch.py [--events 5000] [--reps 3] [--features 32]
                                               [--batch 100] [--batch-wait 20]

Both functions score a logistic model over ``--features`` features with numpy (plain Python
where numpy is not installed: the table says which) and send one output per event
(``ctx.send("out", {"i": ..., "p": ...})``): the batch function as ``f(ctx, events)``, one
matrix product for the whole list; the other as ``f(ctx, data)``, one dot product per event.
Both run on the local target with the real runtime and stand-in processes, and both get bulk
delivery (the per-event function's entries are called one by one inside a bulk call), so the
difference is the function's own work and its calls, not the transport.

events/s = N / (first injection -> the N-th output seen by this process's handle). The feed
is Redis Streams, ``XADD`` pipelined 100 entries a round trip, each entry what the stand-in's
redis driver writes for ``handle.publish`` (bench_async.py's check); with ``handle.publish_many``
available, the in-memory input fed by it is measured too. Medians of ``--reps``, the two
functions interleaved in the same run. Prints a Markdown table and writes
benchmarks/results/batch.json. Nothing here is a test; only 127.0.0.1 is used and the streams
made here are deleted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_async import notebook_function, rss_mb  # noqa: E402

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379

NUMPY_SOURCE = '''
import numpy as np


def per_event(ctx, data):
    p = 1.0 / (1.0 + np.exp(-(np.dot(W, data["x"]) + B)))
    ctx.send("out", {"i": data["i"], "p": float(p)})


def batch(ctx, events):
    x = np.array([e["x"] for e in events])
    p = 1.0 / (1.0 + np.exp(-(x @ W + B)))
    for e, pi in zip(events, p.tolist()):
        ctx.send("out", {"i": e["i"], "p": pi})
'''

PLAIN_SOURCE = '''
import math


def per_event(ctx, data):
    p = 1.0 / (1.0 + math.exp(-(sum(w * v for w, v in zip(W, data["x"])) + B)))
    ctx.send("out", {"i": data["i"], "p": p})


def batch(ctx, events):
    for e in events:
        p = 1.0 / (1.0 + math.exp(-(sum(w * v for w, v in zip(W, e["x"])) + B)))
        ctx.send("out", {"i": e["i"], "p": p})
'''


def has_numpy() -> bool:
    try:
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


def model(features: int) -> tuple[list[float], float]:
    rng = random.Random(14)
    return [rng.uniform(-1, 1) for _ in range(features)], 0.1


def event(i: int, features: int) -> dict[str, Any]:
    rng = random.Random(i)
    return {"i": i, "x": [round(rng.uniform(-1, 1), 4) for _ in range(features)]}


def scorer(entry: str, features: int) -> Callable[..., Any]:
    """``entry`` of the numpy (or plain) source, its model as globals, defined as a cell."""
    fn = notebook_function(NUMPY_SOURCE if has_numpy() else PLAIN_SOURCE, entry)
    weights, bias = model(features)
    if has_numpy():
        import numpy as np

        fn.__globals__["W"] = np.array(weights)
    else:
        fn.__globals__["W"] = weights
    fn.__globals__["B"] = bias
    return fn


class Run:
    """One deployed scorer and its Redis stream (and in-memory input)."""

    def __init__(self, label: str, handle: Any, stream: str, client: Any) -> None:
        self.label, self.handle, self.stream, self.client = label, handle, stream, client
        self.seq = 0

    def take(self, count: int) -> list[int]:
        start, self.seq = self.seq, self.seq + count
        return list(range(start, start + count))

    def measure(self, count: int, produce: Callable[[list[int]], None]) -> float:
        ids = self.take(count)
        target = self.handle.deployment.events.total_outputs + count
        start = time.time()
        produce(ids)
        self.handle.wait_for_outputs(target, timeout=300)
        return count / (time.time() - start)


def deploy(label: str, entry: str, features: int, uid: str, client: Any,
           batch: dict[str, int]) -> Run:
    import ofnotebook

    stream = f"ofn-bench-batch-{uid}-{label}"
    handle = ofnotebook.deploy(
        scorer(entry, features), f"bench-{label}", **batch,
        inputs={"in": f"redis://{REDIS_HOST}:{REDIS_PORT}/{stream}",
                "mem": f"memory://bench-batch-{uid}-{label}"},
        outputs={"out": f"memory://bench-batch-{uid}-{label}-out"})
    return Run(label, handle, stream, client)


def entry_factory(run: Run, features: int) -> Callable[[int], bytes]:
    """Stream entries as the stand-in's redis driver writes them, checked against one it
    wrote for ``handle.publish`` in this run (all but the event id and time must match)."""
    from ofnotebook.context import component_name
    from ofnotebook.runtime.outputs import encode
    from ofnotebook.sidecar import cloudevents

    spec = run.handle.package.spec
    pubsub = component_name(spec, next(c for c in spec.inputs if c.name == "in"))

    def entry(i: int) -> bytes:
        payload, content_type = encode(event(i, features))
        return cloudevents.to_bytes(cloudevents.new_cloud_event(
            app_id="ofnotebook", pubsub_name=pubsub, topic=run.stream, data=payload,
            data_content_type=content_type, metadata={}))

    probe = run.take(1)[0]
    target = run.handle.deployment.events.total_outputs + 1
    run.handle.publish("in", event(probe, features))
    run.handle.wait_for_outputs(target, timeout=30)
    (_, fields), = run.client.xrevrange(run.stream, count=1)
    theirs, mine = json.loads(fields[b"data"]), json.loads(entry(probe))
    assert {k: v for k, v in theirs.items() if k not in ("id", "time")} == \
        {k: v for k, v in mine.items() if k not in ("id", "time")}, (theirs, mine)
    return entry


def xadd(run: Run, entry: Callable[[int], bytes], ids: list[int], chunk: int = 100) -> None:
    for start in range(0, len(ids), chunk):
        pipe = run.client.pipeline(transaction=False)
        for i in ids[start:start + chunk]:
            pipe.xadd(run.stream, {"data": entry(i)})
        pipe.execute()


def body_cost_us(features: int, batch: int, count: int = 20000) -> dict[str, float]:
    """The two bodies alone in this process (a ctx whose send does nothing), us an event."""
    class Ctx:
        def send(self, name: str, data: Any) -> None:
            return None

    events = [event(i, features) for i in range(count)]
    per_event, batched, ctx = scorer("per_event", features), scorer("batch", features), Ctx()
    start = time.perf_counter()
    for e in events:
        per_event(ctx, e)
    one = (time.perf_counter() - start) / count * 1e6
    start = time.perf_counter()
    for k in range(0, count, batch):
        batched(ctx, events[k:k + batch])
    return {"per_event": one, "batch": (time.perf_counter() - start) / count * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--batch-wait", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("OFNOTEBOOK_CACHE_DIR", tempfile.mkdtemp(prefix="ofn-bench-"))

    import redis

    import ofnotebook
    from ofnotebook.backends import active_backends
    from ofnotebook.backends.standin import stop_standin

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    client.ping()
    uid = uuid.uuid4().hex[:8]
    runs: dict[str, Run] = {}
    results: dict[str, dict[str, list[float]]] = {}
    started = time.monotonic()
    try:
        runs["per-event"] = deploy("per-event", "per_event", args.features, uid, client, {})
        runs["batch"] = deploy("batch", "batch", args.features, uid, client,
                               {"batch": args.batch, "batch_wait_ms": args.batch_wait})
        entries = {label: entry_factory(r, args.features) for label, r in runs.items()}
        feeds: dict[str, Callable[[Run, list[int]], None]] = {
            "redis XADD": lambda r, ids: xadd(r, entries[r.label], ids)}
        if hasattr(runs["batch"].handle, "publish_many"):
            feeds["memory publish_many"] = lambda r, ids: r.handle.publish_many(
                "mem", [event(i, args.features) for i in ids])
        for r in runs.values():  # warm-up: channels, the runtime's DaprClient, the group
            for produce in feeds.values():
                r.measure(args.warmup, lambda ids, r=r, p=produce: p(r, ids))
        for rep in range(args.reps):
            for feed, produce in feeds.items():
                for label, r in runs.items():
                    rate = r.measure(args.events, lambda ids, r=r, p=produce: p(r, ids))
                    results.setdefault(feed, {}).setdefault(label, []).append(rate)
                    print(f"rep {rep + 1}: {feed:20} {label:9} {rate:7.0f} events/s", flush=True)
        # the scores are the model's: a few outputs checked against this process's numbers
        weights, bias = model(args.features)
        for r in runs.values():
            for out in r.handle.outputs[-5:]:
                x = event(out.data["i"], args.features)["x"]
                want = 1 / (1 + math.exp(-(sum(w * v for w, v in zip(weights, x)) + bias)))
                assert abs(out.data["p"] - want) < 1e-9, (out.data, want)
            assert r.handle.stats["dead_letters"] == 0, r.handle.stats
        rss = {label: rss_mb(r.handle.deployment.process.pid) for label, r in runs.items()}
    finally:
        ofnotebook.stop(all=True)
        for backend in active_backends():
            backend.close()
        stop_standin()
        for r in runs.values():
            client.delete(r.stream)
        client.close()
    bodies = body_cost_us(args.features, args.batch)
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
        "scorer": f"logistic over {args.features} features, "
                  f"{'numpy' if has_numpy() else 'plain Python (numpy not installed)'}",
        "events": args.events, "batch": args.batch, "batch_wait_ms": args.batch_wait,
        "wall_s": time.monotonic() - started,
        "events_per_s": {feed: {label: {"median": statistics.median(rates), "reps": rates}
                                for label, rates in by.items()}
                         for feed, by in results.items()},
        "function_body_us_in_process": bodies,
        "rss_mb_after": rss,
    }
    out = ROOT / "benchmarks" / "results" / "batch.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")

    print(f"machine: {summary['machine']}; scorer: {summary['scorer']}; "
          f"whole run {summary['wall_s']:.0f} s")
    print("| feed | per event: events/s [reps] | --batch "
          f"{args.batch}: events/s [reps] | ratio |\n|---|---|---|---|")
    for feed, by in summary["events_per_s"].items():
        one, many = by["per-event"], by["batch"]
        print(f"| {feed}, N={args.events} | {one['median']:.0f} "
              f"[{', '.join(f'{x:.0f}' for x in one['reps'])}] | {many['median']:.0f} "
              f"[{', '.join(f'{x:.0f}' for x in many['reps'])}] | "
              f"{many['median'] / one['median']:.2f} |")
    print(f"| body alone in-process (scale only), us an event | {bodies['per_event']:.1f} | "
          f"{bodies['batch']:.1f} | |")
    print(f"| RSS runtime after the runs | {rss['per-event']:.0f} MB | {rss['batch']:.0f} MB | |")


if __name__ == "__main__":
    main()
