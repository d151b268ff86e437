"""Figures for bulk delivery (issue 14): unary against bulk, in the same run.

    .venv/bin/python benchmarks/bench_bulk.py [--events 20000] [--reps 3] [--single 60]

What runs, all real: the stand-in's ``delivery.Dispatcher`` (in this process, fed as a driver's
pump feeds it: one thread calling it per event, blocking on its back-pressure) -> gRPC to a
function runtime process (the Dapr SDK's ``App`` with ofnotebook's topic handler; for bulk,
``runtime/bulk.py`` installed) -> the function ``ctx.send("out", data)`` -> gRPC
``PublishEvent`` (unary) or ``BulkPublishEvent`` (bulk) to a real stand-in process, in-memory
pub/sub output, recorded in its event log -> the runtime answers -> the Dispatcher acks.

What it is not: the whole notebook chain. The broker's consumer and the kernel's long poll of
outputs are not in it (the local backend's registry and runtime do not switch bulk on yet:
docs/bulk.md, "Wiring"); events/s here is N / (time from the first event handed to the
Dispatcher to the N-th ack), and the stand-in's log is checked to hold N outputs.

1. events/s, unary then bulk (maxMessagesCount 100), interleaved, median of ``--reps``;
2. an isolated event (one at a time, the next after the previous ack): p50/p95 of hand-off ->
   ack, unary and bulk (bulk must not make it wait);
3. RSS of the runtime process after the runs, and of this process (the Dispatcher's side).

Writes benchmarks/results/bulk.json. Nothing here is a test. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ofnotebook.backends.standin import StandIn  # noqa: E402
from ofnotebook.context import component_name  # noqa: E402
from ofnotebook.sidecar import cloudevents  # noqa: E402
from ofnotebook.sidecar.apps import App, Endpoint  # noqa: E402
from ofnotebook.sidecar.bulk import BulkSettings  # noqa: E402
from ofnotebook.sidecar.delivery import Dispatcher  # noqa: E402
from ofnotebook.sidecar.drivers.base import ComponentConfig, InboundEvent  # noqa: E402
from ofnotebook.sidecar.eventlog import EventLog  # noqa: E402
from ofnotebook.sidecar.protocol import ROLE_INPUT  # noqa: E402
from ofnotebook.spec import ComponentSpec, FunctionSpec  # noqa: E402
from tests.helpers import free_port  # noqa: E402

RUNTIME = textwrap.dedent("""
    import sys
    from dapr.ext.grpc import App
    from ofnotebook.runtime import bulk, callbacks
    from ofnotebook.runtime.context import Component, FunctionContext
    from ofnotebook.runtime.loader import LoadedFunction
    from ofnotebook.runtime.outputs import DaprBridge

    port, mode, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]

    def relay(ctx, data):
        ctx.send("out", data)

    source = Component("in", "bench-in", "pubsub.in-memory", topic="bench")
    fctx = FunctionContext(name="bench", version="v1", runtime="Async", port=port,
                           inputs={"in": source},
                           outputs={"out": Component("out", out, "pubsub.in-memory",
                                                     topic="results")})
    bridge = bulk.BufferingBridge(fctx) if mode == "bulk" else DaprBridge(fctx)
    app = App()
    callbacks._register(app, LoadedFunction(relay, "relay", "ctx_data", {}, {}), fctx, bridge,
                        "in", source)
    if mode == "bulk":
        bulk.declare(app)
        bulk.install(app, bridge)
    print("ready", flush=True)
    app.run(app_port=port, listen_address="127.0.0.1")
