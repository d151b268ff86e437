"""The ``container`` target: the package's image, run by a Docker-compatible engine.

Same handle API as the local target. A sync function's port 8080 is published on 127.0.0.1
only. An async function (or one with Dapr outputs) must reach the kernel's local Dapr stand-in,
which listens on 127.0.0.1, so its container shares the host's network and the runtime binds
127.0.0.1 on a free port. Every container carries this kernel's session label and is removed
when the kernel exits, or, when it is killed, by the kernel's reaper (:mod:`.reaper`). Settings
(``OFNOTEBOOK_START_TIMEOUT``, ``_LOG_LINES``, ``_REGISTRY``) are read at each deploy.
"""

from __future__ import annotations

import atexit
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from .. import config, images
from ..context import context_env
from ..errors import DeployError
from ..package import Package
from ..runtime import HEALTH_PATH
from .base import (FAILED, RUNNING, STOPPED, BufferedDeployment, LogBuffer, PhaseEvent,
                   PhaseRecorder, TrackedBackend, stream_lines)
from . import reaper, standin_warnings
from .reaper import LABEL_FUNCTION, LABEL_SESSION, SESSION
from .standin import StandIn, get_standin
from .standin_user import StandInUser

if TYPE_CHECKING:
    import docker

__all__ = ["LABEL_FUNCTION", "LABEL_SESSION", "SESSION", "ContainerBackend"]
CONTAINER_PORT = 8080


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ContainerDeployment(StandInUser, BufferedDeployment):
    """One running container; its logs are followed into a bounded buffer."""

    def __init__(self, name: str, package: Package, image: images.BuiltImage, reference: str,
                 container: Any, port: int, env: Mapping[str, str], log_lines: int,
                 standin: StandIn | None = None) -> None:
        self.name, self.package, self.image, self.reference = name, package, image, reference
        self.container, self.port, self.env = container, port, dict(env)
        is_async = package.spec.runtime == "async"
        self.url = f"grpc://127.0.0.1:{port}" if is_async else f"http://127.0.0.1:{port}/"
        self.key = (package.digest, tuple(sorted(env.items())))
        self.log_buffer = LogBuffer(log_lines)
        self._stopped = False
        self._exit_code: int | None = None
        self._attach_standin(standin)
        threading.Thread(target=self._follow, name=f"ofnotebook-logs-{name}",
                         daemon=True).start()

    def _follow(self) -> None:
        """Follow the container's output into the buffer, one entry per printed line.

        Log frames are not lines: Docker splits a line longer than 16 kB, Podman a line
        written in pieces (``print(a, b)`` under ``PYTHONUNBUFFERED``), and a frame may end
        inside a UTF-8 character. So a line is appended once its newline arrives, and what
        is left when the stream ends (a last line with no newline) is appended then.
        """
        try:
            for line in stream_lines(self.container.logs(stream=True, follow=True)):
                self.log_buffer.append(line)
        except Exception:  # the container was removed: the stream ends
            pass

    # -- the contract ------------------------------------------------------------------------

    @property
    def status(self) -> str:
        if self._stopped:
            return STOPPED
        if self._exit_code is not None:
            return FAILED
        try:
            self.container.reload()
        except Exception:
            self._exit_code = -1  # removed behind our back
            return FAILED
        state = self.container.attrs.get("State", {})
        if state.get("Running"):
            return RUNNING
        self._exit_code = int(state.get("ExitCode", -1))
        return FAILED

    @property
    def failure(self) -> str | None:
        if self.status != FAILED:
            return None
        tail = "\n".join(self.logs(tail=15))
        return (f"the container {self.container.name} exited with code {self._exit_code}. "
                f"Last log lines:\n{tail}")

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._leave_standin()
        _remove(self.container)


def _remove(container: Any) -> None:
    import docker

    try:
        container.remove(force=True)  # SIGKILL then remove: the image keeps nothing to save
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        message = str(exc).lower()  # gone, or Docker removing it already (a parallel stop)
        if "no such container" not in message and "already in progress" not in message:
            raise


