"""Figures for the kubernetes target (issue #6), against the API server double of the tests
(no real cluster can run here; see the README).

    .venv/bin/python benchmarks/bench_kubernetes.py [--reps 20]

* deploy -> Function applied: from ``ofnotebook.deploy(..., target=KubernetesBackend)`` to the
  end of its ``apply`` phase (CRD read once per backend, manifest validation, get, create or
  replace), image build excluded (``build=False``: the reference is the digest tag), the
  cluster's own start time excluded (the rollout wait is the separate ``deploy`` phase).
  Baseline, same run: one bare ``create_namespaced_custom_object`` of the same manifest with
  the kubernetes client (the least a client can do to apply a Function).
* API calls per deploy: every request the double received during one deploy, first deploy
  (create) and update (replace) of a sync function, and an async function (pods looked at).

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("OFNOTEBOOK_CACHE_DIR", tempfile.mkdtemp(prefix="ofn-bench-"))
    import yaml
    from kubernetes import client, config as kube_config

    import ofnotebook
    from ofnotebook.backends.kubernetes import KubernetesBackend
    from ofnotebook.manifests import function_manifest
    from ofnotebook.spec import FunctionSpec
    from tests.helpers import make_function
    from tests.k8s_double import KubeDouble

    crd_path = ROOT.parent / "shared" / "schemas" / "openfunction-function-crd.yaml"
    crd = yaml.load(crd_path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    started = time.monotonic()
    apply_ms, bare_ms, calls = [], [], {"create": [], "update": [], "async": []}
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
            calls["create"].append(len(double.calls))
            start = handle.events[0].at
            applied = next(e.at for e in handle.events if e.phase == "apply" and
                           e.state == "finished")
            apply_ms.append((applied - start) * 1000)
            edited = make_function(f"def f(request):\n    return {rep + 1000}\n")
            double.calls.clear()
            ofnotebook.deploy(edited, f"bench-{rep}", target=target)
            calls["update"].append(len(double.calls))
            manifest = function_manifest(FunctionSpec(name=f"bare-{rep}"), "img@sha256:" +
                                         "0" * 64)
            t0 = time.perf_counter()
            api.create_namespaced_custom_object("core.openfunction.io", "v1beta2", "demo",
                                                "functions", manifest)
            bare_ms.append((time.perf_counter() - t0) * 1000)
            handle.stop()
        for rep in range(min(5, args.reps)):
            fn = make_function("def g(ctx, data):\n    ctx.send('out', data)\n", name="g")
            double.calls.clear()
            h = ofnotebook.deploy(fn, f"bench-async-{rep}", target=target,
                                  inputs={"in": "kafka://kafka.demo.svc:9092/in"},
                                  outputs={"out": "kafka://kafka.demo.svc:9092/out"})
            calls["async"].append(len(double.calls))
            h.stop()
    med = {"apply_ms": statistics.median(apply_ms), "bare_create_ms": statistics.median(bare_ms),
           **{f"calls_{k}": statistics.median(v) for k, v in calls.items()}}
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                         f"Python {platform.python_version()}",
              "median": med, "apply_ms": apply_ms, "bare_create_ms": bare_ms, "calls": calls,
              "wall_s": time.monotonic() - started}
    (ROOT / "benchmarks" / "results" / "kubernetes.json").write_text(json.dumps(result,
                                                                                indent=2))
    print(f"machine: {result['machine']}; whole run {result['wall_s']:.0f} s")
    print("| figure | value | target |\n|---|---|---|")
    print(f"| deploy -> Function applied (no build, no rollout), p50 | {med['apply_ms']:.1f} ms "
          f"(bare create {med['bare_create_ms']:.1f} ms, ratio "
          f"{med['apply_ms'] / med['bare_create_ms']:.1f}) | |")
    print(f"| API calls per deploy: create / update / async | {med['calls_create']:.0f} / "
          f"{med['calls_update']:.0f} / {med['calls_async']:.0f} | <= 10 |")


if __name__ == "__main__":
    main()