""")


def _runtime(standin: StandIn, out: str, mode: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    env = {**os.environ, **standin.env(), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", RUNTIME, str(port), mode, out], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc, port


def _dispatcher(port: int, bulk: bool) -> Dispatcher:
    endpoint = Endpoint(role=ROLE_INPUT, name="in", topic="bench",
                        bulk=BulkSettings(max_messages=100) if bulk else None,
                        component=ComponentConfig(name="bench-in", type="pubsub.in-memory"))
    return Dispatcher(App(app_id="bench", port=port), endpoint, EventLog(), attempts=8)


def _event(i: int, done: Any) -> InboundEvent:
    ce = cloudevents.new_cloud_event(app_id="producer", pubsub_name="bench-in", topic="bench",
                                     data=json.dumps({"i": i}).encode(),
                                     data_content_type="application/json")
    return InboundEvent(data=cloudevents.to_bytes(ce), _ack=done)


def _last(standin: StandIn) -> int:
    return int(requests.get(f"{standin.base}/ofnotebook/events", timeout=5,
                            headers={"dapr-api-token": standin.token}).json()["last"])


def throughput(dispatcher: Dispatcher, standin: StandIn, n: int,
               acked: threading.Semaphore | None = None,
               events: list[InboundEvent] | None = None) -> float:
    """Events/s of ``n`` events (made here unless given, with ``acked`` released per ack)."""
    if acked is None or events is None:
        acked = threading.Semaphore(0)
        events = [_event(i, acked.release) for i in range(n)]
    before = _last(standin)
    start = time.perf_counter()
    for event in events:
        dispatcher(event)
    for _ in range(n):
        if not acked.acquire(timeout=120):
            raise RuntimeError("events were not acknowledged within 120 s")
    elapsed = time.perf_counter() - start
    outputs = _last(standin) - before  # one log record per output (plus 'in'? none here)
    if outputs < n:
        raise RuntimeError(f"only {outputs} outputs recorded for {n} events")
    return n / elapsed


def isolated(dispatcher: Dispatcher, count: int) -> list[float]:
    times = []
    for i in range(count):
        done = threading.Event()
        start = time.perf_counter()
        dispatcher(_event(i, done.set))
        if not done.wait(10):
            raise RuntimeError("an isolated event was not acknowledged within 10 s")
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--single", type=int, default=60)
    args = parser.parse_args()
    out = ComponentSpec(name="out", type="pubsub.in-memory", topic="results",
                        metadata=(("bus", f"bench-{os.getpid()}"),))
    spec = FunctionSpec(name="bench-out", outputs=(out,))
    standin = StandIn()
    procs: dict[str, tuple[subprocess.Popen[str], int]] = {}
    try:
        standin.register("bench-out", 0, spec, timeout=5)
        name = component_name(spec, out)
        procs = {mode: _runtime(standin, name, mode) for mode in ("unary", "bulk")}
        dispatchers = {mode: _dispatcher(port, mode == "bulk") for mode, (_p, port) in
                       procs.items()}
        for mode, d in dispatchers.items():  # warm up: channels, imports, first client
            throughput(d, standin, 200)
        rates: dict[str, list[float]] = {"unary": [], "bulk": []}
        cpu: dict[str, dict[str, float]] = {"unary": {}, "bulk": {}}
        who = {"stand-in": psutil.Process(standin.proc.pid), "dispatcher": psutil.Process()}
        for _rep in range(args.reps):
            for mode, d in dispatchers.items():
                n = args.events if mode == "bulk" else max(2000, args.events // 5)
                parts = {**who, "runtime": psutil.Process(procs[mode][0].pid)}
                acked = threading.Semaphore(0)
                events = [_event(i, acked.release) for i in range(n)]  # not in the CPU figure
                before = {k: sum(p.cpu_times()[:2]) for k, p in parts.items()}
                rates[mode].append(throughput(d, standin, n, acked, events))
                for k, p in parts.items():  # CPU microseconds per event, by process
                    cpu[mode][k] = cpu[mode].get(k, 0) + (sum(p.cpu_times()[:2]) - before[k]) \
                        * 1e6 / n / args.reps
        single = {mode: isolated(d, args.single) for mode, d in dispatchers.items()}
        rss = {mode: psutil.Process(p.pid).memory_info().rss / 2**20
               for mode, (p, _port) in procs.items()}
        rss["dispatcher process"] = psutil.Process().memory_info().rss / 2**20
        for d in dispatchers.values():
            d.close()
    finally:
        for proc, _port in procs.values():
            proc.terminate()
            proc.wait(10)
        standin.close()
    result = {
        "events_per_s": {m: {"median": statistics.median(r), "runs": r} for m, r in
                         rates.items()},
        "isolated_ms": {m: {"p50": statistics.median(t),
                            "p95": sorted(t)[int(len(t) * 0.95) - 1]} for m, t in single.items()},
        "cpu_us_per_event": cpu, "rss_mb": rss, "events": args.events, "reps": args.reps, "cpus": os.cpu_count()}
    print("| path | events/s (median) | runs | isolated p50 ms | p95 ms |")
    print("|---|---|---|---|---|")
    for mode in ("unary", "bulk"):
        runs = ", ".join(f"{r:,.0f}" for r in rates[mode])
        iso = result["isolated_ms"][mode]
        print(f"| {mode} | {result['events_per_s'][mode]['median']:,.0f} | {runs} | "
              f"{iso['p50']:.2f} | {iso['p95']:.2f} |")
    print("CPU us/event:", {m: {k: round(v) for k, v in c.items()} for m, c in cpu.items()})
    print("RSS MB:", {k: round(v, 1) for k, v in rss.items()})
    (ROOT / "benchmarks" / "results" / "bulk.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
