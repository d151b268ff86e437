"""Figures for images and the container target (issue #5).

    .venv/bin/python benchmarks/bench_images.py [--reps 3] [--engine podman|docker]

Needs the engine, base image and registry of .ci/setup-containers. ``--engine`` points
DOCKER_HOST at that engine's socket as .ci/setup-containers starts it (default: the product's
own choice, DOCKER_HOST else Podman's socket else Docker's). Each repetition uses a
function with a fresh constant, so its package digest (and image tag) is new:

* no-cache build (baseline): ``images.build(..., nocache=True)`` of that package, every layer
  afresh, pip install from the package index included;
* first deploy: ``ofnotebook.deploy(..., target="container")`` of the same function: build
  (dependency layers cached by the baseline, as on any machine that built once) + run + ready;
* unchanged re-run: the same deploy again (same digest, running container: reused);
* code-only edit -> running container: deploy of an edited body (new digest; only the code
  layers rebuild), until the container answers its health check.

Ratios are against the no-cache build of the same repetition. Image size: the function image
against its base (the engine's Size). Medians over ``--reps``. Writes
benchmarks/results/images.json (images-ENGINE.json with ``--engine``). Nothing here is a test.
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
import uuid
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINES = {"podman": "unix:///run/podman/podman.sock",
           "docker": "unix:///run/ofnotebook-docker/docker.sock"}
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def make(body: str, constant: str):  # noqa: ANN201
    from helpers import make_function

    return make_function(f"def bench(request):\n    return {{'v': {body}, 'c': C}}\n",
                         {"C": constant}, name="bench")


def timed(fn):  # noqa: ANN001, ANN201
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--engine", choices=sorted(ENGINES))
    args = parser.parse_args()
    if args.engine:
        os.environ["DOCKER_HOST"] = ENGINES[args.engine]
    os.environ.setdefault("OFNOTEBOOK_CACHE_DIR", tempfile.mkdtemp(prefix="ofn-bench-"))
    warnings.simplefilter("ignore")  # the base's Python micro version differs on purpose here

    import ofnotebook
    from ofnotebook import images
    from ofnotebook.backends.container import ContainerBackend
    from ofnotebook.capture import capture
    from ofnotebook.package import package
    from ofnotebook.spec import FunctionSpec

    client = images.engine()
    version = client.version()
    kind = (version.get("Components") or [{}])[0].get("Name", "Engine")  # Podman says its name
    engine = f"{'Docker Engine' if kind == 'Engine' else kind} {version['Version']}"
    backend = ContainerBackend(start_timeout=60)
    rows: list[dict[str, float]] = []
    made: list[str] = []
    started = time.monotonic()
    try:
        for rep in range(args.reps):
            constant = uuid.uuid4().hex
            name = f"bench-img-{rep}-{constant[:6]}"
            fn = make("1", constant)
            pkg = package(capture(fn, runtime="sync", entry="bench"), FunctionSpec(name=name))
            nocache_s, built = timed(lambda: images.build(pkg, client=client, nocache=True))
            client.images.remove(built.tag, force=True)
            first_s, handle = timed(lambda: ofnotebook.deploy(fn, name, target=backend))
            assert handle.invoke().json()["c"] == constant
            rerun_s, again = timed(lambda: ofnotebook.deploy(fn, name, target=backend))
            assert again.deployment is handle.deployment
            edit_s, edited = timed(lambda: ofnotebook.deploy(make("2", constant), name,
                                                             target=backend))
            assert edited.invoke().json()["v"] == 2
            size = client.images.get(edited.deployment.image.tag).attrs["Size"]
            base = client.images.get(edited.package.base_image).attrs["Size"]
            made += [handle.deployment.image.tag, edited.deployment.image.tag]
            rows.append({"nocache_build_s": nocache_s, "first_deploy_s": first_s,
                         "rerun_s": rerun_s, "edit_to_running_s": edit_s,
                         "nocache_over_edit": nocache_s / edit_s,
                         "image_mb": size / 1e6, "base_mb": base / 1e6})
            print(f"rep {rep + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in rows[-1].items()),
                  flush=True)
    finally:
        backend.close()
        for tag in made:
            try:
                client.images.remove(tag, force=True)
            except Exception:
                pass
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                         f"Python {platform.python_version()}",
              "engine": f"{engine} at {images.engine_url()}",
              "median": med, "runs": rows, "wall_s": time.monotonic() - started}
    out = f"images-{args.engine}.json" if args.engine else "images.json"
    (ROOT / "benchmarks" / "results" / out).write_text(json.dumps(result, indent=2))
    print(f"machine: {result['machine']}; {result['engine']}; whole run "
          f"{result['wall_s']:.0f} s")
    print("| figure | value | target |\n|---|---|---|")
    print(f"| no-cache build (baseline) | {med['nocache_build_s']:.2f} s | |")
    print(f"| first deploy (deps layers cached) -> running | {med['first_deploy_s']:.2f} s | |")
    print(f"| unchanged re-run | {med['rerun_s'] * 1000:.0f} ms | <= 0.5 s |")
    print(f"| code-only edit -> running container | {med['edit_to_running_s']:.2f} s | <= 3 s |")
    print(f"| no-cache build / code edit | {med['nocache_over_edit']:.1f}x | >= 10x |")
    print(f"| image size vs base | {med['image_mb']:.0f} MB vs {med['base_mb']:.0f} MB "
          f"(+{med['image_mb'] - med['base_mb']:.0f} MB) | |")


if __name__ == "__main__":
    main()
