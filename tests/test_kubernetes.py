"""The kubernetes target against the API server double (tests/k8s_double/), which enforces the
real OpenFunction CRD schema, behaves as kube-apiserver v1.36 was measured to (issue 9 part B:
expired watches, restarts, server-side apply, RBAC, finalizers, defaulting, pruning) and plays
the controller's state machine. No real cluster was used: see docs/kubernetes.md."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import ofnotebook
from ofnotebook.backends.kube_api import CLUSTER_ROLE_RULES, FIELD_MANAGER, ROLE_RULES
from ofnotebook.backends.kubernetes import NO_CRD, KubernetesBackend
from ofnotebook.errors import ConfigError, DeployError, UnsupportedError
from tests.backends.conformance import BackendConformance
from tests.helpers import make_function, wait_for
from tests.k8s_double import KubeDouble
from tests.k8s_double.fixtures import FUNCTIONS, call, rbac_documents

FN = FUNCTIONS.format(ns="demo")


def backend(kubeconfig: str, **kwargs: Any) -> KubernetesBackend:
    return KubernetesBackend(kubeconfig=kubeconfig, build=False, **{"timeout": 10, **kwargs})


def sync_fn(reply: str = "hi") -> Any:
    return make_function(f"def hello(request):\n    return {reply!r}\n", name="hello")


def async_fn() -> Any:
    return make_function("def handle(ctx, data):\n    ctx.send('out', data)\n",
                         name="handle")


ASYNC = {"inputs": {"logs": "kafka://kafka.demo.svc:9092/logs?group=g"},
         "outputs": {"out": "kafka://kafka.demo.svc:9092/alerts"}}


class TestKubernetesConformance(BackendConformance):
    """The contract through the API server double: everything but HTTP, whose address is the
    cluster's (the double serves none); the Dapr verbs raise, since the Dapr sidecar is the
    cluster's, not the kernel's."""

    target = "kubernetes"
    reachable = False
    supports_dapr_verbs = False
    components = {"inputs": "kafka://kafka.demo.svc:9092/conf-in-{u}?group=g",
                  "outputs": "kafka://kafka.demo.svc:9092/conf-out-{u}",
                  "states": "redis://redis.demo.svc:6379"}

    @pytest.fixture
    def backend(self, cluster: KubeDouble, kubeconfig: str) -> Any:
        return KubernetesBackend(kubeconfig=kubeconfig, build=False, timeout=10)

    def logged_line(self, handle: Any) -> str:
        return f"ofnotebook runtime: serving {handle.name}"  # what the double's pods print


def test_publish_on_the_kubernetes_target_says_what_to_do_instead(cluster: KubeDouble,
                                                                  kubeconfig: str) -> None:
    handle = ofnotebook.deploy(async_fn(), "no-publish", target=backend(kubeconfig), **ASYNC)
    with pytest.raises(UnsupportedError) as info:
        handle.publish("logs", {"line": "x"})
    assert str(info.value) == (
        "The kubernetes target does not publish test events from the notebook; publish to "
        "the broker of input 'logs', or use the local target.")
    assert isinstance(info.value, ofnotebook.InvocationError)  # as handle.outputs always was
    handle.stop()


def gone(cluster: KubeDouble, name: str) -> bool:
    return ("demo", name) not in cluster.functions


def test_deploy_update_logs_and_delete_a_sync_function(cluster: KubeDouble,
                                                       kubeconfig: str) -> None:
    target = backend(kubeconfig)
    assert target.namespace == "demo"  # from the kubeconfig's context
    cluster.calls.clear()
    handle = ofnotebook.deploy(sync_fn(), "hello-k8s", target=target)
    assert len(cluster.calls) <= 10, cluster.calls  # the figure: API calls per deploy
    assert handle.status == "running"
    assert handle.url == "http://hello-k8s.demo.svc.cluster.local/"
    progress = [e.detail for e in handle.events if e.phase == "deploy" and
                e.state == "progress"]
    assert progress[-1] == "build Skipped · serving Running"
    assert "build Skipped · serving Starting" in progress
    applied = [r for r in cluster.requests if r["method"] == "PATCH"]
    assert applied and applied[0]["content_type"] == "application/apply-patch+yaml"
    assert applied[0]["args"] == {"fieldManager": FIELD_MANAGER, "force": "true",
                                  "fieldValidation": "Strict"}
    assert not [r for r in cluster.requests if r["method"] in ("PUT", "POST")]
    watches = [r for r in cluster.requests if r["args"].get("watch") == "true"]
    assert watches and all(w["args"]["allowWatchBookmarks"] == "true" for w in watches)
    stored = cluster.functions[("demo", "hello-k8s")]
    assert stored["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ofnotebook"
    assert stored["spec"]["workloadRuntime"] == "OCIContainer"  # the schema's default
    wait_for(lambda: "ofnotebook runtime: serving hello-k8s" in handle.logs())

    first_ref = stored["status"]["serving"]["resourceRef"]
    updated = ofnotebook.deploy(sync_fn("hello"), "hello-k8s", target=target)
    new = cluster.functions[("demo", "hello-k8s")]
    assert new["status"]["serving"]["resourceRef"] != first_ref
    assert updated.status == "running" and new["metadata"]["generation"] == 2
    assert handle.status == "stopped"  # the old handle: its Function now serves the new one

    updated.stop()
    assert gone(cluster, "hello-k8s") and updated.status == "stopped"
    assert not [p for p in cluster.pods if p[0] == "demo"]


def test_an_async_function_waits_for_its_pods_despite_the_early_running(
        cluster: KubeDouble, kubeconfig: str) -> None:
    handle = ofnotebook.deploy(async_fn(), "async-k8s", target=backend(kubeconfig), **ASYNC)
    ref = cluster.functions[("demo", "async-k8s")]["status"]["serving"]["resourceRef"]
    pods = [p for p in cluster.pods.values()
            if p["metadata"]["labels"]["openfunction.io/serving"] == ref]
    assert pods and pods[0]["status"]["conditions"][0]["status"] == "True"
    finished = [e.phase for e in handle.events if e.state == "finished"]
    assert finished.index("ready") < finished.index("deploy")  # pods checked inside the rollout
    assert handle.url == ""  # async functions have no address
    spec = cluster.functions[("demo", "async-k8s")]["spec"]["serving"]
    assert spec["workloadType"] == "Deployment" and spec["bindings"]["logs"]
    handle.stop()


def test_a_crashing_http_function_fails_and_what_it_created_is_deleted(
        cluster: KubeDouble, kubeconfig: str) -> None:
    with pytest.raises(DeployError, match="serving is Failed.*RuntimeError: crashed at start.*"
                                          "The Function it created was deleted"):
        ofnotebook.deploy(sync_fn(), "crash-http", target=backend(kubeconfig))
    wait_for(lambda: gone(cluster, "crash-http"))


def test_a_crashing_async_function_is_found_in_its_pods(cluster: KubeDouble,
                                                        kubeconfig: str) -> None:
    with pytest.raises(DeployError, match="CrashLoopBackOff.*kubectl logs"):
        ofnotebook.deploy(async_fn(), "crash-async", target=backend(kubeconfig), **ASYNC)
    wait_for(lambda: gone(cluster, "crash-async"))


def test_a_serving_timeout_is_terminal(cluster: KubeDouble, kubeconfig: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import ofnotebook.backends.kubernetes as k8s

    real = k8s.function_manifest

    def with_timeout(*args: Any, **kwargs: Any) -> dict[str, Any]:
        manifest = real(*args, **kwargs)
        manifest["spec"]["serving"]["timeout"] = "0.3s"
        return manifest

    monkeypatch.setattr(k8s, "function_manifest", with_timeout)
    with pytest.raises(DeployError, match="serving is Timeout"):
        ofnotebook.deploy(sync_fn(), "slow-http", target=backend(kubeconfig))
    wait_for(lambda: gone(cluster, "slow-http"))


def test_a_first_deploy_that_times_out_deletes_its_function(cluster: KubeDouble,
                                                            kubeconfig: str) -> None:
    with pytest.raises(DeployError, match="not ready within 1 s.*created was deleted"):
        ofnotebook.deploy(sync_fn(), "slow-first", target=backend(kubeconfig, timeout=1))
    wait_for(lambda: gone(cluster, "slow-first"))


def test_a_failed_build_deletes_the_new_function(cluster: KubeDouble, kubeconfig: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import ofnotebook.backends.kubernetes as k8s
    from ofnotebook.manifests import ClusterBuild, add_cluster_build

    real = k8s.function_manifest
    monkeypatch.setattr(k8s, "function_manifest", lambda *a, **k: add_cluster_build(
        real(*a, **k), ClusterBuild(bundle="127.0.0.1:5000/src/fail-bundle:abc")))
    with pytest.raises(DeployError, match="the build is Failed.*step-build-and-push.*deleted"):
        ofnotebook.deploy(sync_fn(), "bad-build", target=backend(kubeconfig))
    wait_for(lambda: gone(cluster, "bad-build"))


def test_a_failed_update_applies_the_previous_spec_again(cluster: KubeDouble,
                                                         kubeconfig: str) -> None:
    target = backend(kubeconfig)
    first = ofnotebook.deploy(sync_fn(), "rollback", target=target)
    good = cluster.functions[("demo", "rollback")]["spec"]
    target.image_for = lambda package, recorder: "registry.example/rollback-crash@sha256:" + \
        "c" * 64  # type: ignore[method-assign]
    with pytest.raises(DeployError, match="serving is Failed.*previous spec was applied again"):
        ofnotebook.deploy(sync_fn("v2"), "rollback", target=target)
    assert cluster.functions[("demo", "rollback")]["spec"] == good
    wait_for(lambda: cluster.functions[("demo", "rollback")]["status"]["serving"].get(
        "state") == "Running")
    assert first.status == "running"


def test_the_same_code_from_a_new_kernel_is_recognised_as_already_serving(
        cluster: KubeDouble, kubeconfig: str) -> None:
    ofnotebook.deploy(sync_fn(), "same", target=backend(kubeconfig))
    before = cluster.functions[("demo", "same")]
    events, rv = len(cluster.history), cluster.rv
    again = backend(kubeconfig)  # a kernel restart: nothing remembered
    cluster.calls.clear()
    cluster.requests.clear()
    started = time.monotonic()
    handle = ofnotebook.deploy(sync_fn(), "same", target=again)
    assert time.monotonic() - started < 1.0
    assert handle.status == "running" and handle.url == before["status"]["addresses"][0]["value"]
    after = cluster.functions[("demo", "same")]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert (len(cluster.history), cluster.rv) == (events, rv)  # no write, no event
    calls = [c for c in cluster.calls if "/pods" not in c[1]]  # (the log followers)
    assert [c[0] for c in calls] == ["GET", "GET", "PATCH", "GET"], calls  # CRD, Function,
    assert not [r for r in cluster.requests if r["args"].get("watch")]  # apply, status


def test_the_same_async_code_is_recognised_too(cluster: KubeDouble, kubeconfig: str) -> None:
    ofnotebook.deploy(async_fn(), "same-async", target=backend(kubeconfig), **ASYNC)
    rv = cluster.rv
    handle = ofnotebook.deploy(async_fn(), "same-async", target=backend(kubeconfig), **ASYNC)
    assert handle.status == "running" and cluster.rv == rv


def test_metadata_set_by_others_survives_an_update(cluster: KubeDouble, kubeconfig: str) -> None:
    from ofnotebook.manifests import ClusterOptions

    options = ClusterOptions(namespace="demo", labels={"team": "data", "tier": "beta"})
    ofnotebook.deploy(sync_fn(), "shared", target=backend(kubeconfig, options=options))
    owner = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "name": "fns",
             "uid": "6f1c0a4e-0000-4000-8000-000000000001"}
    patch = {"metadata": {"annotations": {"argocd.argoproj.io/tracking-id": "fns:core/fn"},
                          "labels": {"argocd.argoproj.io/instance": "fns"},
                          "finalizers": ["resources-finalizer.argocd.argoproj.io"],
                          "ownerReferences": [owner]}}
    got = call(cluster, "PATCH", f"{FN}/shared", patch,
               content_type="application/merge-patch+json", fieldManager="argocd")
    assert got.status_code == 200, got.text
    # the next deploy drops the "tier" label it set before, and changes the code
    options = ClusterOptions(namespace="demo", labels={"team": "data"})
    handle = ofnotebook.deploy(sync_fn("v2"), "shared", target=backend(kubeconfig,
                                                                        options=options))
    meta = cluster.functions[("demo", "shared")]["metadata"]
    assert meta["annotations"] == patch["metadata"]["annotations"]
    assert meta["labels"] == {"app.kubernetes.io/managed-by": "ofnotebook", "team": "data",
                              "argocd.argoproj.io/instance": "fns"}
    assert meta["finalizers"] == ["resources-finalizer.argocd.argoproj.io"]
    assert meta["ownerReferences"] == [owner]
    assert {e["manager"] for e in meta["managedFields"]} >= {"ofnotebook", "argocd"}
    call(cluster, "PATCH", f"{FN}/shared", {"metadata": {"finalizers": None}},
         content_type="application/merge-patch+json", fieldManager="argocd")
    handle.stop()


def deploy_in_thread(kubeconfig: str, name: str, **kwargs: Any) -> tuple[threading.Thread,
                                                                          dict[str, Any]]:
    result: dict[str, Any] = {}

    def deploy() -> None:
        try:
            result["handle"] = ofnotebook.deploy(sync_fn(), name,
                                                 target=backend(kubeconfig, **kwargs))
        except Exception as exc:  # reported by the test
            result["error"] = exc
    thread = threading.Thread(target=deploy)
    thread.start()
    return thread, result


def relists(cluster: KubeDouble) -> list[dict[str, Any]]:
    return [r for r in cluster.requests if r["method"] == "GET" and r["path"] == FN
            and not r["args"].get("watch")]


def test_an_expired_watch_is_read_again_and_resumed(cluster: KubeDouble,
                                                    kubeconfig: str) -> None:
    """The watch cache moves on (other Functions change), then the API server restarts while
    the deploy watches: the watch is cut, its resourceVersion has expired (410), the Function
    is read again with a LIST and watched from there."""
    cluster.start_delay, cluster.watch_cache_size, cluster.bookmark_interval = 2.0, 20, 60
    thread, result = deploy_in_thread(kubeconfig, "expiring", timeout=15)
    wait_for(lambda: any(r["args"].get("watch") for r in cluster.requests))
    cluster.churn(50)  # the window moves past the watch's resourceVersion
    cluster.restart(down=0.3).join()
    thread.join(20)
    assert "error" not in result, result.get("error")
    assert result["handle"].status == "running"
    assert relists(cluster), "the expired watch was not read again with a LIST"


def test_bookmarks_keep_a_quiet_watch_from_expiring(cluster: KubeDouble,
                                                    kubeconfig: str) -> None:
    """Other Functions change all the time, the watched one not at all for a while: the
    bookmarks' resourceVersions keep each new watch window inside the watch cache."""
    cluster.start_delay, cluster.watch_cache_size, cluster.bookmark_interval = 3.0, 100, 0.2
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            cluster.churn(10)
            time.sleep(0.1)
    churner = threading.Thread(target=churn)
    thread, result = deploy_in_thread(kubeconfig, "quiet", timeout=15)
    churner.start()
    thread.join(20)
    stop.set()
    churner.join()
    assert "error" not in result, result.get("error")
    assert cluster.compacted > int(next(r for r in cluster.requests if r["args"].get("watch"))
                                   ["args"]["resourceVersion"])  # it would have expired
    assert not relists(cluster)  # and never did


