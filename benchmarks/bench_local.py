"""Figures for the sync loop on the local target (issue #2).

    .venv/bin/python benchmarks/bench_local.py [--runs 20] [--requests 2000]

1. cell execution -> first successful response (``%%function`` on an edited cell, then the
   first ``invoke``), p50/p95, with the warm standby process (the default) and, as the baseline
   in the same run, with no standby (a cold runtime process per deploy);
2. an unchanged cell re-run (no restart: the PID is checked);
3. invoke latency p50/p99 and requests/s from this process against our runtime and against
   Google's ``functions-framework`` serving the same function file, interleaved in rounds.

Prints a Markdown table and writes benchmarks/results/local.json. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FUNCTION_SOURCE = '''
def greet(request):
    name = request.args.get("name", "world")
    return {"greeting": "hello " + name, "n": NUMBER}
'''


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def shell() -> Any:
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    ip = InteractiveShell.instance(config=config)
    ip.run_line_magic("load_ext", "ofnotebook")
    return ip


def wait_standby(backend: Any) -> None:
    if backend.keep_standby:
        backend.prewarm()
    deadline = time.monotonic() + 30
    while backend.keep_standby and (backend._standby is None or backend._standby.port is None):
        if time.monotonic() > deadline:
            raise RuntimeError("standby did not start")
        time.sleep(0.01)


def cell_to_first_response(ip: Any, runs: int, standby: bool) -> list[float]:
    from ofnotebook.backends import get_backend

    backend = get_backend("local")
    backend.keep_standby = standby
    samples = []
    for i in range(runs):
        wait_standby(backend)  # a person takes longer than this between two cells
        ip.user_ns["NUMBER"] = i
        source = FUNCTION_SOURCE.replace('"hello "', f'"hello{i} "')
        start = time.perf_counter()
        handle = ip.run_cell_magic("function", "bench-cell", source)
        response = handle.invoke(params={"name": "x"})
        elapsed = time.perf_counter() - start
        assert response.status_code == 200 and response.json()["n"] == i
        samples.append(elapsed)
    ip.run_line_magic("function", "stop --all")
    return samples


def unchanged_rerun(ip: Any, runs: int) -> tuple[list[float], bool]:
    ip.user_ns["NUMBER"] = 1
    first = ip.run_cell_magic("function", "bench-rerun", FUNCTION_SOURCE)
    pid = first.deployment.process.pid
    samples, same = [], True
    for _ in range(runs):
        start = time.perf_counter()
        handle = ip.run_cell_magic("function", "bench-rerun", FUNCTION_SOURCE)
        samples.append(time.perf_counter() - start)
        same = same and handle.deployment.process.pid == pid
    ip.run_line_magic("function", "stop --all")
    return samples, same


def start_functions_framework(directory: Path, port: int) -> subprocess.Popen[bytes]:
    (directory / "main.py").write_text("NUMBER = 1\n" + FUNCTION_SOURCE)
    exe = Path(sys.executable).with_name("functions-framework")
    proc = subprocess.Popen([str(exe), "--target", "greet", "--source",
                             str(directory / "main.py"), "--host", "127.0.0.1", "--port",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                return proc
        except requests.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("functions-framework did not start")


def latency(url: str, count: int) -> list[float]:
    session = requests.Session()
    session.trust_env = False
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        response = session.get(url, params={"name": "x"})
        samples.append(time.perf_counter() - start)
        assert response.status_code == 200
    return samples


def throughput(url: str, clients: int, per_client: int) -> float:
    def worker() -> None:
        session = requests.Session()
        session.trust_env = False
        for _ in range(per_client):
            assert session.get(url, params={"name": "x"}).status_code == 200

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return clients * per_client / (time.perf_counter() - start)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def compare_servers(ip: Any, requests_count: int, rounds: int) -> dict[str, Any]:
    ip.user_ns["NUMBER"] = 1
    ours = ip.run_cell_magic("function", "bench-serve", FUNCTION_SOURCE)
    with tempfile.TemporaryDirectory() as tmp:
        ff_port = free_port()
        ff = start_functions_framework(Path(tmp), ff_port)
        urls: dict[str, str] = {"ofnotebook": ours.url, "functions-framework":
                                f"http://127.0.0.1:{ff_port}/"}
        lat: dict[str, list[float]] = {k: [] for k in urls}
        rps: dict[str, list[float]] = {k: [] for k in urls}
        try:
            for name, url in urls.items():  # warm-up
                latency(url, 100)
            for _ in range(rounds):
                for name, url in urls.items():
                    lat[name].extend(latency(url, requests_count // rounds))
                    rps[name].append(throughput(url, clients=8, per_client=100))
        finally:
            ff.terminate()
            ff.wait(10)
    ip.run_line_magic("function", "stop --all")
    result: dict[str, Any] = {}
    for name in urls:
        result[name] = {"p50_ms": pct(lat[name], 50) * 1000, "p99_ms": pct(lat[name], 99) * 1000,
                        "rps_median": statistics.median(rps[name])}
    ff_r, us = result["functions-framework"], result["ofnotebook"]
    result["ratio_p50"] = us["p50_ms"] / ff_r["p50_ms"]
    result["ratio_p99"] = us["p99_ms"] / ff_r["p99_ms"]
    result["ratio_rps"] = us["rps_median"] / ff_r["rps_median"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("OFNOTEBOOK_CACHE_DIR", tempfile.mkdtemp(prefix="ofn-bench-"))

    ip = shell()
    warm = cell_to_first_response(ip, args.runs, standby=True)
    cold = cell_to_first_response(ip, max(5, args.runs // 2), standby=False)
    from ofnotebook.backends import get_backend

    get_backend("local").keep_standby = True
    rerun, same_pid = unchanged_rerun(ip, args.runs)
    servers = compare_servers(ip, args.requests, args.rounds)

    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "cell_to_first_response_ms": {
            "warm_p50": pct(warm, 50) * 1000, "warm_p95": pct(warm, 95) * 1000,
            "cold_p50": pct(cold, 50) * 1000, "cold_p95": pct(cold, 95) * 1000,
            "ratio_warm_to_cold_p50": pct(warm, 50) / pct(cold, 50), "runs": len(warm)},
        "unchanged_rerun_ms": {"p50": pct(rerun, 50) * 1000, "p95": pct(rerun, 95) * 1000,
                               "same_process": same_pid, "runs": len(rerun)},
        "invoke": servers,
    }
    out = ROOT / "benchmarks" / "results" / "local.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")

    c, r, s = results["cell_to_first_response_ms"], results["unchanged_rerun_ms"], servers
    print(f"machine: {results['machine']}")
    print("| figure | value | target |\n|---|---|---|")
    print(f"| cell -> first response, warm standby, p50 / p95 | {c['warm_p50']:.0f} / "
          f"{c['warm_p95']:.0f} ms | <= 150 ms p50 |")
    print(f"| same, baseline without standby (cold process), p50 / p95 | {c['cold_p50']:.0f} / "
          f"{c['cold_p95']:.0f} ms (warm/cold = {c['ratio_warm_to_cold_p50']:.2f}) | |")
    print(f"| unchanged cell re-run, p50 / p95 | {r['p50']:.1f} / {r['p95']:.1f} ms, same "
          f"process: {r['same_process']} | <= 20 ms |")
    for name in ("ofnotebook", "functions-framework"):
        print(f"| invoke {name}: p50 / p99, req/s (8 clients) | {s[name]['p50_ms']:.2f} / "
              f"{s[name]['p99_ms']:.2f} ms, {s[name]['rps_median']:.0f}/s | |")
    print(f"| ratio ours / functions-framework: p50, p99, req/s | {s['ratio_p50']:.2f}, "
          f"{s['ratio_p99']:.2f}, {s['ratio_rps']:.2f} | <= 1.0, <= 1.0, >= 1.0 |")


if __name__ == "__main__":
    main()
