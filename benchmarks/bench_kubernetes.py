"""Figures for the kubernetes target (issues #6 and #9), against the API server double of the
tests (no real cluster can run here; see docs/kubernetes.md).

    .venv/bin/python benchmarks/bench_kubernetes.py [--reps 20]

* deploy -> Function applied: from ``ofnotebook.deploy(..., target=KubernetesBackend)`` to the
  end of its ``apply`` phase (CRD read once per backend, manifest validation, get, server-side
  apply), image build excluded (``build=False``: the reference is the local tag), the cluster's
  own start time excluded (the rollout wait is the separate ``deploy`` phase). Baseline, same
  run: one bare server-side apply (``patch_namespaced_custom_object`` with
  ``application/apply-patch+yaml``) of the same manifest with the kubernetes client (the least a
  client can do to apply a Function).
* API calls per deploy: every request the double received from the user during one deploy
  (the controller's status writes are its own): first deploy (apply that creates), update
  (apply of a new spec), an async function (pods looked at), and the same code deployed again
  from a new backend (a kernel restart: recognised as already serving, no watch).
* unchanged redeploy: wall time of that last deploy, until the handle is returned.

Medians over ``--reps``. Writes benchmarks/results/kubernetes.json. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def function_calls(double: object) -> list[tuple[str, str]]:
    """The deploy's own requests: the log followers of running handles excluded."""
    return [c for c in double.calls if not c[1].endswith("/log")]  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("OFNOTEBOOK_CACHE_DIR", tempfile.mkdtemp(prefix="ofn-bench-"))
    import yaml
    from kubernetes import client, config as kube_config

    import ofnotebook
    from ofnotebook.backends.kubernetes import KubernetesBackend
    from ofnotebook.manifests import ClusterOptions, function_manifest
    from ofnotebook.spec import FunctionSpec
    from tests.helpers import make_function
    from tests.k8s_double import KubeDouble

    crd_path = ROOT.parent / "shared" / "schemas" / "openfunction-function-crd.yaml"
    crd = yaml.load(crd_path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    started = time.monotonic()
    apply_ms, bare_ms, same_ms = [], [], []
    calls: dict[str, list[int]] = {"create": [], "update": [], "async": [], "unchanged": []}
    with KubeDouble(crd) as double, tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(double.kubeconfig()))
        target = KubernetesBackend(kubeconfig=str(kubeconfig), build=False, timeout=30)
        api = client.CustomObjectsApi(kube_config.new_client_from_config(
            config_file=str(kubeconfig)))
        target.crd()  # read once per backend, as in a kernel
        for rep in range(args.reps):
            fn = make_function(f"def f(request):\n    return {rep}\n")
            double.calls.clear()
            handle = ofnotebook.deploy(fn, f"bench-{rep}", target=target)
            calls["create"].append(len(function_calls(double)))
            start = handle.events[0].at
            applied = next(e.at for e in handle.events if e.phase == "apply" and
                           e.state == "finished")
            apply_ms.append((applied - start) * 1000)
            edited = make_function(f"def f(request):\n    return {rep + 1000}\n")
            double.calls.clear()
            updated = ofnotebook.deploy(edited, f"bench-{rep}", target=target)
            calls["update"].append(len(function_calls(double)))
            kernel = KubernetesBackend(kubeconfig=str(kubeconfig), build=False, timeout=30)
            kernel.crd()
            double.calls.clear()
            t0 = time.perf_counter()
            again = ofnotebook.deploy(edited, f"bench-{rep}", target=kernel)
            same_ms.append((time.perf_counter() - t0) * 1000)
            calls["unchanged"].append(len(function_calls(double)))
            manifest = function_manifest(FunctionSpec(name=f"bare-{rep}"), "img@sha256:" +
                                         "0" * 64, ClusterOptions(namespace="demo"))
            t0 = time.perf_counter()
            api.patch_namespaced_custom_object(
                "core.openfunction.io", "v1beta2", "demo", "functions", f"bare-{rep}",
                manifest, field_manager="bench", force=True,
                _content_type="application/apply-patch+yaml", _preload_content=False)
            bare_ms.append((time.perf_counter() - t0) * 1000)
            again.stop()
            for stale in (handle, updated):
                stale.deployment._closing = True  # their log followers
        for rep in range(min(5, args.reps)):
            fn = make_function("def g(ctx, data):\n    ctx.send('out', data)\n", name="g")
            double.calls.clear()
            h = ofnotebook.deploy(fn, f"bench-async-{rep}", target=target,
                                  inputs={"in": "kafka://kafka.demo.svc:9092/in"},
                                  outputs={"out": "kafka://kafka.demo.svc:9092/out"})
            calls["async"].append(len(function_calls(double)))
            h.stop()
    med = {"apply_ms": statistics.median(apply_ms), "bare_apply_ms": statistics.median(bare_ms),
           "unchanged_ms": statistics.median(same_ms),
           **{f"calls_{k}": statistics.median(v) for k, v in calls.items()}}
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                         f"Python {platform.python_version()}",
              "median": med, "apply_ms": apply_ms, "bare_apply_ms": bare_ms,
              "unchanged_ms": same_ms, "calls": calls,
              "wall_s": time.monotonic() - started}
    (ROOT / "benchmarks" / "results" / "kubernetes.json").write_text(json.dumps(result,
                                                                                indent=2))
    print(f"machine: {result['machine']}; whole run {result['wall_s']:.0f} s")
    print("| figure | value | target |\n|---|---|---|")
    print(f"| deploy -> Function applied (no build, no rollout), p50 | {med['apply_ms']:.1f} ms "
          f"(bare apply {med['bare_apply_ms']:.1f} ms, ratio "
          f"{med['apply_ms'] / med['bare_apply_ms']:.1f}) | |")
    print(f"| unchanged code from a new kernel -> handle, p50 | {med['unchanged_ms']:.1f} ms | |")
    print(f"| API calls per deploy: create / update / async / unchanged | "
          f"{med['calls_create']:.0f} / {med['calls_update']:.0f} / {med['calls_async']:.0f} / "
          f"{med['calls_unchanged']:.0f} | <= 10 |")

if __name__ == "__main__":
    main()