def test_a_restart_during_a_deploy_is_waited_out(cluster: KubeDouble, kubeconfig: str) -> None:
    target = backend(kubeconfig)
    target.crd()
    cluster.restart(down=1.0)  # down when the deploy starts: refused, then back
    handle = ofnotebook.deploy(sync_fn(), "restarted", target=target)
    assert handle.status == "running"


def test_an_api_server_that_stays_down_is_named(cluster: KubeDouble, kubeconfig: str) -> None:
    target = backend(kubeconfig, timeout=1.5)
    target.crd()  # it answered once
    back = cluster.restart(down=3.0)
    with pytest.raises(DeployError, match=r"stopped answering \(connection refused\)"):
        ofnotebook.deploy(sync_fn(), "down", target=target)
    back.join()


def test_the_exact_role_of_the_docs_deploys_updates_follows_logs_and_stops(
        cluster: KubeDouble, kubeconfig: str) -> None:
    docs = rbac_documents(cluster.user, "demo", cluster_role=False)
    role = next(d for d in docs if d["kind"] == "Role")
    assert role["rules"] == ROLE_RULES  # the docs, the hints and the code say the same
    cluster_role = next(d for d in rbac_documents("u", "n") if d["kind"] == "ClusterRole")
    assert cluster_role["rules"] == CLUSTER_ROLE_RULES
    cluster.grant(*docs)
    target = backend(kubeconfig)
    handle = ofnotebook.deploy(sync_fn(), "rbac-ok", target=target)
    notes = [e.detail for e in handle.events if e.detail == NO_CRD]
    assert len(notes) == 1 and "ClusterRole" in notes[0]
    wait_for(lambda: "ofnotebook runtime: serving rbac-ok" in handle.logs())
    updated = ofnotebook.deploy(sync_fn("v2"), "rbac-ok", target=target)
    assert NO_CRD not in [e.detail for e in updated.events]  # said once
    handle = ofnotebook.deploy(async_fn(), "rbac-async", target=target, **ASYNC)
    handle.stop()
    updated.stop()
    assert gone(cluster, "rbac-ok") and gone(cluster, "rbac-async")
    assert not [c for c in cluster.calls if "customresourcedefinitions" in c[1]][1:]


