"""Batch functions (``--batch N``, issue 14 item 3) on the local target: the real runtime
process, the real stand-in, bulk delivery; and what the package and the cluster manifests
carry for them. The refusals are in tests/test_bad_input.py."""

from __future__ import annotations

import json
import math
import re
import threading
from typing import Any

import ofnotebook
from ofnotebook import api
from ofnotebook.backends.gitops import write_function
from ofnotebook.manifests import ClusterOptions, function_manifest, validate
from ofnotebook.request import DeployRequest
from ofnotebook.view import ViewState
from tests.helpers import make_function, uid, wait_for

#: A logistic model over four features, scored for the whole batch in one call (plain Python:
#: numpy is no dependency; benchmarks/bench_batch.py scores with numpy where it is installed).
SCORER = """
def score(ctx, events):
    rows = [e["x"] for e in events]
    scores = [1 / (1 + math.exp(-(sum(w * v for w, v in zip(WEIGHTS, row)) + BIAS)))
              for row in rows]
    for event, s in zip(events, scores):
        ctx.send("scores", {"id": event["id"], "score": round(s, 6),
                            "first": events[0]["id"], "n": len(events)})
"""
WEIGHTS, BIAS = [0.5, -0.25, 1.0, 0.1], -0.3


def expected(x: list[float]) -> float:
    return round(1 / (1 + math.exp(-(sum(w * v for w, v in zip(WEIGHTS, x)) + BIAS))), 6)


def features(i: int) -> list[float]:
    return [i % 7 / 7, i % 3 - 1.0, (i % 5) / 10, float(i % 2)]