class ContainerBackend(TrackedBackend):
    """Build the package's image (reused by digest), optionally push it, run it."""

    name: ClassVar[str] = "container"

    def __init__(self, *, start_timeout: float | None = None, log_lines: int | None = None,
                 registry: str | None = None) -> None:
        self._overrides = {"start_timeout": start_timeout, "log_lines": log_lines,
                           "registry": registry}
        config.check()  # a bad OFNOTEBOOK_* fails here, naming the variable
        config.get("registry", registry)  # a bad registry= is refused before any build
        self._removals: list[threading.Thread] = []  # replaced containers, removed meanwhile
        super().__init__()

    # Settings are read at each use, so a changed OFNOTEBOOK_* applies to the next deploy.
    @property
    def start_timeout(self) -> float:
        return float(config.get("start_timeout", self._overrides["start_timeout"]))

    @property
    def log_lines(self) -> int:
        return int(config.get("log_lines", self._overrides["log_lines"]))

    @property
    def registry(self) -> str:
        return str(config.get("registry", self._overrides["registry"]) or "")

    def close(self) -> None:
        """Stop every deployment and wait for replaced containers to be gone too."""
        super().close()
        with self._lock:
            removals, self._removals = self._removals, []
        for thread in removals:
            thread.join(30)

    def deploy(self, package: Package, *, env: Mapping[str, str], local_port: int | None,
               recorder: PhaseRecorder) -> ContainerDeployment:
        spec = package.spec
        existing = self._deployments.get(spec.name)
        if (isinstance(existing, ContainerDeployment) and existing.status == RUNNING
                and existing.key == (package.digest, tuple(sorted(env.items())))
                and local_port in (None, existing.port)):
            return existing
        client = images.engine()

        def line(text: str, phase: str = "build") -> None:
            recorder.emit(PhaseEvent(phase, "progress", time.time(), detail=text))

        with recorder.phase("build", detail=images.image_tag(package)):
            built = images.build(package, on_line=line, client=client)
        reference = built.tag
        if self.registry:
            with recorder.phase("push", detail=self.registry):
                reference = images.push(built, self.registry, client,
                                        on_line=lambda text: line(text, "push"))
                # run by the digest reference, which the engine must know by that name
                images.runnable(client, reference, on_line=lambda text: line(text, "push"))

        standin = None
        host_network = spec.needs_dapr  # the stand-in listens on the host's 127.0.0.1
        if host_network:
            with recorder.phase("dapr", detail="local Dapr stand-in"):
                standin = get_standin()
        with recorder.phase("deploy", detail="container"):
            port = local_port or (_free_port() if host_network else 0)
            run_env = dict(env)
            run_env.update(context_env(spec, port=port if host_network else CONTAINER_PORT))
            if standin is not None:
                run_env.update(standin.env(spec.name))  # its own token: its own app id
            container = self._run(client, reference, package, run_env, port, host_network)
            if not host_network:
                container.reload()
                bound = container.attrs["NetworkSettings"]["Ports"][f"{CONTAINER_PORT}/tcp"]
                port = int(bound[0]["HostPort"])
        deployment = ContainerDeployment(spec.name, package, built, reference, container, port,
                                         env, self.log_lines, standin)
        with recorder.phase("ready", detail=f"127.0.0.1:{port}"):
            try:
                self._wait_ready(deployment)
                if standin is not None:
                    answer = standin.register(spec.name, port, spec, self.start_timeout)
                    for warning in standin_warnings.emit(recorder, spec, answer):
                        deployment.log_buffer.append(f"ofnotebook: warning: {warning}")
            except DeployError as exc:
                try:  # straight from the engine: the follower may not have caught the end
                    tail = container.logs(tail=15).decode(errors="replace").splitlines()
                except Exception:
                    tail = deployment.logs(tail=15)
                deployment.stop()
                raise DeployError(
                    f"Function {spec.name!r} did not become ready in its container. {exc} "
                    f"Last log lines:\n" + ("\n".join(tail) or "(no output)"),
                    function_name=spec.name, last_logs=tail) from None
        previous = self._track(deployment)
        if isinstance(previous, ContainerDeployment):
            previous._stopped = True  # replaced: the new container answers already
            removal = threading.Thread(target=_remove, args=(previous.container,),
                                       daemon=True)
            removal.start()
            with self._lock:
                self._removals = [t for t in self._removals if t.is_alive()] + [removal]
        return deployment

    def _run(self, client: "docker.DockerClient", reference: str, package: Package,
             env: dict[str, str], port: int, host_network: bool) -> Any:
        spec = package.spec
        options: dict[str, Any] = dict(
            detach=True, environment=env, init=True,
            name=f"ofn-{spec.name}-{package.digest[:8]}-{uuid.uuid4().hex[:6]}",
            labels=reaper.labels(spec.name))
        if host_network:
            options.update(network_mode="host", command=["--host", "127.0.0.1"])
        else:
            options["ports"] = {f"{CONTAINER_PORT}/tcp": ("127.0.0.1", port or None)}
        reaper.sweep(client)  # containers of this machine's dead kernels
        reaper.ensure_reaper(images.engine_url())  # and ours, however this kernel ends
        try:
            return client.containers.run(reference, **options)
        except Exception as exc:
            _remove_created(client, options["name"])
            raise DeployError(f"The engine could not start a container for {spec.name!r}: "
                              f"{getattr(exc, 'explanation', None) or exc}",
                              function_name=spec.name) from None

    def _wait_ready(self, deployment: ContainerDeployment) -> None:
        import requests

        deadline = time.monotonic() + self.start_timeout
        session = requests.Session()
        session.trust_env = False
        is_async = deployment.package.spec.runtime == "async"
        while time.monotonic() < deadline:
            if deployment.status == FAILED:
                raise DeployError(f"The container exited with code {deployment._exit_code}.")
            try:
                if is_async:
                    with socket.create_connection(("127.0.0.1", deployment.port), timeout=0.5):
                        return
                elif session.get(f"http://127.0.0.1:{deployment.port}{HEALTH_PATH}",
                                 timeout=1).status_code == 200:
                    return
            except (OSError, requests.RequestException):
                pass
            time.sleep(0.05)
        raise DeployError(f"It did not answer within {self.start_timeout:g} s.")


def _remove_created(client: "docker.DockerClient", name: str) -> None:
    import docker

    try:
        client.containers.get(name).remove(force=True)
    except docker.errors.APIError:
        pass


def remove_session_containers() -> None:
    """Remove every container this kernel started (registered with ``atexit``)."""
    for client in list(images._engines.values()):  # none: never talked to an engine
        try:  # every engine this kernel used (DOCKER_HOST may have changed meanwhile)
            for container in client.containers.list(
                    all=True, filters={"label": f"{LABEL_SESSION}={SESSION}"}):
                _remove(container)
        except Exception:
            pass


atexit.register(remove_session_containers)