def test_with_the_optional_cluster_role_the_crd_is_read(cluster: KubeDouble,
                                                        kubeconfig: str) -> None:
    cluster.grant(*rbac_documents(cluster.user, "demo"))
    handle = ofnotebook.deploy(sync_fn(), "rbac-crd", target=backend(kubeconfig))
    assert NO_CRD not in [e.detail for e in handle.events]


@pytest.mark.parametrize("resource,verb,runtime", [
    ("functions", "get", "sync"), ("functions", "create", "sync"),
    ("functions", "patch", "sync"), ("functions", "watch", "sync"),
    ("pods", "list", "async"),
])
def test_a_missing_verb_is_named(cluster: KubeDouble, kubeconfig: str, resource: str,
                                 verb: str, runtime: str) -> None:
    docs = rbac_documents(cluster.user, "demo", cluster_role=False)
    for rule in next(d for d in docs if d["kind"] == "Role")["rules"]:
        if rule["resources"] == [resource]:
            rule["verbs"].remove(verb)
    cluster.grant(*docs)
    kind = " in API group core.openfunction.io" if resource == "functions" else ""
    with pytest.raises(DeployError, match=f"may not {verb} {resource}{kind};.*"
                                          f"docs/kubernetes-rbac.yaml.*ClusterRole"):
        if runtime == "async":
            ofnotebook.deploy(async_fn(), "rbac-miss", target=backend(kubeconfig), **ASYNC)
        else:
            ofnotebook.deploy(sync_fn(), "rbac-miss", target=backend(kubeconfig))
    if verb in ("watch", "list"):  # it had created the Function: that went again
        wait_for(lambda: gone(cluster, "rbac-miss"))


