"""The API server double's store, HTTP routes and controller thread (described in __init__)."""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
import uuid
from typing import Any, Iterator

from flask import Flask, Response, request
from werkzeug.serving import make_server

from .schema import _prune, _status, _to_json_schema

FN_PATH = "/apis/core.openfunction.io/v1beta2/namespaces/<ns>/functions"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/functions.core.openfunction.io"


class KubeDouble:
    def __init__(self, crd: dict[str, Any], token: str = "test-token") -> None:
        import jsonschema

        self.crd, self.token = crd, token
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta2")
        self.schema = version["schema"]["openAPIV3Schema"]
        self.validator = jsonschema.Draft4Validator(_to_json_schema(self.schema))
        self.functions: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.logs: dict[str, list[str]] = {}
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []  # rv, ns, type, object
        self.forbid: set[tuple[str, str]] = set()
        self.crd_installed = True
        self.calls: list[tuple[str, str]] = []
        self.rv = 1
        self.cond = threading.Condition()
        self.app = self._routes()
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> KubeDouble:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self.cond:
            self.cond.notify_all()
        self.server.shutdown()

    def kubeconfig(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Config", "current-context": "double",
                "clusters": [{"name": "double", "cluster": {"server": self.url}}],
                "users": [{"name": "tester", "user": {"token": self.token}}],
                "contexts": [{"name": "double", "context": {"cluster": "double",
                                                            "user": "tester",
                                                            "namespace": "demo"}}]}

    # -- state -------------------------------------------------------------------------------

    def _emit(self, ns: str, kind: str, obj: dict[str, Any]) -> None:
        """Under ``cond``: bump the resourceVersion and record a watch event."""
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.events.append((self.rv, ns, kind, copy.deepcopy(obj)))
        self.cond.notify_all()

    def _set_status(self, ns: str, name: str, serving_ref: str, **status: Any) -> bool:
        with self.cond:
            fn = self.functions.get((ns, name))
            if fn is None or fn["metadata"].get("deletionTimestamp"):
                return False
            if fn["status"].get("serving", {}).get("resourceRef") not in (None, serving_ref):
                return False  # superseded by a newer serving
            fn["status"].update(copy.deepcopy(status))
            self._emit(ns, "MODIFIED", fn)
            return True

    def _controller(self, ns: str, name: str, fn: dict[str, Any]) -> None:
        """OpenFunction's reconcile of one spec version, in the documented order."""
        spec = fn["spec"]
        serving_ref = "serving-" + hashlib.sha256(
            json.dumps(spec, sort_keys=True).encode()).hexdigest()[:5]
        is_async = "dapr" in spec.get("serving", {}).get("triggers", {})
        image = spec.get("image", "")
        serving = {"state": "Created", "resourceRef": serving_ref}
        previous = fn["status"].get("serving", {}).get("lastSuccessfulResourceRef")
        if previous:
            serving["lastSuccessfulResourceRef"] = previous
        if not self._set_status(ns, name, serving_ref, build={"state": "Skipped"},
                                serving=serving):
            return
        time.sleep(0.05)
        self._set_status(ns, name, serving_ref, serving={**serving, "state": "Starting"})
        pod = f"{serving_ref}-deployment-{uuid.uuid4().hex[:5]}"
        crash, slow = "crash" in image, "slow" in image
        with self.cond:
            self.pods[(ns, pod)] = {
                "metadata": {"name": pod, "namespace": ns,
                             "labels": {"openfunction.io/serving": serving_ref}},
                "status": {"phase": "Pending", "conditions": [{"type": "Ready",
                                                               "status": "False"}]}}
            self.logs[pod] = [f"ofnotebook runtime: serving {name}"]
        if is_async and not crash and not slow:
            # the quirk: Running at once, whatever the pods are doing
            self._set_status(ns, name, serving_ref,
                             serving={**serving, "state": "Running",
                                      "lastSuccessfulResourceRef": serving_ref})
        time.sleep(0.2)
        with self.cond:
            p = self.pods.get((ns, pod))
            if p is None:
                return
            if crash:
                p["status"] = {"phase": "Running", "conditions": [{"type": "Ready",
                                                                   "status": "False"}],
                               "containerStatuses": [{"name": "function", "ready": False,
                                                      "image": image, "imageID": "",
                                                      "restartCount": 3,
                                                      "state": {"waiting": {
                                                          "reason": "CrashLoopBackOff"}}}]}
                self.logs[pod].append("Traceback (most recent call last):")
                self.logs[pod].append("RuntimeError: crashed at start")
            elif not slow:
                p["status"] = {"phase": "Running", "conditions": [{"type": "Ready",
                                                                   "status": "True"}]}
        if crash and not is_async:
            self._set_status(ns, name, serving_ref, serving={
                **serving, "state": "Failed", "reason": "RevisionFailed",
                "message": "Container failed with: RuntimeError: crashed at start"})
        elif slow:
            timeout = spec.get("serving", {}).get("timeout")
            if timeout:
                time.sleep(float(str(timeout).rstrip("s")))
                self._set_status(ns, name, serving_ref,
                                 serving={**serving, "state": "Timeout"})
        elif not crash and not is_async:
            service = f"{serving_ref}-ksvc-{uuid.uuid4().hex[:5]}"
            self._set_status(ns, name, serving_ref, serving={
                **serving, "state": "Running", "lastSuccessfulResourceRef": serving_ref,
                "service": service},
                addresses=[{"type": "Internal",
                            "value": f"http://{name}.{ns}.svc.cluster.local/"},
                           {"type": "External", "value": f"http://{name}.{ns}.ofn.io/"}])
        # the old serving's pods go once the new one runs
        with self.cond:
            for key in [k for k, v in self.pods.items() if k[0] == ns and
                        v["metadata"]["labels"]["openfunction.io/serving"].startswith("serving-")
                        and v["metadata"]["labels"]["openfunction.io/serving"] != serving_ref
                        and v["metadata"].get("function") == name]:
                del self.pods[key]
            if (ns, pod) in self.pods:
                self.pods[(ns, pod)]["metadata"]["function"] = name

    # -- HTTP --------------------------------------------------------------------------------

    def _routes(self) -> Flask:
        app = Flask("kube-double")

        @app.before_request
        def _auth() -> Response | None:
            self.calls.append((request.method, request.path))
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                return _status(401, "Unauthorized", "Unauthorized")
            verb = {"GET": "list" if request.args.get("watch") != "true" else "watch",
                    "POST": "create", "PUT": "update", "DELETE": "delete"}[request.method]
            if request.method == "GET" and not request.path.rstrip("/").endswith(
                    ("functions", "pods")):
                verb = "get"
            resource = ("functions" if "/functions" in request.path else
                        "pods/log" if request.path.endswith("/log") else
                        "pods" if "/pods" in request.path else "customresourcedefinitions")
            if (verb, resource) in self.forbid:
                return _status(403, "Forbidden",
                               f'{resource}.core.openfunction.io is forbidden: User "tester" '
                               f'cannot {verb} resource "{resource}" in API group '
                               f'"core.openfunction.io" in the namespace "demo"')
            return None

        @app.get(CRD_PATH)
        def _crd() -> Any:
            if not self.crd_installed:
                return _status(404, "NotFound", f'customresourcedefinitions.apiextensions.k8s.io'
                               f' "functions.core.openfunction.io" not found')
            return self.crd

        @app.post(FN_PATH)
        def _create(ns: str) -> Any:
            body = request.get_json(force=True)
            errors = sorted(f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                            for e in self.validator.iter_errors(body))
            if errors:
                return _status(422, "Invalid", "Function.core.openfunction.io is invalid: "
                               + "; ".join(errors))
            name = body["metadata"]["name"]
            with self.cond:
                if (ns, name) in self.functions:
                    return _status(409, "AlreadyExists",
                                   f'functions.core.openfunction.io "{name}" already exists')
                fn = _prune(body, self.schema)
                fn["metadata"].update(namespace=ns, uid=str(uuid.uuid4()), generation=1)
                fn["status"] = {}
                self.functions[(ns, name)] = fn
                self._emit(ns, "ADDED", fn)
                out = copy.deepcopy(fn)
            threading.Thread(target=self._controller, args=(ns, name, copy.deepcopy(fn)),
                             daemon=True).start()
            return Response(json.dumps(out), status=201, mimetype="application/json")

        @app.get(FN_PATH)
        def _list(ns: str) -> Any:
            selector = request.args.get("fieldSelector", "")
            wanted = selector.split("=", 1)[1] if selector.startswith("metadata.name=") else None
            if request.args.get("watch") == "true":
                since = int(request.args.get("resourceVersion") or 0)
                timeout = float(request.args.get("timeoutSeconds") or 30)
                return Response(self._watch(ns, wanted, since, timeout),
                                mimetype="application/json")
            with self.cond:
                items = [copy.deepcopy(f) for (n, name), f in self.functions.items()
                         if n == ns and wanted in (None, name)]
                return {"apiVersion": "core.openfunction.io/v1beta2", "kind": "FunctionList",
                        "metadata": {"resourceVersion": str(self.rv)}, "items": items}

        @app.get(FN_PATH + "/<name>")
        def _get(ns: str, name: str) -> Any:
            with self.cond:
                fn = self.functions.get((ns, name))
                if fn is None:
                    return _status(404, "NotFound",
                                   f'functions.core.openfunction.io "{name}" not found')
                return copy.deepcopy(fn)

        @app.put(FN_PATH + "/<name>")
        def _replace(ns: str, name: str) -> Any:
            body = request.get_json(force=True)
            errors = [e.message for e in self.validator.iter_errors(body)]
            if errors:
                return _status(422, "Invalid", "; ".join(errors))
            with self.cond:
                fn = self.functions.get((ns, name))
                if fn is None:
                    return _status(404, "NotFound", f'functions "{name}" not found')
                if body["metadata"].get("resourceVersion") != fn["metadata"]["resourceVersion"]:
                    return _status(409, "Conflict",
                                   f'Operation cannot be fulfilled on functions '
                                   f'"{name}": the object has been modified; please apply '
                                   f'your changes to the latest version and try again')
                changed = _prune(body, self.schema)["spec"] != fn["spec"]
                fn["spec"] = _prune(body, self.schema)["spec"]
                fn["metadata"]["labels"] = body["metadata"].get("labels", {})
                if changed:
                    fn["metadata"]["generation"] += 1
                    fn["status"]["serving"] = {}  # the controller resets it for a new serving
                self._emit(ns, "MODIFIED", fn)
                out = copy.deepcopy(fn)
            if changed:
                threading.Thread(target=self._controller, args=(ns, name, copy.deepcopy(fn)),
                                 daemon=True).start()
            return out

        @app.delete(FN_PATH + "/<name>")
        def _delete(ns: str, name: str) -> Any:
            with self.cond:
                fn = self.functions.get((ns, name))
                if fn is None:
                    return _status(404, "NotFound", f'functions "{name}" not found')
                fn["metadata"]["deletionTimestamp"] = "2026-11-28T00:00:00Z"
                self._emit(ns, "MODIFIED", fn)
                out = copy.deepcopy(fn)

            def finish() -> None:
                time.sleep(0.1)  # foreground deletion: children first
                with self.cond:
                    gone = self.functions.pop((ns, name), None)
                    for key in [k for k, v in self.pods.items()
                                if v["metadata"].get("function") == name or
                                (gone and v["metadata"]["labels"]["openfunction.io/serving"] ==
                                 gone["status"].get("serving", {}).get("resourceRef"))]:
                        del self.pods[key]
                    if gone is not None:
                        self._emit(ns, "DELETED", gone)
            threading.Thread(target=finish, daemon=True).start()
            return out

        @app.get("/api/v1/namespaces/<ns>/pods")
        def _pods(ns: str) -> Any:
            key, _, value = request.args.get("labelSelector", "").partition("=")
            with self.cond:
                items = [copy.deepcopy(p) for (n, _), p in self.pods.items()
                         if n == ns and p["metadata"]["labels"].get(key) == value]
                return {"apiVersion": "v1", "kind": "PodList",
                        "metadata": {"resourceVersion": str(self.rv)}, "items": items}

        @app.get("/api/v1/namespaces/<ns>/pods/<pod>/log")
        def _log(ns: str, pod: str) -> Any:
            if (ns, pod) not in self.pods:
                return _status(404, "NotFound", f'pods "{pod}" not found')
            if request.args.get("container") != "function":
                return _status(400, "BadRequest", "a container name must be specified")
            if request.args.get("follow") != "true":
                return Response("\n".join(self.logs.get(pod, [])) + "\n", mimetype="text/plain")

            def follow() -> Iterator[bytes]:
                sent = 0
                while (ns, pod) in self.pods:
                    lines = self.logs.get(pod, [])
                    for line in lines[sent:]:
                        yield (line + "\n").encode()
                    sent = len(lines)
                    time.sleep(0.05)
            return Response(follow(), mimetype="text/plain")

        return app

    def _watch(self, ns: str, name: str | None, since: int, timeout: float) -> Iterator[bytes]:
        deadline = time.monotonic() + timeout
        seen = since
        while time.monotonic() < deadline:
            with self.cond:
                new = [e for e in self.events if e[0] > seen and e[1] == ns and
                       name in (None, e[3]["metadata"]["name"])]
                if not new:
                    self.cond.wait(min(0.5, max(0.0, deadline - time.monotonic())))
                    continue
            for rv, _, kind, obj in new:
                seen = rv
                yield (json.dumps({"type": kind, "object": obj}) + "\n").encode()
