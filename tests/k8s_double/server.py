"""The API server double: its store, watch cache, HTTP routes, restarts (described in __init__)."""

from __future__ import annotations

import collections
import copy
import json
import socket
import threading
import time
import uuid
from typing import Any, Iterable, Iterator

import yaml
from flask import Flask, Response, request
from werkzeug.serving import WSGIRequestHandler, make_server

from . import builds, fields
from .components import Components
from .secrets import Secrets
from .controller import Controller
from .rbac import Attributes, Rbac, attributes
from .schema import prune, status, to_json_schema
from .store import API_VERSION, USER_META, Store, _now

GROUP_PATH = "/apis/core.openfunction.io"
FN_PATH = GROUP_PATH + "/v1beta2/namespaces/<ns>/functions"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/functions.core.openfunction.io"


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


class _Handler(WSGIRequestHandler):
    """Keeps the open connections, so that a restart can cut them."""

    def setup(self) -> None:
        super().setup()
        self.server.open_connections.add(self.connection)  # type: ignore[attr-defined]

    def finish(self) -> None:
        self.server.open_connections.discard(self.connection)  # type: ignore[attr-defined]
        super().finish()

    def log_request(self, *args: Any) -> None:
        pass


class KubeDouble(Store):
    def __init__(self, crd: dict[str, Any], token: str = "test-token", user: str = "tester",
                 watch_cache_size: int = 1000, bookmark_interval: float = 1.0,
                 component_crd: dict[str, Any] | None = None) -> None:
        import jsonschema

        self.crd, self.token, self.user = crd, token, user
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta2")
        self.schema = version["schema"]["openAPIV3Schema"]
        self.validator = jsonschema.Draft4Validator(to_json_schema(self.schema))
        self.functions: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.logs: dict[str, list[str]] = {}  # by pod (its function container) or pod/step
        self.builders: dict[tuple[str, str], dict[str, Any]] = {}  # played by builds.py
        self.history: collections.deque[tuple[int, str, str, dict[str, Any]]] = \
            collections.deque()  # the watch cache: rv, namespace, type, object
        self.watch_cache_size, self.bookmark_interval = watch_cache_size, bookmark_interval
        self.compacted = 0  # watches from an older resourceVersion get 410 Gone
        self.rbac: Rbac | None = None  # None: the user may do anything
        self.crd_installed = True
        self.calls: list[tuple[str, str]] = []  # the user's requests (not the controller's)
        self.requests: list[dict[str, Any]] = []  # the same, with query and content type
        self.rv, self.epoch, self.up, self.closed = 1, 0, True, False
        self.start_delay = 0.0
        self.controller_token = f"controller-{uuid.uuid4().hex}"
        self.cond = threading.Condition()
        self.controller = Controller(self)
        self.components = Components(self, component_crd)  # None: a cluster without Dapr
        self.secrets = Secrets(self)
        self.app = self._routes()
        self.server = self._server(0)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"

    def _server(self, port: int) -> Any:
        server = make_server("127.0.0.1", port, self.app, threaded=True,
                             request_handler=_Handler)
        server.open_connections = set()
        return server

    def _serve(self) -> None:
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def __enter__(self) -> KubeDouble:
        self._serve()
        return self

    def __exit__(self, *exc: object) -> None:
        with self.cond:
            self.closed = True
            self.epoch += 1
            self.cond.notify_all()
        if self.up:
            self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Config", "current-context": "double",
                "clusters": [{"name": "double", "cluster": {"server": self.url}}],
                "users": [{"name": self.user, "user": {"token": self.token}}],
                "contexts": [{"name": "double", "context": {"cluster": "double",
                                                            "user": self.user,
                                                            "namespace": "demo"}}]}

    # -- knobs -------------------------------------------------------------------------------

    def grant(self, *documents: dict[str, Any]) -> None:
        """From now on the user may do what these Roles, ClusterRoles and bindings allow."""
        self.rbac = Rbac(documents)

    def restart(self, down: float = 0.5) -> threading.Thread:
        """Play an API server restart: connections refused for ``down`` seconds, every open
        connection (watches too) cut, then a fresh watch cache, so older resourceVersions get
        410. Returns the thread that brings the server back."""
        with self.cond:
            self.up = False
            self.epoch += 1
            self.history.clear()
            self.compacted = self.rv
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()
        for conn in list(self.server.open_connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def back() -> None:
            time.sleep(down)
            if self.closed:
                return
            self.server = self._server(self.port)
            self._serve()
            self.up = True
        thread = threading.Thread(target=back, daemon=True)
        thread.start()
        return thread

    # -- HTTP --------------------------------------------------------------------------------

    def _who(self) -> str | None:
        auth = request.headers.get("Authorization")
        return (self.user if auth == f"Bearer {self.token}" else
                "system:openfunction" if auth == f"Bearer {self.controller_token}" else None)

    def _forbidden(self, attrs: Attributes) -> Response | None:
        if self._who() != self.user or self.rbac is None or self.rbac.allows(self.user, attrs):
            return None
        return status(403, "Forbidden", attrs.forbidden(self.user), name=attrs.name,
                      group=attrs.group, kind=attrs.resource.split("/")[0])

    def create_denied(self, live: dict[str, Any] | None, group: str, resource: str, ns: str,
                      name: str) -> Response | None:
        """An apply that creates needs ``create`` as well as ``patch``: its 403, if denied."""
        if live is not None:
            return None
        return self._forbidden(Attributes("create", group, resource, ns, name))

    def _body(self) -> Any:
        data = request.get_data()
        if "yaml" in (request.content_type or ""):
            return yaml.safe_load(data)
        return json.loads(data) if data else {}

    def _admit(self, body: dict[str, Any], name: str) -> tuple[dict[str, Any], list[str],
                                                                Response | None]:
        """Prune ``body`` as the schema does: strict field validation refuses what would be
        pruned (400), the default (Warn) says so in ``Warning`` headers."""
        kept, dropped = prune(body, self.schema)
        unknown = [f'unknown field "{p}"' for p in dropped]
        mode = request.args.get("fieldValidation", "Warn")
        if unknown and mode == "Strict":
            return kept, [], status(400, "BadRequest", f'Function.core.openfunction.io "{name}"'
                                    f' is invalid: strict decoding error: ' + ", ".join(unknown))
        return kept, unknown if mode == "Warn" else [], None

    def _routes(self) -> Flask:
        app = Flask("kube-double")

        @app.before_request
        def _gate() -> Response | None:
            who = self._who()
            if who == self.user:
                self.calls.append((request.method, request.path))
                self.requests.append({"method": request.method, "path": request.path,
                                      "args": dict(request.args),
                                      "content_type": request.content_type})
            if who is None:
                return status(401, "Unauthorized", "Unauthorized")
            attrs = attributes(request.method, request.path, request.args)
            if attrs is not None and (denied := self._forbidden(attrs)):
                return denied
            if request.path.startswith(GROUP_PATH) and not self.crd_installed:
                return Response("404 page not found\n", status=404,
                                mimetype="text/plain")  # an API group nobody serves
            return None

        self.components.routes(app)
        self.secrets.routes(app)

        @app.get(CRD_PATH)
        def _crd() -> Any:
            if not self.crd_installed:
                return status(404, "NotFound", 'customresourcedefinitions.apiextensions.k8s.io'
                              ' "functions.core.openfunction.io" not found')
            return self.crd

        @app.delete(CRD_PATH)
        def _uninstall() -> Any:
            with self.cond:
                for (ns, name), fn in list(self.functions.items()):
                    del self.functions[(ns, name)]
                    self._emit(ns, "DELETED", fn)
                self.pods.clear()
                self.crd_installed = False
            return self.crd

        @app.post(FN_PATH)
        def _create(ns: str) -> Any:
            raw = self._body()
            name = raw.get("metadata", {}).get("name", "")
            body, warnings, refused = self._admit(raw, name)
            if refused:
                return refused
            with self.cond:
                live = self.functions.get((ns, name))
                if live is not None:
                    deleting = "object is being deleted: " if live["metadata"].get(
                        "deletionTimestamp") else ""
                    return status(409, "AlreadyExists", f'{deleting}functions.core.'
                                  f'openfunction.io "{name}" already exists', name=name)
                result = self._fresh(body)
                managers = fields.Managers([])
                fields.update(None, result, self.schema, managers, self._manager())
                return self._write(ns, name, None, result, managers,
                                   {(self._manager(), "Update", "")}, warnings)

        @app.get(FN_PATH)
        def _list(ns: str) -> Any:
            selector = request.args.get("fieldSelector", "")
            wanted = selector.split("=", 1)[1] if selector.startswith("metadata.name=") else None
            if request.args.get("watch") in ("true", "1"):
                since = request.args.get("resourceVersion") or ""
                return Response(self._watch(ns, wanted, since,
                                            float(request.args.get("timeoutSeconds") or 1800),
                                            request.args.get("allowWatchBookmarks") == "true"),
                                mimetype="application/json")
            with self.cond:
                items = [copy.deepcopy(f) for (n, name), f in self.functions.items()
                         if n == ns and wanted in (None, name)]
                return {"apiVersion": API_VERSION, "kind": "FunctionList",
                        "metadata": {"resourceVersion": str(self.rv)}, "items": items}

        @app.get(FN_PATH + "/<name>")
        @app.get(FN_PATH + "/<name>/status")
        def _get(ns: str, name: str) -> Any:
            with self.cond:
                fn = self.functions.get((ns, name))
                if fn is None:
                    return self._not_found(name)
                return copy.deepcopy(fn)

        @app.put(FN_PATH + "/<name>")
        @app.put(FN_PATH + "/<name>/status")
        def _replace(ns: str, name: str) -> Any:
            raw = self._body()
            sub = "status" if request.path.endswith("/status") else ""
            body, warnings, refused = self._admit(raw, name)
            if refused:
                return refused
            with self.cond:
                live = self.functions.get((ns, name))
                if live is None:
                    return self._not_found(name)
                rv = body.get("metadata", {}).get("resourceVersion")
                if not rv and not sub:
                    return status(422, "Invalid", f'Function.core.openfunction.io "{name}" is '
                                  f'invalid: metadata.resourceVersion: Invalid value: 0x0: '
                                  f'must be specified for an update')
                if rv and rv != live["metadata"]["resourceVersion"]:
                    return status(409, "Conflict", f'Operation cannot be fulfilled on '
                                  f'functions.core.openfunction.io "{name}": the object has '
                                  f'been modified; please apply your changes to the latest '
                                  f'version and try again')
                return self._write_back(ns, name, live, body, warnings, sub)

        @app.patch(FN_PATH + "/<name>")
        @app.patch(FN_PATH + "/<name>/status")
        def _patch(ns: str, name: str) -> Any:
            kind = (request.content_type or "").split(";")[0]
            sub = "status" if request.path.endswith("/status") else ""
            if kind == "application/apply-patch+yaml" and not sub:
                return self._apply(ns, name)
            if kind != "application/merge-patch+json":
                return status(415, "UnsupportedMediaType", "the body of the request was in an "
                              "unknown format - accepted media types include: "
                              "application/json-patch+json, application/merge-patch+json, "
                              "application/apply-patch+yaml")
            patch = self._body()
            with self.cond:
                live = self.functions.get((ns, name))
                if live is None:
                    return self._not_found(name)
                merged = _merge(live, patch)
            body, warnings, refused = self._admit(merged, name)
            if refused:
                return refused
            with self.cond:
                live = self.functions.get((ns, name))
                if live is None:
                    return self._not_found(name)
                return self._write_back(ns, name, live, body, warnings, sub)

        @app.delete(FN_PATH + "/<name>")
        def _delete(ns: str, name: str) -> Any:
            options = self._body() if request.get_data() else {}
            policy = (options.get("propagationPolicy") or
                      request.args.get("propagationPolicy") or "Background")
            with self.cond:
                live = self.functions.get((ns, name))
                if live is None:
                    return self._not_found(name)
                fn = copy.deepcopy(live)
                meta = fn["metadata"]
                if meta.get("deletionTimestamp"):
                    return fn  # already going: nothing changes
                finalizers = list(meta.get("finalizers", []))
                if policy == "Foreground" and "foregroundDeletion" not in finalizers:
                    finalizers.append("foregroundDeletion")
                if not finalizers:
                    del self.functions[(ns, name)]
                    self._emit(ns, "DELETED", fn)
                    self._drop_pods(ns, name)
                    self.components.collect(ns, meta["uid"])
                    self.secrets.collect(ns, meta["uid"])
                    return {"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Success", "details": {
                                "name": name, "group": "core.openfunction.io",
                                "kind": "functions", "uid": meta["uid"]}}
                meta.update(finalizers=finalizers, deletionTimestamp=_now(),
                            deletionGracePeriodSeconds=0,
                            generation=meta.get("generation", 1) + 1)
                self._commit(ns, name, fn)
                if "foregroundDeletion" in finalizers:
                    self.controller.collect(ns, name, meta["uid"])
                return copy.deepcopy(fn)

        @app.get("/api/v1/namespaces/<ns>/pods")
        def _pods(ns: str) -> Any:
            key, _, value = request.args.get("labelSelector", "").partition("=")
            with self.cond:
                items = [copy.deepcopy(p) for (n, _), p in self.pods.items()
                         if n == ns and p["metadata"]["labels"].get(key) == value]
                return {"apiVersion": "v1", "kind": "PodList",
                        "metadata": {"resourceVersion": str(self.rv)}, "items": items}

        @app.get(GROUP_PATH + "/v1beta2/namespaces/<ns>/builders/<name>")
        def _builder(ns: str, name: str) -> Any:
            with self.cond:
                found = self.builders.get((ns, name))
                if found is None:
                    return status(404, "NotFound",
                                  f'builders.core.openfunction.io "{name}" not found')
                return copy.deepcopy(found)

        @app.get("/api/v1/namespaces/<ns>/pods/<pod>/log")
        def _log(ns: str, pod: str) -> Any:
            found = self.pods.get((ns, pod))
            if found is None:
                return status(404, "NotFound", f'pods "{pod}" not found')
            names = [c["name"] for c in found.get("spec", {}).get("containers") or
                     [{"name": "function"}]]
            container = request.args.get("container")
            if container is None and len(names) > 1:
                return status(400, "BadRequest", f"a container name must be specified for pod "
                              f"{pod}, choose one of: [{' '.join(names)}]")
            container = container or names[0]
            if container not in names:
                return status(400, "BadRequest",
                              f"container {container} is not valid for pod {pod}")
            if builds.container_state(found, container) == "waiting":
                return status(400, "BadRequest", f'container "{container}" in pod "{pod}" is '
                              f'waiting to start: PodInitializing')
            key = pod if container == "function" else f"{pod}/{container}"
            if request.args.get("follow") != "true":
                return Response("\n".join(self.logs.get(key, [])) + "\n", mimetype="text/plain")
            epoch = self.epoch

            def follow() -> Iterator[bytes]:
                """Until the pod goes or the container ends (then what is left is sent)."""
                sent = 0
                while self.epoch == epoch:
                    live = self.pods.get((ns, pod))
                    ended = live is None or builds.container_state(live, container) == \
                        "terminated"
                    lines = self.logs.get(key, [])
                    for line in lines[sent:]:
                        yield (line + "\n").encode()
                    sent = len(lines)
                    if ended:
                        return
                    time.sleep(0.05)
            return Response(follow(), mimetype="text/plain")

        return app

    def _manager(self) -> str:
        """The field manager of a non-apply write: ``fieldManager``, else the user agent's
        first word, as kube-apiserver derives it."""
        return request.args.get("fieldManager") or \
            (request.headers.get("User-Agent") or "unknown").split("/")[0]

    def _write_back(self, ns: str, name: str, live: dict[str, Any], body: dict[str, Any],
                    warnings: list[str], sub: str) -> Response:
        """Under ``cond``: a PUT or merge patch of the object (spec and metadata, status
        left alone) or of its ``/status`` subresource (status only)."""
        if sub:
            result = copy.deepcopy(live)
            result["status"] = body.get("status", {})
        else:
            result = self._fresh(body, live)
        return self._update(ns, name, live, result, warnings, sub)

    def _not_found(self, name: str) -> Response:
        return status(404, "NotFound", f'functions.core.openfunction.io "{name}" not found',
                      name=name, group="core.openfunction.io", kind="functions")

    def _update(self, ns: str, name: str, live: dict[str, Any], result: dict[str, Any],
                warnings: list[str], sub: str) -> Response:
        managers = fields.Managers(live["metadata"].get("managedFields"))
        manager = self._manager()
        fields.update(live, result, self.schema, managers, manager, sub)
        return self._write(ns, name, live, result, managers, {(manager, "Update", sub)},
                           warnings, sub)

    def _apply(self, ns: str, name: str) -> Response:
        """Server-side apply (``application/apply-patch+yaml``)."""
        manager = request.args.get("fieldManager")
        if not manager:
            return status(400, "BadRequest", 'PatchOptions.meta.k8s.io "" is invalid: '
                          'fieldManager: Required value: is required for apply patch')
        raw = self._body()
        config, warnings, refused = self._admit(raw, name)
        if refused:
            return refused
        config = {k: v for k, v in config.items() if k != "status"}
        config["metadata"] = {k: v for k, v in config.get("metadata", {}).items()
                              if k in USER_META or k in ("name", "namespace")}
        config["apiVersion"] = API_VERSION
        with self.cond:
            live = self.functions.get((ns, name))
            denied = self.create_denied(live, "core.openfunction.io", "functions", ns, name)
            if denied:
                return denied
            result, managers, conflicts = fields.apply_object(
                live, config, self.schema, "Function", manager,
                request.args.get("force") == "true")
            if conflicts:
                return status(409, "Conflict", f"Apply failed with {len(conflicts)} "
                              f"conflicts: " + "; ".join(conflicts))
            return self._write(ns, name, live, result, managers, {(manager, "Apply", "")},
                               warnings)


def load_documents(text: str) -> Iterable[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]