def test_a_batch_function_scores_whole_batches_and_each_send_reaches_the_output(
        local_backend: Any) -> None:
    fn = make_function(SCORER, {"math": math, "WEIGHTS": WEIGHTS, "BIAS": BIAS}, name="score")
    topic = f"batch-{uid()}"
    handle = ofnotebook.deploy(fn, "batch-scorer", target=local_backend, batch=10,
                               batch_wait_ms=50, inputs={"events": f"memory://{topic}"},
                               outputs={"scores": f"memory://{topic}-out"})
    assert json.loads((handle.package.path / "function" / "manifest.json").read_text()
                      )["batch"] == {"size": 10, "waitMs": 50}
    state = ViewState(handle.name, handle.runtime, handle.target)
    state.attach(handle)  # the live view's header says how the function is fed
    assert state.wiring.endswith(" · batch 10 (wait 50 ms)"), state.wiring

    def burst(start: int) -> None:  # three producers at once, 20 events each
        for i in range(start, start + 20):
            handle.publish("events", {"id": i, "x": features(i)})

    threads = [threading.Thread(target=burst, args=(s,)) for s in (0, 20, 40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outputs = [o.data for o in handle.wait_for_outputs(60, timeout=20)]
    assert sorted(o["id"] for o in outputs) == list(range(60))  # each event scored once
    assert all(o["score"] == expected(features(o["id"])) for o in outputs)
    batches: dict[int, list[dict[str, Any]]] = {}
    for o in outputs:
        batches.setdefault(o["first"], []).append(o)
    sizes = [len(b) for b in batches.values()]
    # every event of a call had the call's list; none longer than --batch; they add up
    assert all(len(b) == b[0]["n"] and len(b) <= 10 for b in batches.values()), sizes
    assert sum(sizes) == 60 and max(sizes) > 1, sizes
    wait_for(lambda: handle.stats["delivered"] == 60, 5, lambda: f"stats: {handle.stats}")
    assert handle.stats["dead_letters"] == 0


POISONED = """
def check(ctx, events):
    if any(e.get("poison") for e in events):
        raise ValueError("a poisoned event in a batch of " + str(len(events)))
    for e in events:
        ctx.send("ok", e["id"])
"""


def test_a_poisoned_event_in_a_batch_ends_as_the_only_dead_letter(local_backend: Any) -> None:
    topic = f"poison-{uid()}"
    handle = ofnotebook.deploy(make_function(POISONED, name="check"), "batch-poison",
                               target=local_backend, batch=10, batch_wait_ms=50,
                               inputs={"events": f"memory://{topic}"},
                               outputs={"ok": f"memory://{topic}-out"})
    for i in range(20):
        handle.publish("events", {"id": i, "poison": i == 7})
    others = [i for i in range(20) if i != 7]
    wait_for(lambda: handle.dead_letters and len(handle.outputs) >= len(others), 30,
             lambda: f"stats: {handle.stats}")
    # the failed batch's sends never went out; each of its events passed again alone
    assert sorted(o.data for o in handle.outputs) == others
    letters = handle.dead_letters
    assert [letter["data"] for letter in letters] == [{"id": 7, "poison": True}]
    logs = handle.logs()  # it failed in a batch of several first, then alone
    assert re.search(r"a poisoned event in a batch of ([2-9]|10)\b", logs), logs
    assert "a poisoned event in a batch of 1" in logs


def test_batch_one_still_hands_the_function_lists(local_backend: Any) -> None:
    """``--batch 1`` is a batch function too: its code indexes a list, so it gets one."""
    fn = make_function("def f(ctx, events):\n"
                       "    ctx.send('out', [type(events).__name__, len(events)])\n")
    topic = f"batch-one-{uid()}"
    handle = ofnotebook.deploy(fn, "batch-one", target=local_backend, batch=1,
                               inputs={"events": f"memory://{topic}"},
                               outputs={"out": f"memory://{topic}-out"})
    for i in range(5):
        handle.publish("events", i)
    assert [o.data for o in handle.wait_for_outputs(5, timeout=10)] == [["list", 1]] * 5


def test_an_async_batch_function_is_accepted_and_a_redeploy_keeps_the_batch(
        tmp_path: Any) -> None:
    fn = make_function("async def f(ctx, events):\n    return None\n")
    request = DeployRequest(name="async-batch", target="yaml", inputs=["e=memory://e"],
                          batch=5, target_options={"folder": str(tmp_path)})
    planned = api.plan(fn, request)
    assert str(planned.spec().batch) == "batch 5 (wait 20 ms)"
    assert api.batch_of(request) == planned.spec().batch
    assert api.batch_of(DeployRequest(name="x")) is None  # a plain request batches nothing


def _batch_spec(**batch: Any) -> Any:
    fn = make_function("def f(ctx, events):\n    return None\n")
    return api.plan(fn, DeployRequest(name="scorer", target="yaml",
                                    inputs=["events=redis://redis.default.svc:6379/events"],
                                    **batch)).spec()


def test_the_cluster_manifest_runs_a_batch_function_with_its_own_daprd(
        crd: dict[str, Any], tmp_path: Any) -> None:
    spec = _batch_spec(batch=100, batch_wait_ms=50)
    image = "registry.example.com/demo/fn@sha256:" + "a" * 64
    for version in ("v1beta2", "v1beta1"):
        manifest = function_manifest(spec, image, ClusterOptions(), api_version=version)
        validate(manifest, crd)
        # sidecar mode: daprd reads the runtime's bulkSubscribe (standalone's dapr-proxy
        # forwards single events)
        assert manifest["spec"]["serving"]["annotations"] == {
            "openfunction.io/enable-dapr": "true",
            "openfunction.io/dapr-service-mode": "sidecar"}
    plain = _batch_spec()
    serving = function_manifest(plain, image, ClusterOptions())["spec"]["serving"]
    assert serving["annotations"]["openfunction.io/dapr-service-mode"] == "standalone"
    given = function_manifest(spec, image, ClusterOptions(dapr_mode="sidecar"))
    assert given["spec"]["serving"]["annotations"]["openfunction.io/dapr-service-mode"] == \
        "sidecar"


def test_the_yaml_bundle_carries_the_batch_into_the_image(tmp_path: Any,
                                                          monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    fn = make_function("def f(ctx, events):\n    return None\n")
    handle = ofnotebook.deploy(fn, "yaml-batch", target="yaml", batch=100, batch_wait_ms=50,
                               inputs={"events": "redis://redis.default.svc:6379/events"},
                               target_options={"folder": str(tmp_path / "out")})
    manifest = json.loads((handle.package.path / "function" / "manifest.json").read_text())
    assert manifest["batch"] == {"size": 100, "waitMs": 50}
    written = write_function(handle.package, tmp_path / "export", ClusterOptions())
    text = "\n".join(p.read_text() for p in sorted(written.rglob("*.yaml")))
    assert "openfunction.io/dapr-service-mode: sidecar" in text
