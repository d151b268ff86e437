"""The API server double behaves as kube-apiserver v1.36 was measured to with the OpenFunction
v1.2.0 Function CRD (issue 9 part B, point 8): raw HTTP against tests/k8s_double/, no backend.
What these pin down is what the kubernetes target's tests rely on."""

from __future__ import annotations

import json
from typing import Any

import requests

from tests.helpers import wait_for
from tests.k8s_double import KubeDouble
from tests.k8s_double.fixtures import FUNCTIONS, call

FN = FUNCTIONS.format(ns="demo")
MERGE, APPLY = "application/merge-patch+json", "application/apply-patch+yaml"


def function(name: str = "fn", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "core.openfunction.io/v1beta2", "kind": "Function",
            "metadata": {"name": name, "labels": {"a": "1"}},
            "spec": {"image": "registry.example/fn@sha256:" + "a" * 64,
                     "serving": {"template": {"containers": [{"name": "function"}]},
                                 "triggers": {"http": {"port": 8080}}}, **spec}}


def watch_lines(double: KubeDouble, since: str, **params: Any) -> list[dict[str, Any]]:
    got = requests.get(double.url + FN, params={"watch": "true", "resourceVersion": since,
                                                "timeoutSeconds": "1", **params},
                       headers={"Authorization": f"Bearer {double.token}"}, timeout=5)
    return [json.loads(line) for line in got.text.splitlines() if line]


def test_create_defaults_from_the_schema_and_answers_without_status(
        cluster: KubeDouble) -> None:
    got = call(cluster, "POST", FN, function())
    assert got.status_code == 201
    body = got.json()
    assert "status" not in body and body["metadata"]["generation"] == 1
    assert body["spec"]["workloadRuntime"] == "OCIContainer"
    assert body["metadata"]["managedFields"][0]["operation"] == "Update"
    assert call(cluster, "POST", FN, function()).status_code == 409


def test_unknown_fields_are_pruned_with_a_warning_or_refused_when_strict(
        cluster: KubeDouble) -> None:
    got = call(cluster, "POST", FN, function(foo=1))
    assert got.status_code == 201 and "foo" not in got.json()["spec"]
    assert got.headers["Warning"] == '299 - "unknown field \\"spec.foo\\""'
    strict = call(cluster, "POST", FN, function("strict", foo=1), fieldValidation="Strict")
    assert strict.status_code == 400
    assert 'strict decoding error: unknown field "spec.foo"' in strict.json()["message"]
    invalid = function("invalid")
    invalid["spec"]["serving"]["triggers"]["http"]["port"] = "eighty"
    got = call(cluster, "POST", FN, invalid)
    assert got.status_code == 422 and "is invalid" in got.json()["message"]


def test_status_is_a_subresource_and_generation_follows_the_spec(cluster: KubeDouble) -> None:
    cluster.controller.reconcile = lambda *args: None  # type: ignore[method-assign]
    made = call(cluster, "POST", FN, function()).json()
    made["status"] = {"serving": {"state": "Running"}}
    made["spec"]["version"] = "ignored"
    status = call(cluster, "PUT", f"{FN}/fn/status", made).json()
    assert status["status"] == {"serving": {"state": "Running"}}
    assert "version" not in status["spec"] and status["metadata"]["generation"] == 1
    # a spec update leaves status alone and moves the generation
    status["spec"]["version"] = "v2"
    status["status"] = {"serving": {"state": "Failed"}}
    updated = call(cluster, "PUT", f"{FN}/fn", status).json()
    assert updated["status"] == {"serving": {"state": "Running"}}
    assert updated["metadata"]["generation"] == 2
    # metadata only: a new resourceVersion, the same generation
    labelled = call(cluster, "PATCH", f"{FN}/fn", {"metadata": {"labels": {"b": "2"}}},
                    content_type=MERGE).json()
    assert labelled["metadata"]["generation"] == 2
    assert labelled["metadata"]["resourceVersion"] != updated["metadata"]["resourceVersion"]
    # a write that changes nothing: same resourceVersion, no event
    events = len(cluster.history)
    same = call(cluster, "PUT", f"{FN}/fn", labelled).json()
    assert same["metadata"]["resourceVersion"] == labelled["metadata"]["resourceVersion"]
    assert len(cluster.history) == events
    stale = dict(labelled, metadata={**labelled["metadata"], "resourceVersion": "1"})
    stale["spec"] = {**labelled["spec"], "version": "v3"}
    assert call(cluster, "PUT", f"{FN}/fn", stale).status_code == 409


