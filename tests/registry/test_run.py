"""Engine-less images are real images: built with no engine reachable, pushed to a registry
with real auth, then pulled by digest with Podman and run. A sync function answers over HTTP;
an async one gets an event through the kernel's local Dapr stand-in.

The base is the CI base image from the shared registry on 127.0.0.1:5000 (copied into the
test registry by the build, as a user's default base is copied into theirs).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from ofnotebook import images, layers
from ofnotebook.backends.events import EventTracker
from ofnotebook.capture import capture
from ofnotebook.components import parse_items
from ofnotebook.context import context_env
from ofnotebook.errors import BackendUnavailableError
from ofnotebook.package import package
from ofnotebook.runtime import HEALTH_PATH
from ofnotebook.spec import FunctionSpec
from tests.helpers import free_port, make_function, wait_for
from tests.registry.conftest import PASSWORD, USER, Registry, login, need

pytestmark = pytest.mark.container
PODMAN = "unix:///run/podman/podman.sock"


@pytest.fixture
def podman(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """Pull ``reference`` from ``registry`` by digest with Podman (as a user who logged in),
    and give the docker SDK client of Podman's service to run it."""
    if not shutil.which("podman"):
        need("podman", "run .ci/setup-containers")
    pulled: list[str] = []
    client: list[Any] = []

    def pull(registry: Registry, reference: str) -> Any:
        authfile = tmp_path / "auth.json"
        authfile.write_text(json.dumps({"auths": {registry.host: {
            "auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}))
        done = subprocess.run(["podman", "pull", "--quiet", "--tls-verify=false",
                               "--authfile", str(authfile), reference],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        pulled.append(reference)
        monkeypatch.setenv("DOCKER_HOST", PODMAN)  # the build is over: now an engine runs it
        try:
            client.append(images.engine())
        except BackendUnavailableError as exc:
            need("Podman's Docker API", str(exc))
        return client[-1]

    yield pull
    for reference in pulled:
        subprocess.run(["podman", "rmi", "--force", reference], capture_output=True)


def wait_port(port: int, path: str | None = None, timeout: float = 60) -> None:
    session = requests.Session()
    session.trust_env = False

    def answers() -> bool:
        if path is None:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        return session.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200

    wait_for(answers, timeout, f"nothing answered on 127.0.0.1:{port} within {timeout} s",
             ignoring=(OSError, requests.RequestException), interval=0.1)


def test_a_sync_function_built_without_an_engine_answers(basic: Registry, real_base: str,
                                                         podman: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert os.environ["DOCKER_HOST"] == "unix:///nonexistent.sock"
    login(monkeypatch)
    who = uuid.uuid4().hex[:8]
    fn = make_function("def greet(request):\n    return {'hello': request.args.get('who'), "
                       "'run': RUN}\n", {"RUN": who}, name="greet")
    spec = FunctionSpec(name=f"sync-{who}")
    pkg = package(capture(fn), spec, base_image=real_base)
    lines: list[str] = []
    reference = layers.build_and_push(pkg, basic.host, on_line=lambda p, t: lines.append(t))
    assert any("copying base layer 1/1" in line for line in lines), lines
    client = podman(basic, reference)
    container = client.containers.run(
        reference, detach=True, init=True, environment=context_env(spec, port=8080),
        name=f"ofn-registry-test-{who}", ports={"8080/tcp": ("127.0.0.1", None)})
    try:
        container.reload()
        port = int(container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])
        wait_port(port, HEALTH_PATH)
        answer = requests.get(f"http://127.0.0.1:{port}/", params={"who": "ada"}, timeout=10)
        assert answer.json() == {"hello": "ada", "run": who}
        assert container.image.labels[layers.LABEL_PACKAGE] == pkg.digest
    finally:
        container.remove(force=True)


def test_an_async_function_built_without_an_engine_gets_an_event(
        token: Registry, real_base: str, podman: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from ofnotebook.backends.standin import get_standin

    login(monkeypatch)
    topic = uuid.uuid4().hex[:8]
    name = f"async-{topic}"
    fn = make_function("def double(ctx, data):\n    ctx.send('out', data['n'] * 2)\n",
                       name="double")
    spec = FunctionSpec(name=name, runtime="async", entry="double",
                        inputs=parse_items({"numbers": f"memory://reg-in-{topic}"}, "input",
                                           app=name),
                        outputs=parse_items({"out": f"memory://reg-out-{topic}"}, "output",
                                            app=name))
    pkg = package(capture(fn, runtime="async", dapr=True), spec, base_image=real_base)
    reference = layers.build_and_push(pkg, token.host)
    client = podman(token, reference)
    standin = get_standin()
    port = free_port()
    env = dict(context_env(spec, port=port), **standin.env())
    container = client.containers.run(reference, detach=True, init=True, environment=env,
                                      name=f"ofn-registry-test-{topic}", network_mode="host",
                                      command=["--host", "127.0.0.1"])
    tracker = EventTracker()
    unsubscribe = standin.subscribe(name, tracker)
    try:
        wait_port(port)
        standin.register(name, port, spec, 30)
        standin.inject(name, "numbers", json.dumps({"n": 21}).encode(), "application/json")
        assert [o.data for o in tracker.wait_for_outputs(1, timeout=30)] == [42]
    finally:
        unsubscribe()
        try:
            standin.unregister(name)
        finally:
            container.remove(force=True)
