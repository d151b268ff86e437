"""The ``yaml`` target: a folder to review and apply with GitOps, nothing run.

For each function it writes ``function.yaml`` (the OpenFunction ``Function``), the build
context under ``build/`` (the image's Dockerfile and files, byte for byte what the container
target builds) and a ``README.md`` with the image build and ``kubectl apply`` commands. The
image is named by the package digest, under ``OFNOTEBOOK_REGISTRY`` when set. When
``OFNOTEBOOK_FUNCTION_CRD`` points at the Function CRD (the cluster's, or the chart's), the
manifest is validated against it before anything is written.

A named component (``--component``, v1beta2) is its own ``dapr.io/v1alpha1`` ``Component`` in
``_components/<name>.yaml`` beside the functions' folders (no function is called
``_components``: names are DNS labels): one file for every function of the folder that uses
it, its ``scopes`` the union of their app ids, so exporting a second function that uses it adds
that function to the file instead of taking the component from the first.

No secret value is written (:mod:`ofnotebook.credentials`): ``--secret-env`` variables and
component credentials are ``secretKeyRef`` s, and the README lists the ``kubectl create secret
generic`` commands that make those Secrets, without the values. The folder is the owner's
only (files 0o600, folders 0o700): the build context holds the captured globals.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

from .. import builders, config
from ..errors import ConfigError, DeployError, UnsupportedError
from ..cluster import ClusterOptions
from ..credentials import kubectl_commands
from ..manifests import (ClusterBuild, add_cluster_build, component_manifests,
                         function_manifest, validate)
from ..package import PRIVATE_DIR, Package, make_private, write_private
from .base import STOPPED, Deployment, PhaseRecorder, TrackedBackend
from .events import EventTracker

WRITTEN = "written"
COMPONENTS_DIR = "_components"

_README = """\
# {name}

Written by ofnotebook for GitOps review: the OpenFunction `Function` and the image's build context.

```bash
docker build -t {image} build/
docker push {image}
{components}kubectl apply -f function.yaml
```

Package digest `{digest}`; Python {python}, cloudpickle {cloudpickle} (the image must run the
same minor Python as the notebook that wrote it). Components use the addresses given in the
notebook: check that they resolve inside the cluster.
"""


_README_BUILT = """\
# {name}

Written by ofnotebook for GitOps review: the OpenFunction `Function` and the image's build context.
The image `{image}` is in the registry already (built and pushed when this was written), so:

```bash
{components}kubectl apply -f function.yaml
```

Package digest `{digest}`; Python {python}, cloudpickle {cloudpickle}. `build/` is the context
the image was made from. Components use the addresses given in the notebook: check that they
resolve inside the cluster.
"""

_README_CLUSTER = """\
# {name}

Written by ofnotebook for GitOps review: the OpenFunction `Function` with an in-cluster build.
The build context is in the registry as the Shipwright source bundle `{bundle}`; OpenFunction
builds it with kaniko (the `Dockerfile` in `build/`) and pushes `{image}`. Apply:

```bash
{components}kubectl apply -f function.yaml
```

Package digest `{digest}`; Python {python}, cloudpickle {cloudpickle}. The cluster needs
OpenFunction's Shipwright build (the `kaniko` ClusterBuildStrategy) and, for a private
registry, the `imageCredentials` secret keyed by the registry's bare `host[:port]`.
"""


def image_reference(package: Package) -> str:
    """The tag a manifest names when no image was pushed: ``OFNOTEBOOK_REGISTRY`` (or a
    ``REGISTRY`` placeholder for the GitOps pipeline to fill) and the package digest, so the
    same cell always names the same image."""
    registry = str(config.get("registry") or "REGISTRY")
    return f"{registry.rstrip('/')}/ofnotebook/{package.spec.name}:{package.digest[:16]}"


def load_crd() -> dict[str, Any] | None:
    """The CRD that ``OFNOTEBOOK_FUNCTION_CRD`` names, to validate the written manifest
    against the cluster's own schema (None: not set). Parsed with libyaml when PyYAML has it:
    the Function CRD (0.4 MB) takes half a second in pure Python, an eighth of that in C."""
    path = str(config.get("function_crd") or "")
    if not path:
        return None
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(Path(path).read_text(), Loader=loader)  # type: ignore[no-any-return]
    except (OSError, ValueError) as exc:
        raise ConfigError(f"OFNOTEBOOK_FUNCTION_CRD={path!r} cannot be read as a CRD ({exc}); "
                          f"fix the path or unset it.", key="function_crd") from None


def write_function(package: Package, folder: Path, options: ClusterOptions | None = None,
                   env: Mapping[str, str] | None = None, *, image: str | None = None,
                   cluster_build: ClusterBuild | None = None) -> Path:
    """Write ``folder/<name>/`` for ``package``; return that directory. Replaces it whole, so
    a re-export leaves no stale file. ``image`` is the pushed image (digest reference) when
    the image was built already; ``cluster_build`` declares OpenFunction's in-cluster build."""
    import yaml

    spec = package.spec
    image = image or image_reference(package)
    manifest = function_manifest(spec, image, options)
    if cluster_build is not None:
        add_cluster_build(manifest, cluster_build)
    if env:
        container = manifest["spec"]["serving"]["template"]["containers"][0]
        known = {item["name"] for item in container.get("env", [])} | set(spec.secret_env)
        container.setdefault("env", []).extend(
            {"name": k, "value": v} for k, v in sorted(env.items()) if k not in known)
    crd = load_crd()
    if crd is not None:
        validate(manifest, crd)
    target = Path(folder) / spec.name
    components = _shared_components(package, Path(folder), manifest) \
        if manifest["apiVersion"].endswith("/v1beta2") else {}
    secrets = kubectl_commands(spec, manifest["metadata"].get("namespace"),
                               standalone=manifest["apiVersion"].endswith("/v1beta2"))
    staging: Path | None = None
    try:
        target.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=target.parent))
        shutil.copytree(package.path, staging / "build")
        make_private(staging)
        readme = _README if "@sha256:" not in image and cluster_build is None else \
            _README_BUILT if cluster_build is None else _README_CLUSTER
        steps = ["# the Secrets it references (values not written here: fill them in)",
                 *secrets] if secrets else []
        steps += [f"kubectl apply -f ../{COMPONENTS_DIR}/{path.name}" for path in components]
        write_private(staging, {
            "function.yaml": yaml.safe_dump(manifest, sort_keys=False).encode(),
            "README.md": readme.format(
                name=spec.name, image=image, digest=package.digest,
                python=package.capture.python_version,
                cloudpickle=package.capture.cloudpickle_version,
                bundle=cluster_build.bundle if cluster_build else "",
                components="".join(f"{step}\n" for step in steps)).encode()})
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        for path, component in components.items():
            write_private(path.parent, {path.name: yaml.safe_dump(component,
                                                                  sort_keys=False).encode()})
    except OSError as exc:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise DeployError(f"Cannot write {target}: {_why_unwritable(target, exc)}. Choose a "
                          f"writable folder: the DIR of %function export, or --out (the yaml "
                          f"target's folder=, OFNOTEBOOK_YAML_DIR).",
                          function_name=spec.name) from None
    return target