def test_server_side_apply_keeps_other_managers_fields(cluster: KubeDouble) -> None:
    cluster.controller.reconcile = lambda *args: None  # type: ignore[method-assign]
    mine = function()
    mine["metadata"]["labels"] = {"a": "1", "b": "2"}
    first = call(cluster, "PATCH", f"{FN}/fn", mine, content_type=APPLY, fieldManager="me")
    assert first.status_code == 201
    theirs = {"apiVersion": mine["apiVersion"], "kind": "Function",
              "metadata": {"name": "fn", "labels": {"c": "3"},
                           "annotations": {"tracking": "x"}}}
    assert call(cluster, "PATCH", f"{FN}/fn", theirs, content_type=APPLY,
                fieldManager="gitops").ok
    mine["metadata"]["labels"] = {"a": "1"}  # "b" no longer applied
    mine["spec"]["version"] = "v2"
    got = call(cluster, "PATCH", f"{FN}/fn", mine, content_type=APPLY, fieldManager="me",
               force="true").json()
    assert got["metadata"]["labels"] == {"a": "1", "c": "3"}
    assert got["metadata"]["annotations"] == {"tracking": "x"}
    managed = {e["manager"]: e for e in got["metadata"]["managedFields"]}
    assert managed["me"]["operation"] == "Apply"
    assert managed["me"]["fieldsV1"]["f:metadata"]["f:labels"] == {"f:a": {}}
    assert "f:image" in managed["me"]["fieldsV1"]["f:spec"]
    assert "f:workloadRuntime" not in managed["me"]["fieldsV1"]["f:spec"]  # a default
    # the same apply again changes nothing
    events = len(cluster.history)
    again = call(cluster, "PATCH", f"{FN}/fn", mine, content_type=APPLY, fieldManager="me",
                 force="true").json()
    assert again["metadata"]["resourceVersion"] == got["metadata"]["resourceVersion"]
    assert len(cluster.history) == events
    # a field another manager owns with another value: a conflict unless forced
    theirs["metadata"]["labels"] = {"a": "other"}
    conflict = call(cluster, "PATCH", f"{FN}/fn", theirs, content_type=APPLY,
                    fieldManager="gitops")
    assert conflict.status_code == 409 and "metadata.labels.a (me)" in conflict.json()["message"]
    assert call(cluster, "PATCH", f"{FN}/fn", {"x": 1}, content_type=APPLY).status_code == 400


def test_old_resource_versions_expire_and_bookmarks_carry_the_current_one(
        cluster: KubeDouble) -> None:
    cluster.watch_cache_size = 10
    cluster.controller.reconcile = lambda *args: None  # type: ignore[method-assign]
    made = call(cluster, "POST", FN, function()).json()
    since = made["metadata"]["resourceVersion"]
    cluster.churn(20)
    lines = watch_lines(cluster, since)
    assert len(lines) == 1 and lines[0]["type"] == "ERROR"
    assert lines[0]["object"]["message"].startswith(f"too old resource version: {since} (")
    assert {k: v for k, v in lines[0]["object"].items() if k != "message"} == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": "Expired", "code": 410}
    marks = watch_lines(cluster, str(cluster.rv), allowWatchBookmarks="true")
    assert marks[-1]["type"] == "BOOKMARK"
    assert marks[-1]["object"]["metadata"]["resourceVersion"] == str(cluster.rv)
    assert not [m for m in watch_lines(cluster, str(cluster.rv)) if m["type"] == "BOOKMARK"]
    # a restart: the watch cache starts again, every older resourceVersion expires
    current = str(cluster.rv - 1)
    cluster.restart(down=0.2).join()
    assert watch_lines(cluster, current)[0]["object"]["code"] == 410


def test_a_restart_refuses_connections_for_a_while(cluster: KubeDouble) -> None:
    back = cluster.restart(down=0.5)
    try:
        requests.get(cluster.url + FN, timeout=1)
        raise AssertionError("answered while down")
    except requests.ConnectionError:
        pass
    back.join()
    assert call(cluster, "GET", FN).ok


def test_foreground_deletion_keeps_the_object_until_its_finalizers_go(
        cluster: KubeDouble) -> None:
    call(cluster, "POST", FN, function())
    call(cluster, "PATCH", f"{FN}/fn", {"metadata": {"finalizers": ["example.com/hold"]}},
         content_type=MERGE)
    going = call(cluster, "DELETE", f"{FN}/fn", {"propagationPolicy": "Foreground"}).json()
    assert going["metadata"]["deletionTimestamp"]
    assert going["metadata"]["finalizers"] == ["example.com/hold", "foregroundDeletion"]
    assert going["metadata"]["generation"] == 2
    refused = call(cluster, "POST", FN, function())
    assert refused.status_code == 409 and "object is being deleted" in refused.json()["message"]
    added = call(cluster, "PATCH", f"{FN}/fn", {"metadata": {"finalizers": [
        "example.com/hold", "foregroundDeletion", "new"]}}, content_type=MERGE)
    assert added.status_code == 422 and "no new finalizers" in added.json()["message"]
    import time

    time.sleep(0.5)  # the garbage collector has done its part
    assert cluster.functions[("demo", "fn")]["metadata"]["finalizers"] == ["example.com/hold"]
    call(cluster, "PATCH", f"{FN}/fn", {"metadata": {"finalizers": None}}, content_type=MERGE)
    assert call(cluster, "GET", f"{FN}/fn").status_code == 404


