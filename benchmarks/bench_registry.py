"""Figures for images without an engine (issue #9, part A): ``--build registry`` against the
engine path, same machine, same run.

    .venv/bin/python benchmarks/bench_registry.py [--reps 5] [--heavy-reps 3]

Needs what .ci/setup-containers provides (Podman's service, the base image, the registry on
127.0.0.1:5000 with the base pushed) and Debian's ``docker-registry``. The registry builder
pushes to a fresh ``docker-registry`` of its own (its access log counts the uploads); the
engine path pushes through Podman to 127.0.0.1:5000. Each repetition edits the function (a new
constant), so every package digest and image is new:

* code edit -> new image in the registry: ``layers.build_and_push`` (deps layer cached) vs
  ``images.build`` + ``images.push`` (deps image cached), and their ratio;
* bytes uploaded per code edit of the quickstart's ``greet`` (notebooks/quickstart.ipynb):
  the blobs the registry logged as uploaded, plus the manifest;
* first build of a function that locks numpy, both builders, nothing cached (a fresh layer
  cache and no pip cache; ``images.build(nocache=True)``), until the image is in the registry;
* first push of the base into an empty registry (a new registry each repetition).

Medians over the repetitions. Writes benchmarks/results/registry.json. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = "127.0.0.1:5000"
NUMPY = "numpy==2.4.6"


def timed(fn):  # noqa: ANN001, ANN201
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def quickstart(version: str):  # noqa: ANN201
    """The quickstart's greet, as its cells define it; ``version`` is the code edit."""
    from tests.helpers import make_function

    source = ("def greet(request):\n"
              "    name = request.args.get('name', 'world')\n"
              "    print(f'greeting {name}')\n"
              f"    return {{'greeting': polite(name), 'model': MODEL_VERSION, 'v': {version!r}}}\n")
    ns: dict[str, Any] = {"__name__": "__main__", "MODEL_VERSION": "2026-11"}
    exec("def polite(name):\n    return f'hello {name}'\n", ns)
    return make_function(source, ns, name="greet")


