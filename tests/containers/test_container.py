"""Images and the ``container`` target against real engines (each test runs on Podman's Docker
API and on Docker Engine: see conftest.py), the real base image .ci/setup-containers builds,
and a real registry on 127.0.0.1:5000.

Without an engine these tests skip with the reason (deselect them with ``-m 'not
container'``); under CI a missing engine fails them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

import ofnotebook
from ofnotebook import images
from ofnotebook.backends.container import LABEL_SESSION, SESSION, ContainerBackend
from ofnotebook.errors import BuildError, InvocationError
from tests.backends.conformance import BackendConformance
from tests.helpers import make_function, require_local_registry, uid, wait_for

pytestmark = pytest.mark.container
REGISTRY = "127.0.0.1:5000"


@pytest.fixture
def backend(client: Any) -> Iterator[ContainerBackend]:
    made = ContainerBackend(start_timeout=30)
    before = {image.id for image in client.images.list()}
    try:
        yield made
    finally:
        made.close()
        left = client.containers.list(all=True, filters={"label": f"{LABEL_SESSION}={SESSION}"})
        assert not left, f"containers left behind: {[c.name for c in left]}"
        for image in client.images.list(name="ofnotebook/*"):
            # the dependency images are the build cache, shared by functions with one lock
            if image.id not in before and not all(
                    tag.rpartition(":")[0].endswith("ofnotebook/deps") for tag in image.tags):
                try:  # not forced: an image another run's container uses stays
                    client.images.remove(image.id)
                except Exception:
                    pass


class TestContainerConformance(BackendConformance):
    """The whole contract on each engine; an async function reaches the kernel's Dapr
    stand-in from its container (host network)."""

    target = "container"

    @pytest.fixture
    def backend(self, backend: ContainerBackend) -> ContainerBackend:
        return backend  # the module's: closed after the test, nothing left behind


def function(body: str = "'v1'") -> Any:
    source = ("def hello(request):\n"
              "    print('hello from the container', request.args.get('who'), flush=True)\n"
              "    if request.args.get('long'):  # both engines split it across log frames\n"
              "        print('L' * 40000, 'end', flush=True)\n"
              f"    return {{'version': {body}, 'run': RUN}}\n")
    return make_function(source, {"RUN": uid()}, name="hello")


def common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_build_reuse_and_a_code_edit_rebuilds_only_the_code_layers(
        backend: ContainerBackend, client: Any) -> None:
    fn = function()
    name = f"img-{uid()}"
    first = ofnotebook.deploy(fn, name, target=backend)
    assert first.deployment.image.built and first.status == "running"
    assert [e.detail for e in first.events if e.state == "progress"], "no build lines streamed"
    assert first.invoke().json()["version"] == "v1"

    again = ofnotebook.deploy(fn, name, target=backend)  # unchanged cell: same container
    assert again.deployment is first.deployment
    assert not images.build(first.package).built  # the digest's image exists: no build

    edited = ofnotebook.deploy(function("'v2'"), name, target=backend)
    assert edited.deployment.image.built and edited.invoke().json()["version"] == "v2"
    assert first.status == "stopped"  # replaced
    base_layers = len(images.layers(first.package.base_image))
    old, new = images.layers(first.deployment.image.tag), images.layers(
        edited.deployment.image.tag)
    shared = common_prefix(old, new)
    # the base, requirements.txt and the pip install layer are the very same layers ...
    assert shared >= base_layers + 2, (shared, base_layers, old, new)
    # ... and only the code layers at the top differ
    assert old != new and len(new) - shared <= 2


def test_run_invoke_follow_logs_and_report_a_killed_container(backend: ContainerBackend,
                                                              client: Any) -> None:
    handle = ofnotebook.deploy(function(), f"run-{uid()}", target=backend)
    assert handle.url.startswith("http://127.0.0.1:")
    container = handle.deployment.container
    container.reload()
    published = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"]
    assert {p["HostIp"] for p in published} == {"127.0.0.1"}  # loopback only
    assert handle.invoke(params={"who": "ada", "long": "1"}).status_code == 200
    long_line = "L" * 40000 + " end"
    wait_for(lambda: long_line in handle.deployment.logs(), 30, lambda: handle.logs()[-2000:])
    # each printed line is one entry, however the engine framed it
    assert "hello from the container ada" in handle.deployment.logs()
    container.kill()
    wait_for(lambda: handle.status == "failed", 30, lambda: f"status {handle.status!r}")
    assert "exited with code" in (handle.deployment.failure or "")
    with pytest.raises(InvocationError, match="not running"):
        handle.invoke()
    handle.stop()
    with pytest.raises(Exception):
        client.containers.get(container.id)


def test_a_failing_pip_step_quotes_the_step_and_leaves_no_tag(backend: ContainerBackend,
                                                             client: Any) -> None:
    name = f"badpip-{uid()}"
    with pytest.raises(BuildError) as caught:
        ofnotebook.deploy(function(), name, target=backend,
                          requirements=[  # a direct URL: the index check passes it on, pip fails
                              "ofnotebook-no-such-distribution @ http://127.0.0.1:9/"
                              "ofnotebook_no_such_distribution-0.0.1-py3-none-any.whl"])
    message = str(caught.value)
    assert "RUN pip install" in message and "ofnotebook-no-such-distribution" in message
    assert "\x1b[" not in message  # Docker colours the step's stderr; the message is plain
    assert not client.images.list(name=f"ofnotebook/{name}")
    assert not backend.deployments()


def test_a_python_mismatch_is_refused_before_building(backend: ContainerBackend,
                                                      client: Any) -> None:
    base = f"ofnotebook-test-base:{uid()}"
    image = client.images.get("python:3.11-slim" if not os.environ.get("OFNOTEBOOK_BASE_IMAGE")
                              else os.environ["OFNOTEBOOK_BASE_IMAGE"])
    # a base that says it has another Python (the label wins over running the image)
    container = client.containers.create(image.id, command=["true"])
    try:
        container.commit(repository=base.split(":")[0], tag=base.split(":")[1],
                         changes=['LABEL io.ofnotebook.python="3.9.18"'])
    finally:
        container.remove(force=True)
    name = f"mismatch-{uid()}"
    try:
        with pytest.raises(BuildError, match=r"Python 3\.9\.18, the notebook runs 3\.11"):
            ofnotebook.deploy(function(), name, target=backend, base_image=base)
        assert not client.images.list(name=f"ofnotebook/{name}")
    finally:
        client.images.remove(base, force=True)


def test_the_base_image_python_is_read_from_its_env_else_by_running_it(client: Any) -> None:
    base = client.images.get("python:3.11-slim")
    env = dict(item.partition("=")[::2] for item in base.attrs["Config"]["Env"] or [])
    # .ci/setup-containers gives the local base PYTHON_VERSION, as official python images have
    assert env.get("PYTHON_VERSION", "").startswith("3.11."), env
    assert images.base_python(client, "python:3.11-slim") == env["PYTHON_VERSION"]
    # with neither the label nor the env, one run of the image tells
    blank = f"ofnotebook-test-base:noenv-{uid()}"
    container = client.containers.create(base.id, command=["true"])
    try:
        container.commit(repository=blank.split(":")[0], tag=blank.split(":")[1],
                         changes=["ENV PYTHON_VERSION="])
    finally:
        container.remove(force=True)
    try:
        assert images.base_python(client, blank) == env["PYTHON_VERSION"]
    finally:
        client.images.remove(blank, force=True)



def manifest(reference: str) -> dict[str, Any]:
    repo, digest = reference.split("/", 1)[1].split("@")
    response = requests.get(f"http://{REGISTRY}/v2/{repo}/manifests/{digest}", timeout=5,
                            headers={"Accept": "application/vnd.oci.image.manifest.v1+json,"
                                     "application/vnd.docker.distribution.manifest.v2+json"})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_push_to_a_real_registry_and_deploy_by_digest(client: Any) -> None:
    require_local_registry()
    backend = ContainerBackend(start_timeout=30, registry=REGISTRY)
    name = f"push-{uid()}"
    try:
        handle = ofnotebook.deploy(function(), name, target=backend)
        reference = handle.deployment.reference
        assert reference.startswith(f"{REGISTRY}/ofnotebook/{name}@sha256:")
        assert handle.invoke().status_code == 200
        phases = [e.phase for e in handle.events if e.state == "finished"]
        assert phases.index("build") < phases.index("push") < phases.index("deploy")
        # the registry serves the manifest by digest: the very image that was built
        assert manifest(reference)["config"]["digest"] == handle.deployment.image.id
        # the engine ran the container by that digest reference
        container = handle.deployment.container
        container.reload()
        assert container.attrs["Config"]["Image"] == reference
        built = handle.deployment.image.id
        handle.stop()
        # gone from the engine, the image comes back from the registry by its digest
        client.images.remove(built, force=True)
        with pytest.raises(Exception):
            client.images.get(reference)
        assert images.runnable(client, reference) == reference
        assert client.images.get(reference).id == built
    finally:
        backend.close()
        for image in client.images.list(name="ofnotebook/" + name):
            client.images.remove(image.id, force=True)


def test_the_engine_builder_pushes_an_image_that_runs_by_its_digest(client: Any) -> None:
    """``--build engine`` (the kubernetes and yaml targets): build and push on this engine,
    then run what the registry holds by the digest reference a cluster would pull."""
    from ofnotebook import builders
    from ofnotebook.backends.base import PhaseRecorder
    from ofnotebook.capture import capture
    from ofnotebook.package import package
    from ofnotebook.spec import FunctionSpec

    require_local_registry()
    assert builders.resolve("auto") == "engine"  # an engine answers: auto takes it
    name = f"engine-{uid()}"
    fn = function()
    pkg = package(capture(fn, entry="hello"), FunctionSpec(name=name, entry="hello"))
    recorder = PhaseRecorder()
    reference = builders.push_image(pkg, REGISTRY, "engine", recorder,
                                    platform_name="linux/amd64")
    container = None
    try:
        assert reference.startswith(f"{REGISTRY}/ofnotebook/{name}@sha256:")
        assert [e.phase for e in recorder.events if e.state == "finished"] == ["build", "push"]
        built = client.images.get(images.image_tag(pkg)).id
        assert manifest(reference)["config"]["digest"] == built
        assert images.runnable(client, reference) == reference
        container = client.containers.run(reference, detach=True, init=True,
                                          ports={"8080/tcp": ("127.0.0.1", None)})
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
        session = requests.Session()
        session.trust_env = False
        # the first answer counts, whatever its status (a 1-tuple: an error Response is false)
        (answer,) = wait_for(lambda: (session.get(f"http://127.0.0.1:{port}/", timeout=1),),
                             30, lambda: container.logs().decode(),
                             ignoring=(requests.RequestException,))
        assert answer.status_code == 200 and answer.json()["version"] == "v1"
    finally:
        if container is not None:
            container.remove(force=True)
        for image in client.images.list(name=f"ofnotebook/{name}"):
            client.images.remove(image.id, force=True)


def test_containers_are_removed_when_the_kernel_exits(client: Any, tmp_path: Any) -> None:
    import subprocess
    import sys
    import textwrap

    name = f"atexit-{uid()}"
    script = tmp_path / "kernel.py"
    script.write_text(textwrap.dedent(f"""
        import warnings
        warnings.simplefilter("ignore")
        import ofnotebook
        ns = {{}}
        exec("def f(request):\\n    return 'up'\\n", ns)
        handle = ofnotebook.deploy(ns["f"], {name!r}, target="container")
        assert handle.invoke().text == "up"
        print("deployed", flush=True)
    """))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=180, env=env)
    assert done.returncode == 0 and "deployed" in done.stdout, done.stderr
    left = client.containers.list(all=True, filters={"label": f"io.ofnotebook.function={name}"})
    assert not left, [c.name for c in left]
    for image in client.images.list(name=f"ofnotebook/{name}"):
        client.images.remove(image.id)


def test_included_files_are_in_the_image_at_their_relative_path(
        backend: ContainerBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same cell as tests/test_includes.py, in a container: the template folder and the
    data file are in the code layer, and the working directory is the same relative place."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "hello.html").write_text("<p>hello {{ name }}</p>")
    (tmp_path / "labels.csv").write_text("cat\ndog\n")
    monkeypatch.chdir(tmp_path)
    fn = make_function("import flask, os\n\ndef page(request):\n"
                       "    labels = open('labels.csv').read().split()\n"
                       "    html = flask.render_template('hello.html', name='ada')\n"
                       "    return {'labels': labels, 'html': html, 'cwd': os.getcwd()}\n",
                       name="page")
    handle = ofnotebook.deploy(fn, f"inc-{uid()}", target=backend,
                               include=["templates", "labels.csv"])
    body = handle.invoke().json()
    assert body == {"labels": ["cat", "dog"], "html": "<p>hello ada</p>",
                    "cwd": "/app/function/files"}