def test_rbac_is_evaluated_per_request(cluster: KubeDouble) -> None:
    cluster.grant(
        {"kind": "Role", "metadata": {"name": "r", "namespace": "demo"},
         "rules": [{"apiGroups": ["core.openfunction.io"], "resources": ["functions"],
                    "verbs": ["get", "patch"]},
                   {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]},
        {"kind": "RoleBinding", "metadata": {"name": "r", "namespace": "demo"},
         "roleRef": {"kind": "Role", "name": "r"},
         "subjects": [{"kind": "User", "name": cluster.user}]})
    listed = call(cluster, "GET", FN)
    assert listed.status_code == 403 and listed.json()["message"] == (
        f'functions.core.openfunction.io is forbidden: User "{cluster.user}" cannot list '
        f'resource "functions" in API group "core.openfunction.io" in the namespace "demo"')
    created = call(cluster, "PATCH", f"{FN}/fn", function(), content_type=APPLY,
                   fieldManager="me")  # an apply that creates needs create
    assert created.status_code == 403 and "cannot create resource" in created.json()["message"]
    assert call(cluster, "GET", "/api/v1/namespaces/demo/pods").ok
    log = call(cluster, "GET", "/api/v1/namespaces/demo/pods/p/log")
    assert log.status_code == 403 and 'cannot get resource "pods/log"' in log.json()["message"]
    assert call(cluster, "GET", "/api/v1/namespaces/other/pods").status_code == 403
    crd = call(cluster, "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                               "functions.core.openfunction.io")
    assert "at the cluster scope" in crd.json()["message"]
    assert call(cluster, "GET", FN, token="wrong").status_code == 401


def test_the_controller_writes_status_through_the_subresource(cluster: KubeDouble) -> None:
    call(cluster, "POST", FN, function())
    wait_for(lambda: cluster.functions[("demo", "fn")].get("status", {}).get(
        "serving", {}).get("state") == "Running", 5, "the controller never set Running")
    managed = cluster.functions[("demo", "fn")]["metadata"]["managedFields"]
    status = [e for e in managed if e.get("subresource") == "status"]
    assert status and status[0]["manager"] == "openfunction-manager"
    assert "f:serving" in status[0]["fieldsV1"]["f:status"]
    assert [c for c in cluster.calls if "status" in c[1]] == []  # not the user's calls


def test_dapr_components_are_served_from_their_crd_and_collected_with_their_owners(
        cluster: KubeDouble) -> None:
    """As kube-apiserver serves ``components.dapr.io``: strict apply refuses what the schema
    would prune, ownerReferences merge by uid, and the garbage collector drops a deleted
    Function's reference, deleting the Component with its last owner."""
    from tests.helpers import wait_for
    from tests.k8s_double.fixtures import COMPONENTS

    path = COMPONENTS.format(ns="demo") + "/shared"
    owners = []
    for name in ("a", "b"):
        created = call(cluster, "POST", FN, function(name)).json()["metadata"]
        owners.append({"apiVersion": "core.openfunction.io/v1beta2", "kind": "Function",
                       "name": name, "uid": created["uid"]})
    body = {"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "shared", "ownerReferences": owners},
            "spec": {"type": "bindings.kafka", "version": "v1", "metadata": []},
            "scopes": ["a-demo", "b-demo"]}
    strict = call(cluster, "PATCH", path, {**body, "spec": {**body["spec"], "typo": 1}},
                  content_type=APPLY, fieldManager="t", fieldValidation="Strict")
    assert strict.status_code == 400 and 'unknown field "spec.typo"' in strict.json()["message"]
    got = call(cluster, "PATCH", path, body, content_type=APPLY, fieldManager="t",
               fieldValidation="Strict")
    assert got.status_code == 201 and got.json()["metadata"]["ownerReferences"] == owners
    same = call(cluster, "PATCH", path, body, content_type=APPLY, fieldManager="t")
    assert same.json()["metadata"]["resourceVersion"] == got.json()["metadata"][
        "resourceVersion"]  # a no-op apply
    assert call(cluster, "DELETE", f"{FN}/a").ok  # background: collected at once
    assert [o["name"] for o in call(cluster, "GET", path).json()["metadata"][
        "ownerReferences"]] == ["b"]
    assert call(cluster, "DELETE", f"{FN}/b", {"propagationPolicy": "Foreground"}).ok
    wait_for(lambda: call(cluster, "GET", path).status_code == 404)
    cluster.components.installed = False  # a cluster without Dapr serves no such group
    gone = call(cluster, "GET", path)
    assert (gone.status_code, gone.text) == (404, "404 page not found\n")
