"""The ``yaml`` target: a folder to review and apply with GitOps, nothing run.

For each function it writes ``function.yaml`` (the OpenFunction ``Function``), the build
context under ``build/`` (the image's Dockerfile and files, byte for byte what the container
target builds) and a ``README.md`` with the image build and ``kubectl apply`` commands. The
image is named by the package digest, under ``OFNOTEBOOK_REGISTRY`` when set. When
``OFNOTEBOOK_FUNCTION_CRD`` points at the Function CRD (the cluster's, or the chart's), the
manifest is validated against it before anything is written.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable, ClassVar, Mapping

from .. import config
from ..errors import ConfigError, DeployError
from ..manifests import ClusterOptions, function_manifest, validate
from ..package import Package
from .base import STOPPED, Deployment, PhaseRecorder, TrackedBackend

WRITTEN = "written"

_README = """\
# {name}

Written by ofnotebook for GitOps review: the OpenFunction `Function` and the image's build context.

```bash
docker build -t {image} build/
docker push {image}
kubectl apply -f function.yaml
```

Package digest `{digest}`; Python {python}, cloudpickle {cloudpickle} (the image must run the
same minor Python as the notebook that wrote it). Components use the addresses given in the
notebook: check that they resolve inside the cluster.
"""


def image_reference(package: Package) -> str:
    registry = str(config.get("registry") or "REGISTRY")
    return f"{registry.rstrip('/')}/ofnotebook/{package.spec.name}:{package.digest[:16]}"


def load_crd() -> dict | None:
    path = str(config.get("function_crd") or "")
    if not path:
        return None
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError) as exc:
        raise ConfigError(f"OFNOTEBOOK_FUNCTION_CRD={path!r} cannot be read as a CRD ({exc}); "
                          f"fix the path or unset it.", key="function_crd") from None


def write_function(package: Package, folder: Path, options: ClusterOptions | None = None,
                   env: Mapping[str, str] | None = None) -> Path:
    """Write ``folder/<name>/`` for ``package``; return that directory. Replaces it whole, so
    a re-export leaves no stale file."""
    import yaml

    spec = package.spec
    manifest = function_manifest(spec, image_reference(package), options)
    if env:
        container = manifest["spec"]["serving"]["template"]["containers"][0]
        known = {item["name"] for item in container.get("env", [])}
        container.setdefault("env", []).extend(
            {"name": k, "value": v} for k, v in sorted(env.items()) if k not in known)
    crd = load_crd()
    if crd is not None:
        validate(manifest, crd)
    target = Path(folder) / spec.name
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=target.parent))
    try:
        (staging / "function.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        shutil.copytree(package.path, staging / "build")
        (staging / "README.md").write_text(_README.format(
            name=spec.name, image=image_reference(package), digest=package.digest,
            python=package.capture.python_version,
            cloudpickle=package.capture.cloudpickle_version))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise DeployError(f"Cannot write {target}: {exc}. Choose a writable folder "
                          f"(OFNOTEBOOK_YAML_DIR).", function_name=spec.name) from None
    return target


class YamlDeployment(Deployment):
    """A function written to a folder: ``url`` is that folder; nothing runs."""

    def __init__(self, name: str, package: Package, folder: Path) -> None:
        self.name, self.package, self.folder = name, package, folder
        self.url = folder.resolve().as_uri()
        self._status = WRITTEN

    @property
    def status(self) -> str:
        return self._status

    @property
    def failure(self) -> str | None:
        return None

    def logs(self, tail: int | None = None) -> list[str]:
        return [f"written to {self.folder}"]

    def subscribe_logs(self, callback: Callable[[str], None]) -> Callable[[], None]:
        return lambda: None

    def stop(self) -> None:
        self._status = STOPPED  # the files stay: they are the point


class YamlBackend(TrackedBackend):
    """Writes each deployed function under ``folder`` (``OFNOTEBOOK_YAML_DIR``)."""

    name: ClassVar[str] = "yaml"

    def __init__(self, folder: str | Path | None = None,
                 options: ClusterOptions | None = None) -> None:
        self.folder = Path(config.get("yaml_dir", folder))
        self.options = options
        super().__init__()

    def deploy(self, package: Package, *, env: Mapping[str, str], local_port: int | None,
               recorder: PhaseRecorder) -> YamlDeployment:
        with recorder.phase("write", detail=str(self.folder)):
            target = write_function(package, self.folder, self.options, env)
        deployment = YamlDeployment(package.spec.name, package, target)
        self._track(deployment)
        return deployment
