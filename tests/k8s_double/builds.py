"""OpenFunction's in-cluster build (``spec.build``) as the double plays it.

Reference engine-less-builds.md A.2.4 and openfunction-contract.md §2.2 / §6.1: the function
controller makes a ``Builder`` (``builder-xxxxx``, labelled ``openfunction.io/function``) whose
status names the Shipwright ``BuildRun``; Tekton runs one pod labelled
``buildrun.shipwright.io/name=<BuildRun>`` with the step containers ``step-source-default``
(the bundle is pulled and unpacked), ``step-build-and-push`` (kaniko) and ``step-results``,
started one after another (a step's log answers 400 "is waiting to start" before it runs, and a
followed log ends when the step does). ``status.build`` goes ``Created`` -> ``Building`` ->
``Succeeded`` (with ``status.revision.imageDigest`` and ``status.sources``) or ``Failed`` with
Shipwright's message naming the pod and container. With ``successfulBuildsHistoryLimit`` 0 (the
default) the successful Builder, and its pod with it, is deleted at once, so its logs are gone
from the cluster; ``failedBuildsHistoryLimit`` (default 1) keeps a failed one.

Knobs: a bundle reference naming ``fail`` fails at pip; one naming ``pullfail`` never starts
(its source step waits in ``ImagePullBackOff``, as with a wrong pull secret) until the Function
changes or goes.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .server import KubeDouble

STEPS = ("step-source-default", "step-build-and-push", "step-results")
STEP_PAUSE = 0.05  # s between log lines: long enough for a follower to see a step run


def _suffix() -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=5))


def _step_lines(spec: dict[str, Any], fail: bool) -> dict[str, list[str]]:
    build = spec["build"]
    bundle = build["srcRepo"]["bundleContainer"]["image"]
    image = spec.get("image", "")
    digest = "sha256:" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    push = [f"INFO[0012] Pushing image to {image}",
            f"INFO[0013] Pushed {image.rpartition(':')[0]}@{digest}"]
    error = ["ERROR: Could not find a version that satisfies the requirement numpy==0.0.0",
             "ERROR: No matching distribution found for numpy==0.0.0",
             "error building image: error building stage: failed to execute command: "
             "waiting for process to exit: exit status 1"]
    return {
        "step-source-default": [f"Pulling image {bundle!r}",
                                f"Extracting {bundle} to /workspace/source",
                                "Image digest: sha256:" + "b" * 64],
        "step-build-and-push": [
            "INFO[0000] Retrieving image manifest python:3.11-slim",
            f"INFO[0001] Built cross stage deps: map[]; dockerfile {build['dockerfile']}",
            "INFO[0002] RUN pip install --no-cache-dir -r /app/requirements.txt",
            "Collecting cloudpickle==3.1.1",
            *(error if fail else ["Successfully installed cloudpickle-3.1.1 flask-3.1.0",
                                  *push])],
        "step-results": [] if fail else [f"digest {digest}"],
    }, digest


def play(double: KubeDouble, ns: str, name: str, spec: dict[str, Any],
         write: Callable[..., bool]) -> bool:
    """Run one build for the Function's current generation; True once it succeeded."""
    build = spec["build"]
    fail = "fail" in build["srcRepo"].get("bundleContainer", {}).get("image", "")
    builder = f"builder-{_suffix()}"
    buildrun = f"{builder}-buildrun-{_suffix()}"
    pod = f"{buildrun}-pod"
    with double.cond:
        double.builders[(ns, builder)] = {
            "apiVersion": "core.openfunction.io/v1beta2", "kind": "Builder",
            "metadata": {"name": builder, "namespace": ns,
                         "labels": {"openfunction.io/function": name}},
            "status": {"phase": "Build", "state": "Building",
                       "resourceRef": {"shipwright.io/build": f"{builder}-build-{_suffix()}",
                                       "shipwright.io/buildRun": buildrun}}}
    if not write(build={"state": "Created", "resourceRef": builder}):
        return False
    time.sleep(0.05)
    if not write(build={"state": "Building", "resourceRef": builder}):
        return False
    lines, digest = _step_lines(spec, fail)
    waiting = {"waiting": {"reason": "PodInitializing"}}
    with double.cond:
        double.pods[(ns, pod)] = {
            "metadata": {"name": pod, "namespace": ns, "builder": builder,
                         "labels": {"buildrun.shipwright.io/name": buildrun}},
            "spec": {"containers": [{"name": step} for step in STEPS]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": step, "ready": False, "restartCount": 0, "image": "", "imageID": "",
                 "state": dict(waiting)} for step in STEPS]}}
    if "pullfail" in build["srcRepo"].get("bundleContainer", {}).get("image", ""):
        with double.cond:
            _set_state(double, ns, pod, 0, {"waiting": {
                "reason": "ImagePullBackOff",
                "message": f'Back-off pulling image "{build["srcRepo"]["bundleContainer"]["image"]}"'}})
        while not double.closed:
            with double.cond:
                fn = double.functions.get((ns, name))
                if fn is None or fn["metadata"].get("deletionTimestamp") or \
                        fn["spec"].get("build") != build:
                    return False
            time.sleep(0.05)
        return False
    failed_step = ""
    for index, step in enumerate(STEPS):
        if failed_step:
            break
        key = f"{pod}/{step}"
        with double.cond:
            double.logs[key] = []
            _set_state(double, ns, pod, index, {"running": {"startedAt": "2026-12-01T00:00:00Z"}})
        for line in lines[step]:
            time.sleep(STEP_PAUSE)
            with double.cond:
                double.logs[key].append(line)
        code = 1 if fail and step == "step-build-and-push" else 0
        time.sleep(STEP_PAUSE)
        with double.cond:
            _set_state(double, ns, pod, index, {"terminated": {"exitCode": code}})
        if code:
            failed_step = step
    if failed_step:
        with double.cond:
            double.pods[(ns, pod)]["status"]["phase"] = "Failed"
        write(build={"state": "Failed", "resourceRef": builder, "reason": "Failed",
                     "message": f"buildrun step {failed_step.removeprefix('step-')} failed in "
                                f"pod {pod}, for detailed information: kubectl --namespace "
                                f"{ns} logs {pod} --container={failed_step}"})
        return False  # failedBuildsHistoryLimit keeps the Builder and its pod
    with double.cond:
        double.pods[(ns, pod)]["status"]["phase"] = "Succeeded"
        double.builders[(ns, builder)]["status"]["state"] = "Succeeded"
    ok = write(build={"state": "Succeeded", "resourceRef": builder, "buildDuration": "1s"},
               revision={"imageDigest": digest},
               sources=[{"name": "default", "bundle": {"digest": "sha256:" + "b" * 64}}])
    if not int(build.get("successfulBuildsHistoryLimit") or 0):
        prune(double, ns, builder)  # pruneBuilder: the default keeps no successful build
    return ok


def _set_state(double: KubeDouble, ns: str, pod: str, index: int, state: dict[str, Any]
               ) -> None:
    found = double.pods.get((ns, pod))
    if found is not None:
        found["status"]["containerStatuses"][index]["state"] = state


def prune(double: KubeDouble, ns: str, builder: str) -> None:
    """Delete a Builder and, by owner references, its BuildRun's pod."""
    with double.cond:
        double.builders.pop((ns, builder), None)
        for key in [k for k, p in double.pods.items()
                    if k[0] == ns and p["metadata"].get("builder") == builder]:
            del double.pods[key]


def container_state(pod: dict[str, Any], container: str) -> str:
    """``waiting``, ``running`` or ``terminated`` for a build pod's step; ``running`` for a
    serving's ``function`` container."""
    for item in pod.get("status", {}).get("containerStatuses") or []:
        if item.get("name") == container:
            return next(iter(item.get("state") or {"running": {}}))
    return "running"