def numpy_function(constant: str):  # noqa: ANN201
    from tests.helpers import make_function

    return make_function("def stats(request):\n    return {'c': C}\n", {"C": constant},
                         name="stats")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--heavy-reps", type=int, default=3,
                        help="repetitions of the numpy first builds")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ofn-bench-registry-"))
    os.environ["OFNOTEBOOK_CACHE_DIR"] = str(work / "cache")
    warnings.simplefilter("ignore")  # the base's Python micro version differs on purpose here

    from ofnotebook import images, layers
    from ofnotebook import registry as reg
    from ofnotebook.capture import capture
    from ofnotebook.package import package
    from ofnotebook.spec import FunctionSpec
    from tests.registry.conftest import Registry

    client = images.engine()
    engine_base = f"python:{sys.version_info[0]}.{sys.version_info[1]}-slim"
    registry_base = f"{SHARED}/ofnotebook-test/python:3.11-slim"
    with reg.RegistryClient(SHARED) as shared:
        found = shared.get_manifest("ofnotebook-test/python", "3.11-slim")
        cfg = json.loads(shared.get_blob("ofnotebook-test/python",
                                         found.data["config"]["digest"]))
    if not layers.base_python(cfg):
        raise SystemExit(f"{registry_base} must declare PYTHON_VERSION (tests/registry does it)")
    base_size = sum(layer["size"] for layer in found.data["layers"])

    def pkg_for(fn: Any, name: str, base: str, requirements: tuple[str, ...] = ()) -> Any:
        return package(capture(fn, requirements=requirements), FunctionSpec(
            name=name, requirements=requirements), base_image=base)

    registries: list[Registry] = []

    def fresh_registry() -> Registry:
        made = Registry(work / f"registry-{len(registries)}", f"bench-{len(registries)}")
        registries.append(made.start())
        return made

    made_tags: list[str] = []  # engine images: the digest refs, tags and deps images made here
    started = time.monotonic()
    rows: dict[str, list[float]] = {k: [] for k in (
        "edit_registry_s", "edit_engine_s", "edit_bytes", "edit_calls", "numpy_registry_s",
        "numpy_engine_s", "base_push_s", "base_copy_s")}
    try:
        target = fresh_registry()
        name = f"bench-greet-{uuid.uuid4().hex[:6]}"
        # warm-up (not measured): base copied, deps layer built, deps image built
        layers.build_and_push(pkg_for(quickstart("warm"), name, registry_base), target.host)
        def engine_build(pkg: Any, nocache: bool = False) -> float:
            made_tags.extend([images.image_tag(pkg), f"{SHARED}/{images.image_tag(pkg)}",
                              images.split_context(pkg)[0]])
            seconds, ref = timed(lambda: images.push(images.build(pkg, client=client,
                                                                  nocache=nocache),
                                                     SHARED, client))
            made_tags.append(ref)
            return seconds

        engine_build(pkg_for(quickstart("warm"), name, engine_base))

        for rep in range(args.reps):
            edit = uuid.uuid4().hex[:8]
            pkg = pkg_for(quickstart(edit), name, registry_base)
            mark = target.mark()
            seconds, ref = timed(lambda: layers.build_and_push(pkg, target.host))
            repo, digest = ref.split("/", 1)[1].split("@")
            with reg.RegistryClient(target.host) as c:
                manifest = c.get_manifest(repo, digest)
            sizes = {d["digest"]: d["size"] for d in manifest.data["layers"]}
            sizes[manifest.data["config"]["digest"]] = manifest.data["config"]["size"]
            uploaded = target.uploaded(mark)
            rows["edit_registry_s"].append(seconds)
            rows["edit_bytes"].append(sum(sizes[d] for d in uploaded) + len(manifest.body))
            rows["edit_calls"].append(len(target.calls(mark)))
            seconds = engine_build(pkg_for(quickstart(edit), name, engine_base))
            rows["edit_engine_s"].append(seconds)
            print(f"edit {rep + 1}: registry {rows['edit_registry_s'][-1]:.3f} s "
                  f"({rows['edit_bytes'][-1]} B in {rows['edit_calls'][-1]} calls), engine "
                  f"{seconds:.3f} s", flush=True)

        for rep in range(args.heavy_reps):
            constant = uuid.uuid4().hex
            cache = work / f"cold-{rep}"
            os.environ["OFNOTEBOOK_CACHE_DIR"] = str(cache)
            os.environ["PIP_NO_CACHE_DIR"] = "1"
            try:
                pkg = pkg_for(numpy_function(constant), f"bench-np-{constant[:6]}", registry_base,
                              (NUMPY,))
                seconds, _ = timed(lambda: layers.build_and_push(pkg, target.host))
            finally:
                os.environ["OFNOTEBOOK_CACHE_DIR"] = str(work / "cache")
                del os.environ["PIP_NO_CACHE_DIR"]
                shutil.rmtree(cache, ignore_errors=True)
            rows["numpy_registry_s"].append(seconds)
            seconds = engine_build(pkg_for(numpy_function(constant), f"bench-np-{constant[:6]}",
                                           engine_base, (NUMPY,)), nocache=True)
            rows["numpy_engine_s"].append(seconds)
            print(f"numpy {rep + 1}: registry {rows['numpy_registry_s'][-1]:.2f} s, engine "
                  f"{seconds:.2f} s", flush=True)

        for rep in range(args.reps):
            empty = fresh_registry()
            lines: list[str] = []
            pkg = pkg_for(quickstart(f"base-{rep}"), name, registry_base)
            seconds, _ = timed(lambda: layers.build_and_push(
                pkg, empty.host, on_line=lambda p, t: lines.append(t)))
            copy = [float(m.group(1)) for line in lines
                    for m in [re.search(r"^base layer .*: uploaded in ([\d.]+) s", line)] if m]
            rows["base_push_s"].append(seconds)
            rows["base_copy_s"].append(sum(copy))
            empty.stop()
            shutil.rmtree(empty.root, ignore_errors=True)
            print(f"base push {rep + 1}: {seconds:.2f} s (copy {sum(copy):.2f} s)", flush=True)
    finally:
        for made in registries:
            made.stop()
        for tag in dict.fromkeys(made_tags):
            try:
                client.images.remove(tag, force=True)
            except Exception:
                pass
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in rows.items() if v}
    med["edit_engine_over_registry"] = med["edit_engine_s"] / med["edit_registry_s"]
    med["numpy_engine_over_registry"] = med["numpy_engine_s"] / med["numpy_registry_s"]
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                         f"Python {platform.python_version()}",
              "engine": f"podman at {images.engine_url()}",
              "registry": "Debian docker-registry (distribution 2.8.2) on 127.0.0.1",
              "base": f"{registry_base} ({base_size / 1e6:.1f} MB compressed)",
              "median": med, "runs": rows, "wall_s": time.monotonic() - started}
    (ROOT / "benchmarks" / "results" / "registry.json").write_text(json.dumps(result, indent=2))
    print(f"machine: {result['machine']}; {result['engine']}; whole run "
          f"{result['wall_s']:.0f} s")
    print("| figure | registry | engine | target |\n|---|---|---|---|")
    print(f"| code edit -> new image in the registry | {med['edit_registry_s'] * 1000:.0f} ms | "
          f"{med['edit_engine_s'] * 1000:.0f} ms ({med['edit_engine_over_registry']:.1f}x) | "
          f"<= 1 s, >= 3x faster |")
    print(f"| bytes uploaded per code edit (quickstart greet) | {med['edit_bytes']:.0f} B in "
          f"{med['edit_calls']:.0f} calls | | < 20 kB |")
    print(f"| first build, numpy locked, nothing cached | {med['numpy_registry_s']:.1f} s | "
          f"{med['numpy_engine_s']:.1f} s | |")
    print(f"| first push of the base into an empty registry | {med['base_push_s']:.2f} s "
          f"(base layer copy {med['base_copy_s']:.2f} s) | | |")


if __name__ == "__main__":
    main()