def _why_unwritable(target: Path, exc: OSError) -> str:
    """The cause in the user's terms: a path component that is a file (the usual slip, and
    what ``NotADirectoryError`` means), else the OS's own words without the errno noise."""
    for parent in reversed(target.parents):
        if parent.exists() and not parent.is_dir():
            return f"{parent} is a file, not a folder"
    return exc.strerror or str(exc)


def _shared_components(package: Package, folder: Path, function: dict[str, Any]
                       ) -> dict[Path, dict[str, Any]]:
    """The named components' files, each scoped to this function and to those the file
    already names (other functions of the folder that use it)."""
    import yaml

    namespace = function["metadata"].get("namespace")
    out = {}
    for component in component_manifests(package.spec, namespace):
        path = folder / COMPONENTS_DIR / f"{component['metadata']['name']}.yaml"
        try:
            before = yaml.safe_load(path.read_text()) if path.exists() else None
        except (OSError, yaml.YAMLError):
            before = None  # unreadable: written anew
        if isinstance(before, dict) and before.get("kind") == "Component" and \
                before.get("metadata", {}).get("namespace") == namespace:
            component["scopes"] = sorted({*component["scopes"], *before.get("scopes", [])})
        out[path] = component
    return out


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

    # -- nothing runs: the verbs that need a running function say where to go instead -----

    def _unsupported(self, verb: str, what: str) -> UnsupportedError:
        return UnsupportedError(
            f"The yaml target {what}: it wrote {self.folder} and runs nothing; apply that "
            f"folder to a cluster (kubectl apply -f), or use the local target.",
            target="yaml", verb=verb, function_name=self.name)

    def invoke_url(self) -> str:
        raise self._unsupported("invoke", "cannot invoke the function")

    def publish(self, input_name: str, data: bytes, content_type: str) -> None:
        raise self._unsupported("publish", "does not publish test events from the notebook")

    def read_state(self, store: str, key: str) -> dict[str, Any]:
        raise self._unsupported("read_state", "does not read state stores")

    @property
    def events(self) -> EventTracker:
        raise self._unsupported("events", "reports no events")


class YamlBackend(TrackedBackend):
    """Writes each deployed function under ``folder`` (``OFNOTEBOOK_YAML_DIR``)."""

    name: ClassVar[str] = "yaml"

    def __init__(self, folder: str | Path | None = None,
                 options: ClusterOptions | None = None, *, build: str | None = None,
                 registry: str | None = None, platform: str | None = None) -> None:
        self.folder = Path(config.get("yaml_dir", folder))
        self.options = options
        # nothing is built unless asked: the folder's README says how to build it
        self.build = builders.build_mode(build) if build else builders.NO_BUILD
        self.registry = str(config.get("registry", registry) or "")
        self.platform = builders.platform(platform)
        if self.build != builders.NO_BUILD and not self.registry:
            raise ConfigError(f"--build {self.build} pushes to a registry: set "
                              f"OFNOTEBOOK_REGISTRY or --registry.", key="registry")
        super().__init__()

    def deploy(self, package: Package, *, env: Mapping[str, str], local_port: int | None,
               recorder: PhaseRecorder) -> YamlDeployment:
        image, cluster_build = None, None
        if self.build == "cluster":
            bundle = builders.push_source_bundle(package, self.registry, recorder,
                                                 platform_name=self.platform)
            credentials = self.options.image_credentials if self.options else None
            cluster_build = ClusterBuild(bundle=bundle, credentials=credentials)
            image = builders.output_image(package, self.registry)
        elif self.build != builders.NO_BUILD:
            image = builders.push_image(package, self.registry, builders.resolve(self.build),
                                        recorder, platform_name=self.platform)
        with recorder.phase("write", detail=str(self.folder)):
            target = write_function(package, self.folder, self.options, env, image=image,
                                    cluster_build=cluster_build)
        deployment = YamlDeployment(package.spec.name, package, target)
        self._track(deployment)
        return deployment