def test_stop_without_delete_names_the_verb(cluster: KubeDouble, kubeconfig: str) -> None:
    handle = ofnotebook.deploy(sync_fn(), "no-delete", target=backend(kubeconfig))
    docs = rbac_documents(cluster.user, "demo", cluster_role=False)
    next(d for d in docs if d["kind"] == "Role")["rules"][0]["verbs"].remove("delete")
    cluster.grant(*docs)
    with pytest.raises(DeployError, match="may not delete functions"):
        handle.stop()
    cluster.rbac = None
    handle.backend.stop("no-delete")


def test_without_the_crd_the_server_validates(cluster: KubeDouble, kubeconfig: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import ofnotebook.backends.kubernetes as k8s

    cluster.grant(*rbac_documents(cluster.user, "demo", cluster_role=False))
    real = k8s.function_manifest

    def typo(*args: Any, **kwargs: Any) -> dict[str, Any]:
        manifest = real(*args, **kwargs)
        manifest["spec"]["serving"]["workloadTypo"] = "Deployment"
        return manifest

    monkeypatch.setattr(k8s, "function_manifest", typo)
    with pytest.raises(DeployError, match='rejected the manifest.*unknown field '
                                          '"spec.serving.workloadTypo"'):
        ofnotebook.deploy(sync_fn(), "typo", target=backend(kubeconfig))

    def invalid(*args: Any, **kwargs: Any) -> dict[str, Any]:
        manifest = real(*args, **kwargs)
        manifest["spec"]["serving"]["triggers"]["http"]["port"] = "eighty"
        return manifest

    monkeypatch.setattr(k8s, "function_manifest", invalid)
    with pytest.raises(DeployError, match="rejected the manifest.*is invalid.*port"):
        ofnotebook.deploy(sync_fn(), "invalid", target=backend(kubeconfig))
    assert gone(cluster, "typo") and gone(cluster, "invalid")


def test_stopping_waits_for_the_finalizers_and_names_them(cluster: KubeDouble,
                                                          kubeconfig: str) -> None:
    target = backend(kubeconfig)
    handle = ofnotebook.deploy(sync_fn(), "held", target=target)
    target.timeout = 1  # for the stop
    call(cluster, "PATCH", f"{FN}/held", {"metadata": {"finalizers": ["example.com/hold"]}},
         content_type="application/merge-patch+json", fieldManager="guard")
    with pytest.raises(DeployError, match="still being deleted after 1 s; finalizers left: "
                                          "example.com/hold.*whoever set it"):
        handle.stop()
    assert handle.status == "stopping"
    meta = cluster.functions[("demo", "held")]["metadata"]
    assert meta["deletionTimestamp"] and meta["finalizers"] == ["example.com/hold"]
    call(cluster, "PATCH", f"{FN}/held", {"metadata": {"finalizers": None}},
         content_type="application/merge-patch+json", fieldManager="guard")
    wait_for(lambda: gone(cluster, "held"))
    assert handle.status == "stopped"


def test_a_deploy_waits_for_the_previous_function_to_be_deleted(cluster: KubeDouble,
                                                               kubeconfig: str) -> None:
    target = backend(kubeconfig)
    ofnotebook.deploy(sync_fn(), "again", target=target)
    old_uid = cluster.functions[("demo", "again")]["metadata"]["uid"]
    call(cluster, "PATCH", f"{FN}/again", {"metadata": {"finalizers": ["example.com/hold"]}},
         content_type="application/merge-patch+json", fieldManager="guard")
    assert call(cluster, "DELETE", f"{FN}/again", {"propagationPolicy": "Foreground"}).ok
    release = threading.Timer(0.8, lambda: call(
        cluster, "PATCH", f"{FN}/again", {"metadata": {"finalizers": None}},
        content_type="application/merge-patch+json", fieldManager="guard"))
    release.start()
    handle = ofnotebook.deploy(sync_fn("v2"), "again", target=backend(kubeconfig))
    release.join()
    assert handle.status == "running"
    assert cluster.functions[("demo", "again")]["metadata"]["uid"] != old_uid
    assert any("waiting for the previous Function to be deleted" in e.detail
               for e in handle.events)


def test_bad_credentials_are_a_clear_error(cluster: KubeDouble, tmp_path: Path) -> None:
    config = cluster.kubeconfig()
    config["users"][0]["user"]["token"] = "wrong"
    path = tmp_path / "bad-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(DeployError, match="did not accept the credentials"):
        ofnotebook.deploy(sync_fn(), "creds", target=backend(str(path)))


def test_an_invalid_name_is_rejected_before_any_call(cluster: KubeDouble,
                                                     kubeconfig: str) -> None:
    target = backend(kubeconfig)
    cluster.calls.clear()
    with pytest.raises(ConfigError, match="not valid for Kubernetes"):
        ofnotebook.deploy(sync_fn(), "Bad_Name", target=target)
    long_ns = backend(kubeconfig, namespace="a-rather-long-namespace-name-for-dapr")
    with pytest.raises(ConfigError, match="too long for Dapr"):
        ofnotebook.deploy(async_fn(), "also-a-long-function-name", target=long_ns,
                          inputs={"in": "kafka://k:9092/t"})
    assert cluster.calls == []


def test_the_yaml_targets_output_applies_cleanly(cluster: KubeDouble, tmp_path: Path) -> None:
    from ofnotebook.backends.gitops import YamlBackend

    ofnotebook.deploy(async_fn(), "gitops-apply", target=YamlBackend(tmp_path), **ASYNC)
    manifest = yaml.safe_load((tmp_path / "gitops-apply" / "function.yaml").read_text())
    got = call(cluster, "PATCH", f"{FN}/gitops-apply", manifest,
               content_type="application/apply-patch+yaml", fieldManager="kubectl",
               fieldValidation="Warn")
    assert got.status_code == 201 and "Warning" not in got.headers  # nothing pruned
    # what was written is what the API server keeps, plus the schema's defaults
    assert got.json()["spec"] == {**manifest["spec"], "workloadRuntime": "OCIContainer"}


def test_without_a_registry_the_kubernetes_target_says_what_to_set(cluster: KubeDouble,
                                                                   kubeconfig: str) -> None:
    from ofnotebook.errors import BuildError

    target = KubernetesBackend(kubeconfig=kubeconfig, registry="", timeout=5)
    cluster.calls.clear()
    with pytest.raises(BuildError, match="OFNOTEBOOK_REGISTRY"):
        ofnotebook.deploy(sync_fn(), "no-registry", target=target)
    assert cluster.calls == []


def test_a_cluster_without_openfunction_is_named(cluster: KubeDouble, kubeconfig: str) -> None:
    cluster.crd_installed = False
    with pytest.raises(DeployError, match="OpenFunction is not installed"):
        ofnotebook.deploy(sync_fn(), "no-crd", target=backend(kubeconfig))
    assert not [c for c in cluster.calls if c[0] == "PATCH"]


def test_a_deleted_crd_is_named_even_without_reading_it(cluster: KubeDouble,
                                                        kubeconfig: str) -> None:
    ofnotebook.deploy(sync_fn(), "before-uninstall", target=backend(kubeconfig)).stop()
    crd_path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/" \
               "functions.core.openfunction.io"
    assert call(cluster, "DELETE", crd_path).ok
    got = call(cluster, "GET", FN)
    assert (got.status_code, got.text, got.headers["Content-Type"]) == \
        (404, "404 page not found\n", "text/plain; charset=utf-8")
    cluster.grant(*rbac_documents(cluster.user, "demo", cluster_role=False))
    with pytest.raises(DeployError, match="OpenFunction is not installed.*404 page not found"):
        ofnotebook.deploy(sync_fn(), "after-uninstall", target=backend(kubeconfig))


def test_an_unreachable_api_server_is_named(tmp_path: Path) -> None:
    from tests.helpers import free_port

    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "gone", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}]}))
    target = KubernetesBackend(kubeconfig=str(path), build=False, timeout=1)
    target.custom.api_client.configuration.retries = 0
    with pytest.raises(DeployError, match="could not be reached; check the kubeconfig's "
                                          r"server address \(.*connection refused; retried"):
        ofnotebook.deploy(sync_fn(), "unreachable", target=target)


def test_a_tls_failure_is_named_at_once_not_retried(cluster: KubeDouble,
                                                    tmp_path: Path) -> None:
    """HTTPS to a server that does not speak it (or a CA the kubeconfig does not name):
    retrying cannot help, so the deploy says TLS at once instead of waiting its timeout."""
    config = cluster.kubeconfig()
    config["clusters"][0]["cluster"]["server"] = cluster.url.replace("http://", "https://")
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    target = KubernetesBackend(kubeconfig=str(path), build=False, timeout=20)
    started = time.monotonic()
    with pytest.raises(DeployError, match=r"TLS with the API server at https://127\.0\.0\.1:"
                                          r"\d+ failed .*certificate-authority"):
        ofnotebook.deploy(sync_fn(), "tls", target=target)
    assert time.monotonic() - started < 10  # not the 20 s timeout
