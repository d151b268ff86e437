"""OpenFunction's function controller and Kubernetes' garbage collector, as the double plays them.

The controller is a client of the double like any other: it reads the Function and writes
``status`` through the ``/status`` subresource (PUT at the resourceVersion it read, again on a
409), with its own credentials, retrying while the API server is down. It reconciles one
generation: a newer spec, or a deletion, stops it. The states follow reference §2.2: build
``Skipped`` (no ``spec.build``) or a build played by ``builds.py``; serving
``Created`` -> ``Starting`` -> ``Running`` with ``lastSuccessfulResourceRef``, ``service`` and,
for HTTP functions, ``addresses``; ``Failed`` for a crashing HTTP function; ``Timeout`` after
``spec.serving.timeout``; an async serving says ``Running`` before its pods are ready and never
``Failed`` (its pod shows CrashLoopBackOff).

Knobs, read from the image reference (or, for builds, from ``spec.build``): ``crash`` crashes,
``slow`` never gets ready, a bundle naming ``fail`` fails its build; ``double.start_delay`` seconds pass
before a serving runs.
"""

from __future__ import annotations

import json
import random
import string
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable

import requests

from . import builds

if TYPE_CHECKING:
    from .server import KubeDouble


def _suffix() -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=5))


class Controller:
    def __init__(self, double: KubeDouble) -> None:
        self.double = double
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {double.controller_token}",
                                     "User-Agent": "openfunction-manager/v1.2.0"})

    def reconcile(self, ns: str, name: str, generation: int) -> None:
        threading.Thread(target=self._run, args=(ns, name, generation), daemon=True,
                         name=f"double-controller-{name}-{generation}").start()

    def _write(self, ns: str, name: str, generation: int,
               mutate: Callable[[dict[str, Any]], None]) -> bool:
        """Change the status of ``generation`` of the Function; False once it is outdated."""
        path = (f"{self.double.url}/apis/core.openfunction.io/v1beta2/namespaces/{ns}/"
                f"functions/{name}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.double.closed:
            try:
                got = self.session.get(path, timeout=2)
                if got.status_code != 200:
                    return False
                fn = got.json()
                meta = fn["metadata"]
                if meta.get("generation") != generation or meta.get("deletionTimestamp"):
                    return False
                status = fn.setdefault("status", {})
                mutate(status)
                put = self.session.put(path + "/status", data=json.dumps(fn), timeout=2,
                                       headers={"Content-Type": "application/json"})
                if put.status_code == 409:
                    continue  # changed since we read it
                return put.status_code == 200
            except requests.RequestException:
                time.sleep(0.05)  # the API server is down: a controller retries
        return False

    def _run(self, ns: str, name: str, generation: int) -> None:
        with self.double.cond:
            fn = self.double.functions.get((ns, name))
            if fn is None or fn["metadata"]["generation"] != generation:
                return
            spec = json.loads(json.dumps(fn["spec"]))
            previous = fn.get("status", {}).get("serving", {}).get("lastSuccessfulResourceRef")

        def write(**parts: Any) -> bool:
            return self._write(ns, name, generation, lambda status: status.update(parts))

        if spec.get("build"):
            if not builds.play(self.double, ns, name, spec, write):
                return
        elif not write(build={"state": "Skipped"}):
            return
        self._serve(ns, name, generation, spec, previous, write)

    def _serve(self, ns: str, name: str, generation: int, spec: dict[str, Any],
               previous: str | None, write: Callable[..., bool]) -> None:
        double = self.double
        ref = f"serving-{_suffix()}"
        is_async = "dapr" in spec.get("serving", {}).get("triggers", {})
        image = spec.get("image", "")
        serving: dict[str, Any] = {"state": "Created", "resourceRef": ref}
        if previous:
            serving["lastSuccessfulResourceRef"] = previous
        if not write(serving=serving):
            return
        time.sleep(0.05)
        if not write(serving={**serving, "state": "Starting"}):
            return
        pod = f"{ref}-deployment-{uuid.uuid4().hex[:5]}"
        crash, slow = "crash" in image, "slow" in image
        with double.cond:
            double.pods[(ns, pod)] = {
                "metadata": {"name": pod, "namespace": ns, "function": name,
                             "labels": {"openfunction.io/serving": ref}},
                "status": {"phase": "Pending", "conditions": [{"type": "Ready",
                                                               "status": "False"}]}}
            double.logs[pod] = [f"ofnotebook runtime: serving {name}"]
        time.sleep(double.start_delay)
        if is_async and not crash and not slow:
            # the quirk: Running at once, whatever the pods are doing
            write(serving={**serving, "state": "Running", "lastSuccessfulResourceRef": ref})
        time.sleep(0.2)
        with double.cond:
            p = double.pods.get((ns, pod))
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
                double.logs[pod] += ["Traceback (most recent call last):",
                                     "RuntimeError: crashed at start"]
            elif not slow:
                p["status"] = {"phase": "Running", "conditions": [{"type": "Ready",
                                                                   "status": "True"}]}
        current = False
        if crash and not is_async:
            current = write(serving={**serving, "state": "Failed", "reason": "RevisionFailed",
                                     "message": "Container failed with: RuntimeError: "
                                                "crashed at start"})
        elif slow:
            timeout = spec.get("serving", {}).get("timeout")
            if timeout:
                time.sleep(float(str(timeout).rstrip("s")))
                current = write(serving={**serving, "state": "Timeout"})
        elif not is_async:
            current = write(serving={**serving, "state": "Running",
                                     "lastSuccessfulResourceRef": ref,
                                     "service": f"{ref}-ksvc-{_suffix()}"},
                            addresses=[{"type": "Internal",
                                        "value": f"http://{name}.{ns}.svc.cluster.local/"},
                                       {"type": "External",
                                        "value": f"http://{name}.{ns}.ofn.io/"}])
        else:
            current = True
        if not current:
            return
        with double.cond:  # the old servings' pods go once this one is settled
            for key in [k for k, v in double.pods.items() if k[0] == ns
                        and v["metadata"].get("function") == name
                        and v["metadata"]["labels"]["openfunction.io/serving"] != ref]:
                del double.pods[key]

    # -- the garbage collector ----------------------------------------------------------------

    def collect(self, ns: str, name: str, uid: str) -> None:
        """Delete the Function's dependents (its pods, Builders, the Components it alone
        owned; the others lose its owner reference), then drop ``foregroundDeletion``."""
        def run() -> None:
            time.sleep(0.1)
            while not self.double.up and not self.double.closed:
                time.sleep(0.05)
            with self.double.cond:
                for key in [k for k, v in self.double.pods.items()
                            if k[0] == ns and v["metadata"].get("function") == name]:
                    del self.double.pods[key]
                owned = [k for k, b in self.double.builders.items() if k[0] == ns and
                         b["metadata"]["labels"].get("openfunction.io/function") == name]
            for _, builder in owned:
                builds.prune(self.double, ns, builder)
            self.double.components.collect(ns, uid)
            self.double.secrets.collect(ns, uid)
            self.double.drop_finalizer(ns, name, uid, "foregroundDeletion")
        threading.Thread(target=run, daemon=True, name=f"double-gc-{name}").start()
