"""Figures for the live view (issue #4).

    .venv/bin/python benchmarks/bench_view.py [--events 200] [--lines 10000] [--reps 5]

1. Phase event -> widget model updated, inside a real IPython kernel (started with
   jupyter_client, so every trait change is serialized and sent on the kernel's IOPub channel
   as a comm message): a ``PhaseRecorder`` whose sink is a ``FunctionView`` emits
   started/finished pairs; the clock runs from just before ``emit`` to the moment the
   phases widget's ``value`` trait changed (an ``observe`` callback). Baseline in the same run:
   setting a bare ``ipywidgets.HTML`` value to a string of the same size (the least a model
   update costs). p50 / p95 over all events, median of the repetitions.
2. Log line -> logs widget updated: lines go in from another thread as a function's log reader
   would; the flusher redraws at most every 100 ms, so this is mostly that batching delay.
3. A burst of N log lines from a real deployed function (one invoke that prints N lines):
   growth of the kernel process's memory (tracemalloc, Python allocations) with the view
   attached, against the same burst with no view (baseline, same run), and the view's buffer.

Prints a Markdown table and writes benchmarks/results/view.json. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def phase_latency(events: int) -> tuple[list[float], list[float]]:
    import ipywidgets as w

    from ofnotebook.backends.base import PhaseEvent, PhaseRecorder
    from ofnotebook.widget import FunctionView

    view = FunctionView("bench", "sync", "local")
    changed: list[float] = []
    view.phases.observe(lambda _: changed.append(time.perf_counter()), "value")
    recorder = PhaseRecorder(sink=view.on_phase)
    ours = []
    for i in range(events):
        name = f"phase{(i // 2) % 8}"  # every emit changes what is drawn
        state = "started" if i % 2 == 0 else "finished"
        before = len(changed)
        start = time.perf_counter()
        recorder.emit(PhaseEvent(name, state, time.time(), None if state == "started" else 0.01))
        while len(changed) == before:  # drawn by this thread, or by the flusher if it was first
            time.sleep(0.0001)
        ours.append((changed[-1] - start) * 1000)
    bare = w.HTML("")
    size = len(view.phases.value)
    base = []
    for i in range(events):
        start = time.perf_counter()
        bare.value = f"{i:06d}" + "x" * size
        base.append((time.perf_counter() - start) * 1000)
    return ours, base


def in_kernel(events: int) -> tuple[list[float], list[float]]:
    """``phase_latency`` run inside a fresh kernel, where widget updates are real comm sends."""
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3")
    try:
        code = (f"import sys, json; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'benchmarks')!r}]\n"
                f"import bench_view\nprint(json.dumps(bench_view.phase_latency({events})))")
        printed: list[str] = []
        reply = client.execute_interactive(
            code, timeout=120, output_hook=lambda msg: printed.append(
                msg["content"].get("text", "")) if msg["msg_type"] == "stream" else None)
        assert reply["content"]["status"] == "ok", reply["content"]
        ours, base = json.loads("".join(printed))
        return ours, base
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def log_latency(lines: int) -> list[float]:
    from ofnotebook.widget import FunctionView

    view = FunctionView("bench", "sync", "local")
    sent: dict[str, float] = {}
    seen: list[float] = []
    done = threading.Event()

    def on_change(change: dict) -> None:
        now = time.perf_counter()
        for key in list(sent):
            if key in change["new"]:
                seen.append((now - sent.pop(key)) * 1000)
        if not sent and len(seen) >= lines:
            done.set()

    view.logs.observe(on_change, "value")
    for i in range(lines):
        key = f"line-{i:05d}"
        sent[key] = time.perf_counter()
        view.state.on_log(key)
        time.sleep(0.007)  # a chatty function, not a burst
    done.wait(5)
    return seen


def burst_growth(lines: int, with_view: bool) -> dict[str, float]:
    import ofnotebook
    from ofnotebook.capture import capture  # noqa: F401  (warm imports before measuring)

    namespace: dict = {}
    exec("def shout(request):\n"
         "    n = int(request.args['n'])\n"
         "    for i in range(n):\n"
         "        print(f'line {i:06d} ' + 'x' * 80, flush=True)\n"
         "    return str(n)\n", namespace)
    handle = ofnotebook.deploy(namespace["shout"], f"burst-{'view' if with_view else 'bare'}")
    try:
        view = ofnotebook.view_for(handle) if with_view else None
        handle.invoke(params={"n": 10})
        time.sleep(0.5)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        handle.invoke(params={"n": lines})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
                f"line {lines - 1:06d}" in line for line in handle.deployment.logs(tail=3)):
            time.sleep(0.05)
        time.sleep(0.3)  # the flusher's last redraw
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        result = {"grown_kb": grown / 1024}
        if view is not None:
            result["view_lines"] = len(view.state.logs)
            result["lines_seen"] = view.state.lines_seen
        return result
    finally:
        handle.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--lines", type=int, default=10000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("OFNOTEBOOK_CACHE_DIR", tempfile.mkdtemp(prefix="ofn-bench-"))
    started = time.monotonic()
    phase_runs, base_runs, log_runs, bursts = [], [], [], {"view": [], "bare": []}
    for _ in range(args.reps):
        ours, base = in_kernel(args.events)
        phase_runs.append((pct(ours, 50), pct(ours, 95)))
        base_runs.append((pct(base, 50), pct(base, 95)))
        logs = log_latency(100)
        log_runs.append((pct(logs, 50), pct(logs, 95)))
        for kind in ("bare", "view"):
            bursts[kind].append(burst_growth(args.lines, kind == "view"))
    med = lambda rows, i: statistics.median(r[i] for r in rows)  # noqa: E731
    view_kb = statistics.median(b["grown_kb"] for b in bursts["view"])
    bare_kb = statistics.median(b["grown_kb"] for b in bursts["bare"])
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "phase_ms": {"p50": med(phase_runs, 0), "p95": med(phase_runs, 1)},
        "bare_widget_ms": {"p50": med(base_runs, 0), "p95": med(base_runs, 1)},
        "log_line_ms": {"p50": med(log_runs, 0), "p95": med(log_runs, 1)},
        "burst": {"lines": args.lines, "with_view_kb": view_kb, "without_view_kb": bare_kb,
                  "runs": bursts},
        "wall_s": time.monotonic() - started,
    }
    out = ROOT / "benchmarks" / "results" / "view.json"
    out.write_text(json.dumps(result, indent=2))
    view_lines = bursts["view"][-1]["view_lines"]
    print(f"machine: {result['machine']}; whole run {result['wall_s']:.0f} s")
    print("| figure | value | target |\n|---|---|---|")
    print(f"| phase event -> widget model updated, p50 / p95 | {med(phase_runs, 0):.2f} / "
          f"{med(phase_runs, 1):.2f} ms (bare widget set: {med(base_runs, 0):.2f} / "
          f"{med(base_runs, 1):.2f} ms) | <= 50 ms p50 |")
    print(f"| log line -> logs widget updated (100 ms batching), p50 / p95 | "
          f"{med(log_runs, 0):.0f} / {med(log_runs, 1):.0f} ms | |")
    print(f"| {args.lines}-line burst: kernel memory growth with view / without | "
          f"{view_kb:.0f} / {bare_kb:.0f} kB; view keeps {view_lines} lines | bounded by the "
          f"view's buffer |")


if __name__ == "__main__":
    main()
