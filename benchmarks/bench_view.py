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

4. ``--browser`` (issue 13): in a real JupyterLab in headless Chromium (the browser test's
   ``start_lab``), a deployed function prints its ``time.time()`` on each of 100 invokes 200 ms
   apart; a MutationObserver in the page reads the newest log line as it appears, so the
   figure is kernel clock -> drawn in the page (same machine, same clock), p50 / p95. Then
   5 s of a 10,000 lines/s + 10,000 outputs/s flood into the view while a
   ``requestAnimationFrame`` loop records frame gaps: the longest and the p99 stall, against
   5 s idle just before (baseline, same page).
5. The Metrics history's kernel memory (tracemalloc) after 1, 5 and 60 minutes of samples with
   1,000 requests a second: bounded by its window.

Prints a Markdown table and writes benchmarks/results/view.json (view-browser.json for 4-5).
Nothing here is a test.
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


BENCH_CELLS = [
    "%load_ext ofnotebook",
    "%%function ticker\nimport time\ndef tick(request):\n"
    "    print(f'T={time.time() * 1000:.1f}', flush=True)\n    return 'ok'",
    "import os, time\nwhile not os.path.exists('go'):\n    time.sleep(0.05)\n"
    "for _ in range(100):\n    tick.invoke()\n    time.sleep(0.2)\nprint('ticked')",
    "from ofnotebook.backends.events import OutputEvent\n"
    "while not os.path.exists('flood'):\n    time.sleep(0.05)\n"
    "state, n, t0 = tick.view.state, 0, time.time()\n"
    "while time.time() - t0 < 5:\n"
    "    while n < (time.time() - t0) * 10_000:\n"
    "        state.on_log(f'flood {n}')\n"
    "        state.on_output(OutputEvent(time.time(), 'out', {'n': n}, 'json'))\n"
    "        n += 1\n    time.sleep(0.001)\n"
    "print(f'flooded {n / (time.time() - t0):.0f}/s')",
]
WATCH_JS = """view => { window.lat = []; window.redraws = 0; let last = '';
  new MutationObserver(() => { window.redraws++; const el = view.querySelector('.ofn-last');
    const m = el && /T=([0-9.]+)/.exec(el.textContent);
    if (m && m[1] !== last) { last = m[1]; window.lat.push(Date.now() - Number(m[1])); }
  }).observe(view, {childList: true, subtree: true, characterData: true}); }"""
FRAMES_JS = """() => { window.frames_ = []; window.framing = true;
  const loop = t => { window.frames_.push(t); if (window.framing) requestAnimationFrame(loop); };
  requestAnimationFrame(loop); }"""
GAPS_JS = """() => { window.framing = false; const f = window.frames_;
  return f.slice(1).map((t, i) => t - f[i]); }"""


def in_chromium() -> dict[str, object]:
    """Figures 4: update -> visible in the page, and frame stalls under a flood."""
    from playwright.sync_api import expect, sync_playwright

    from tests.browser.test_jupyterlab import (CHROMIUM, CHROMIUM_ARGS, open_and_run_all,
                                               start_lab, write_notebook)

    with tempfile.TemporaryDirectory() as tmp, start_lab(Path(tmp)) as lab:
        write_notebook(lab.root / "bench.ipynb", BENCH_CELLS)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                open_and_run_all(page, lab, "bench.ipynb")
                view = page.locator(".ofnotebook-view").first
                expect(view.locator(".ofn-status-running")).to_be_visible(timeout=90_000)
                view.locator(".lm-TabBar-tabLabel", has_text="Logs").click()
                view.evaluate(WATCH_JS)
                (lab.root / "go").write_text("")
                expect(page.locator(".jp-OutputArea-output", has_text="ticked")
                       ).to_have_count(1, timeout=120_000)
                latencies = page.evaluate("window.lat")
                page.evaluate(FRAMES_JS)
                page.wait_for_timeout(5000)
                idle = page.evaluate(GAPS_JS)
                page.evaluate(FRAMES_JS)
                redraws = page.evaluate("window.redraws")
                (lab.root / "flood").write_text("")
                flooded = page.locator(".jp-OutputArea-output", has_text="flooded")
                expect(flooded).to_have_count(1, timeout=60_000)
                gaps = page.evaluate(GAPS_JS)
                redraws = page.evaluate("window.redraws") - redraws  # the page did update
                shown = view.locator(".ofn-last").inner_text()
                rate = flooded.inner_text().strip()
            finally:
                browser.close()
    return {"update_visible_ms": {"p50": pct(latencies, 50), "p95": pct(latencies, 95),
                                  "n": len(latencies)},
            "frames_idle_ms": {"max": max(idle), "p99": pct(idle, 99), "n": len(idle)},
            "frames_flood_ms": {"max": max(gaps), "p99": pct(gaps, 99), "n": len(gaps),
                                "over_50": sum(g > 50 for g in gaps),
                                "page_mutations": redraws, "last_line": shown},
            "flood": rate}


def metrics_memory() -> dict[str, float]:
    """Figure 5: kB the Metrics history holds after 1, 5 and 60 minutes of samples."""
    from ofnotebook.viewmetrics import MetricsHistory

    grown = {}
    for minutes in (1, 5, 60):
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        history = MetricsHistory()
        history.tick(0.0)
        for second in range(minutes * 60):
            for i in range(1000):
                history.on_invocation(1.0 + i % 7, failed=False)
            history.on_counts({"events_in": second * 1000, "errors": 0, "dead_letters": 0})
            history.tick(second + 1.0)
        grown[f"{minutes}_min_kb"] = (tracemalloc.get_traced_memory()[0] - before) / 1024
        tracemalloc.stop()
        del history
    return grown


def browser_main(reps: int) -> None:
    runs = [in_chromium() for _ in range(reps)]
    med = lambda key, sub: statistics.median(r[key][sub] for r in runs)  # type: ignore  # noqa: E731
    memory = metrics_memory()
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "runs": runs,
              "metrics_memory": memory}
    (ROOT / "benchmarks" / "results" / "view-browser.json").write_text(
        json.dumps(result, indent=2))
    print("| figure | value | target |\n|---|---|---|")
    print(f"| log line printed by the function -> visible in Chromium, p50 / p95 (median of "
          f"{reps} runs of 100) | {med('update_visible_ms', 'p50'):.0f} / "
          f"{med('update_visible_ms', 'p95'):.0f} ms | <= 150 ms p50 |")
    print(f"| frame gap under a 10,000 lines/s + 10,000 outputs/s flood, longest / p99 (idle: "
          f"{med('frames_idle_ms', 'max'):.0f} / {med('frames_idle_ms', 'p99'):.0f}) | "
          f"{med('frames_flood_ms', 'max'):.0f} / {med('frames_flood_ms', 'p99'):.0f} ms; "
          f"frames over 50 ms: {med('frames_flood_ms', 'over_50'):.0f} | <= 50 ms |")
    print(f"| Metrics history, kernel memory after 1 / 5 / 60 min at 1,000 req/s | "
          f"{memory['1_min_kb']:.0f} / {memory['5_min_kb']:.0f} / {memory['60_min_kb']:.0f} kB "
          f"| bounded |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--lines", type=int, default=10000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--browser", action="store_true", help="figures 4-5 (Chromium)")
    args = parser.parse_args()
    if args.browser:
        browser_main(min(args.reps, 3))
        return
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
