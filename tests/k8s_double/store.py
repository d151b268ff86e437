"""The double's store and watch cache: what every write path ends in, and what watches read.

``functions`` holds the objects; every change bumps the one resourceVersion counter and goes to
the watch cache (``history``, the last ``watch_cache_size`` events of all namespaces, as
kube-apiserver keeps one cache per resource). A write is defaulted and validated against the
schema, keeps the server's metadata, moves ``generation`` only with the spec, and when it
changes nothing keeps the resourceVersion and sends no event.
"""

from __future__ import annotations

import collections
import copy
import json
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterator

from flask import Response

from . import fields
from .schema import SERVER_META, apply_defaults, status

if TYPE_CHECKING:
    from .controller import Controller

USER_META = ("labels", "annotations", "finalizers", "ownerReferences")
API_VERSION = "core.openfunction.io/v1beta2"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """State and write paths of :class:`~tests.k8s_double.server.KubeDouble`."""

    functions: dict[tuple[str, str], dict[str, Any]]
    pods: dict[tuple[str, str], dict[str, Any]]
    history: collections.deque[tuple[int, str, str, dict[str, Any]]]
    watch_cache_size: int
    bookmark_interval: float
    compacted: int
    rv: int
    epoch: int
    schema: dict[str, Any]
    validator: Any
    cond: threading.Condition
    controller: Controller

    def churn(self, count: int, namespace: str = "other") -> None:
        """``count`` changes to a Function elsewhere: the watch cache (one for all namespaces,
        as in kube-apiserver) moves on without the watched Function changing."""
        with self.cond:
            key = (namespace, "churn")
            fn = self.functions.setdefault(key, {
                "apiVersion": API_VERSION, "kind": "Function",
                "metadata": {"name": "churn", "namespace": namespace, "generation": 1,
                             "uid": str(uuid.uuid4()), "annotations": {}},
                "spec": {"image": "churn", "workloadRuntime": "OCIContainer"}})
            for index in range(count):
                fn["metadata"]["annotations"]["n"] = str(index)
                self._emit(namespace, "MODIFIED", fn)

    def drop_finalizer(self, ns: str, name: str, uid: str, finalizer: str) -> None:
        """What a controller owning ``finalizer`` does once its work is done."""
        with self.cond:
            fn = self.functions.get((ns, name))
            if fn is None or fn["metadata"]["uid"] != uid:
                return
            left = [f for f in fn["metadata"].get("finalizers", []) if f != finalizer]
            fn["metadata"]["finalizers"] = left
            if not left:
                fn["metadata"].pop("finalizers")
            self._commit(ns, name, fn)

    # -- the store ---------------------------------------------------------------------------

    def _emit(self, ns: str, kind: str, obj: dict[str, Any]) -> None:
        """Under ``cond``: bump the resourceVersion and record a watch event."""
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.history.append((self.rv, ns, kind, copy.deepcopy(obj)))
        while len(self.history) > self.watch_cache_size:
            self.compacted = self.history.popleft()[0]
        self.cond.notify_all()

    def _commit(self, ns: str, name: str, fn: dict[str, Any], created: bool = False) -> None:
        """Under ``cond``: store ``fn`` (or remove it: deleting, and no finalizer left)."""
        meta = fn["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.functions.pop((ns, name), None)
            self._emit(ns, "DELETED", fn)
            return
        self.functions[(ns, name)] = fn
        self._emit(ns, "ADDED" if created else "MODIFIED", fn)

    def _write(self, ns: str, name: str, live: dict[str, Any] | None, result: dict[str, Any],
               managers: fields.Managers, manager_keys: set[tuple[str, str, str]],
               warnings: list[str], subresource: str = "") -> Response:
        """Under ``cond``: default, validate and store a write; a write that changes nothing
        keeps the resourceVersion and sends no event."""
        result = apply_defaults(result, self.schema)
        errors = sorted(f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                        for e in self.validator.iter_errors(result))
        if errors:
            return status(422, "Invalid", f'Function.core.openfunction.io "{name}" is '
                          f'invalid: ' + "; ".join(errors), name=name,
                          group="core.openfunction.io", kind="Function")
        meta = result["metadata"]
        if live is not None:
            old = live["metadata"]
            for key in SERVER_META:
                if key in old and key != "managedFields":
                    meta[key] = old[key]
            if old.get("deletionTimestamp") and set(meta.get("finalizers", [])) - set(
                    old.get("finalizers", [])):
                return status(422, "Invalid", f'Function.core.openfunction.io "{name}" is '
                              f'invalid: metadata.finalizers: Forbidden: no new finalizers '
                              f'can be added if the object is being deleted')
            if result.get("spec") != live.get("spec"):
                meta["generation"] = old.get("generation", 1) + 1
        else:
            meta.update(name=name, namespace=ns, uid=str(uuid.uuid4()), generation=1,
                        creationTimestamp=_now())
        meta["managedFields"] = managers.entries(API_VERSION, _now(), set())
        headers = [("Warning", '299 - "%s"' % w.replace('"', '\\"')) for w in warnings]
        if live is not None and result == live:
            return Response(json.dumps(live), status=200, mimetype="application/json",
                            headers=headers)
        meta["managedFields"] = managers.entries(API_VERSION, _now(), manager_keys)
        spec_changed = live is None or meta["generation"] != live["metadata"]["generation"]
        self._commit(ns, name, result, created=live is None)
        if spec_changed and not meta.get("deletionTimestamp") and not subresource:
            self.controller.reconcile(ns, name, meta["generation"])
        return Response(json.dumps(result), status=201 if live is None else 200,
                        mimetype="application/json", headers=headers)

    def _fresh(self, body: dict[str, Any], live: dict[str, Any] | None = None
               ) -> dict[str, Any]:
        """What a create or replace stores: the body's spec and user metadata; ``status``
        is the status subresource's alone (kept from ``live``, absent on create)."""
        meta = {k: v for k, v in body.get("metadata", {}).items() if k in USER_META}
        result = {"apiVersion": API_VERSION, "kind": "Function", "metadata": meta,
                  **{k: copy.deepcopy(v) for k, v in body.items()
                     if k not in ("apiVersion", "kind", "metadata", "status")}}
        if live is not None:
            for key in SERVER_META:
                if key in live["metadata"]:
                    meta[key] = copy.deepcopy(live["metadata"][key])
            if "status" in live:
                result["status"] = copy.deepcopy(live["status"])
        return result

    def _drop_pods(self, ns: str, name: str) -> None:
        for key in [k for k, v in self.pods.items()
                    if k[0] == ns and v["metadata"].get("function") == name]:
            del self.pods[key]

    def _watch(self, ns: str, name: str | None, since: str, timeout: float,
               bookmarks: bool) -> Iterator[bytes]:
        """A watch as kube-apiserver's watch cache serves it: events after ``since``; an
        expired ``since`` answers one ERROR event with a 410 Status; BOOKMARKs carry the
        current resourceVersion when asked for; a restart ends it."""
        def line(kind: str, obj: dict[str, Any]) -> bytes:
            return (json.dumps({"type": kind, "object": obj}) + "\n").encode()

        def bookmark() -> bytes:
            return line("BOOKMARK", {"kind": "Function", "apiVersion": API_VERSION,
                                     "metadata": {"resourceVersion": str(self.rv)}})
        deadline = time.monotonic() + timeout
        with self.cond:
            epoch = self.epoch
            if not since or since == "0":  # from "any": the current objects first
                seen = self.rv
                initial = [copy.deepcopy(f) for (n, k), f in self.functions.items()
                           if n == ns and name in (None, k)]
            elif int(since) < self.compacted:
                initial, seen = None, 0
            else:
                initial, seen = [], int(since)
        if initial is None:
            yield line("ERROR", {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                 "status": "Failure", "reason": "Expired", "code": 410,
                                 "message": f"too old resource version: {since} "
                                            f"({self.compacted})"})
            return
        for obj in initial:
            yield line("ADDED", obj)
        last_bookmark = time.monotonic()
        while True:
            with self.cond:
                if self.epoch != epoch:
                    return  # the API server went away under this watch
                new = [e for e in self.history if e[0] > seen and e[1] == ns and
                       name in (None, e[3]["metadata"]["name"])]
                left = deadline - time.monotonic()
                due = bookmarks and time.monotonic() - last_bookmark >= self.bookmark_interval
                if not new and not due and left > 0:
                    self.cond.wait(min(0.2, left))
                    continue
                mark = bookmark() if bookmarks and (due or left <= 0) else None
                if mark:
                    seen = max(seen, self.rv)
            for rv, _, kind, obj in new:
                seen = max(seen, rv)
                yield line(kind, obj)
            if mark:
                last_bookmark = time.monotonic()
                yield mark
            if left <= 0:
                return
