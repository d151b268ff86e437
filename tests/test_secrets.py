"""Secrets stay out of files (issue 12 item 9) and duplicate options are refused (item 2).

``--secret-env NAME`` / ``secret_env=[...]``: the value comes from the kernel's environment at
deploy and reaches the target in memory: the local runtime's environment, a Kubernetes
``Secret`` ``<fn>-env`` (the API server double stores it) referenced by ``secretKeyRef``, or in
the yaml bundle a ``secretKeyRef`` and the ``kubectl create secret`` command without the value.
Component credentials (``redisPassword``, AMQP ``user:password@``) go the same way. Every file
written (package, bundle) is grepped for the values, and its mode checked with ``os.stat``.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

import ofnotebook
from ofnotebook import api
from ofnotebook.backends.base import PhaseEvent
from ofnotebook.backends.gitops import YamlBackend
from ofnotebook.backends.kubernetes import KubernetesBackend
from ofnotebook.errors import ConfigError, DeployError
from ofnotebook.magics import FunctionMagics, refuse_duplicates
from ofnotebook.spec import FunctionSpec, is_credential, looks_secret
from tests.helpers import make_function
from tests.k8s_double import KubeDouble
from tests.k8s_double.fixtures import call

TOKEN = "tok-3f9a1c77e2"          # a --secret-env value: must appear in no file
REDIS_PASSWORD = "redis-pw-5b1d2e"
AMQP_PASSWORD = "amqp-pw-77c0aa"
VALUES = (TOKEN, REDIS_PASSWORD, AMQP_PASSWORD)
SECRETS_PATH = "/api/v1/namespaces/demo/secrets"


def reader() -> Any:
    return make_function("import os\n\ndef reader(request):\n"
                         "    return os.environ.get('API_TOKEN', 'unset')\n", name="reader")


def handler() -> Any:
    return make_function("def handle(ctx, data):\n    ctx.send('out', data)\n", name="handle")


def files_holding(root: Path, values: tuple[str, ...]) -> list[str]:
    """The files under ``root`` whose bytes contain one of ``values`` (also base64)."""
    needles = [v.encode() for v in values] + [base64.b64encode(v.encode()) for v in values]
    return [str(p) for p in root.rglob("*") if p.is_file()
            and any(n in p.read_bytes() for n in needles)]


def assert_owner_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("API_TOKEN", TOKEN)
    return TOKEN


# -- names and values that look like secrets ----------------------------------------------------

@pytest.mark.parametrize("name", ["DB_PASSWORD", "api_token", "MY_SECRET_X", "OPENAI_KEY",
                                  "github_Token"])
def test_secret_like_env_names(name: str) -> None:
    assert looks_secret(name)


@pytest.mark.parametrize("name", ["MODEL_PATH", "KEYBOARD", "GREETING", "MONKEY"])
def test_plain_env_names(name: str) -> None:
    assert not looks_secret(name)


@pytest.mark.parametrize("key,value,expected", [
    ("redisPassword", "x", True), ("redisPassword", "", False),
    ("host", "amqp://user:pw@rabbit:5672", True), ("host", "amqp://rabbit:5672", False),
    ("connectionString", "host=db user=u password=p", True), ("url", "http://h/a", False),
    ("saslPassword", "p", True), ("authToken", "t", True)])
def test_component_credentials(key: str, value: str, expected: bool) -> None:
    assert is_credential(key, value) is expected


def test_a_secret_like_env_name_warns_once_with_the_fix(tmp_path: Path) -> None:
    events: list[PhaseEvent] = []
    ofnotebook.deploy(reader(), "warned", target=YamlBackend(tmp_path),
                      env={"DB_PASSWORD": "p", "API_TOKEN": "t", "MODEL": "m"},
                      on_event=events.append)
    warnings = [e.detail for e in events if e.detail.startswith("warning: --env")]
    assert warnings == [
        "warning: --env API_TOKEN, DB_PASSWORD looks like a secret: its value is written into "
        "the package, the image and the exported yaml. Use --secret-env API_TOKEN "
        "(secret_env=['API_TOKEN']) instead: the value is read from the kernel's environment "
        "at deploy and kept out of every file."]


# -- bad input: one message, nothing written ------------------------------------------------------

def test_an_unset_secret_env_without_a_prompt_is_one_error_naming_both_fixes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MISSING_TOKEN", raising=False)
    with pytest.raises(DeployError) as info:
        ofnotebook.deploy(reader(), "unset", target=YamlBackend(tmp_path / "out"),
                          secret_env=["MISSING_TOKEN"])
    assert str(info.value) == (
        "--secret-env MISSING_TOKEN: MISSING_TOKEN is not set in the kernel's environment, and "
        "there is no prompt to ask for it here. Set it before deploying "
        "(os.environ['MISSING_TOKEN'] = ..., or export MISSING_TOKEN=... before starting "
        "Jupyter), or run the cell in a notebook that can prompt for it.")
    assert not (tmp_path / "out").exists()
    assert not any(n == "unset" for _, n in api._handles)


@pytest.mark.parametrize("kwargs,message", [
    ({"secret_env": "API_TOKEN"},
     "secret_env='API_TOKEN' is a string, but secret_env is a list; write "
     "secret_env=['API_TOKEN'] (for example secret_env=['API_TOKEN'])."),
    ({"secret_env": [42]},
     "secret_env item 42 is int; give variable names such as secret_env=['API_TOKEN']."),
    ({"secret_env": ["1BAD"]},
     "Environment variable name '1BAD' is not valid; use letters, digits and '_', not "
     "starting with a digit."),
    ({"secret_env": ["API_TOKEN"], "env": {"API_TOKEN": "x"}},
     "API_TOKEN is given both as --env and as --secret-env; keep only --secret-env "
     "API_TOKEN (its value stays out of every file)."),
])
def test_bad_secret_env_arguments(tmp_path: Path, token: str, kwargs: dict[str, Any],
                                  message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ofnotebook.deploy(reader(), "bad-secret", target=YamlBackend(tmp_path / "out"),
                          **kwargs)
    assert str(info.value) == message
    assert not (tmp_path / "out").exists()


# -- duplicate options on the magic line ---------------------------------------------------------

PARSER = FunctionMagics.function.parser


@pytest.mark.parametrize("line,message", [
    ("--port 8001 --port 8002", "--port is given 2 times (8001, 8002); it takes one value: "
                                "keep the one you mean."),
    ("--runtime sync --runtime async", "--runtime is given 2 times (sync, async); it takes "
                                       "one value: keep the one you mean."),
    ("--target local --target=yaml", "--target is given 2 times (local, yaml); it takes one "
                                     "value: keep the one you mean."),
    ("--por 1 --port 2", "--port is given 2 times (1, 2); it takes one value: keep the one "
                         "you mean."),
    ("--input a=memory://x --input a=memory://y", "--input a is given 2 times; each --input "
                                                  "NAME once (give the others another name)."),
    ("--env K=1 --env K=2", "--env K is given 2 times; each --env NAME once (give the others "
                            "another name)."),
    ("--secret-env T --secret-env T", "--secret-env T is given 2 times; each --secret-env "
                                      "NAME once (give the others another name)."),
])
def test_a_duplicate_option_is_refused_naming_it(line: str, message: str) -> None:
    words = line.split()
    with pytest.raises(ConfigError) as info:
        refuse_duplicates(words, PARSER, PARSER.parse_args(words))
    assert str(info.value) == message


@pytest.mark.parametrize("line", ["--input a=memory://x --input b=memory://y",
                                  "--env A=1 --env B=2 --port 8001", "--secret-env A "
                                  "--secret-env B=s:k"])
def test_repeatable_options_with_different_names_pass(line: str) -> None:
    words = line.split()
    refuse_duplicates(words, PARSER, PARSER.parse_args(words))  # raises on a regression


# -- the yaml target: references and instructions, no value --------------------------------------

COMPONENTS = {"states": {"cache": f"redis://:{REDIS_PASSWORD}@redis.demo.svc:6379"},
              "outputs": {"out": f"amqp://app:{AMQP_PASSWORD}@rabbit.demo.svc:5672/alerts"},
              "inputs": {"logs": "kafka://kafka.demo.svc:9092/logs?group=g"}}


def test_the_yaml_bundle_references_secrets_and_holds_no_value(tmp_path: Path,
                                                               token: str) -> None:
    folder = tmp_path / "out"
    handle = ofnotebook.deploy(handler(), "sec-yaml", target=YamlBackend(folder),
                               secret_env=["API_TOKEN"], **COMPONENTS)
    assert files_holding(folder, VALUES) == []
    assert files_holding(handle.package.path, VALUES) == []
    assert_owner_only(folder / "sec-yaml")
    assert_owner_only(handle.package.path)
    manifest = yaml.safe_load((folder / "sec-yaml" / "function.yaml").read_text())
    serving = manifest["spec"]["serving"]
    assert serving["template"]["containers"][0]["env"] == [
        {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "sec-yaml-env",
                                                             "key": "API_TOKEN"}}}]
    redis = {m["name"]: m for m in serving["states"]["cache"]["spec"]["metadata"]}
    assert redis["redisPassword"] == {"name": "redisPassword", "secretKeyRef": {
        "name": "sec-yaml-env", "key": "cache.redisPassword"}}
    assert redis["redisHost"] == {"name": "redisHost", "value": "redis.demo.svc:6379"}
    amqp = {m["name"]: m for m in serving["pubsub"]["out"]["metadata"]}
    assert amqp["connectionString"]["secretKeyRef"] == {"name": "sec-yaml-env",
                                                       "key": "out.connectionString"}
    readme = (folder / "sec-yaml" / "README.md").read_text()
    assert ("kubectl create secret generic sec-yaml-env "
            "--from-literal=API_TOKEN=\"$API_TOKEN\" --from-literal=cache.redisPassword="
            "'<redisPassword>' --from-literal=out.connectionString='<connectionString>'") in readme


def test_a_named_component_has_its_own_secret_and_secret_store(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    ofnotebook.deploy(handler(), "sec-named", target=YamlBackend(folder),
                      components={"shared-cache": f"redis://:{REDIS_PASSWORD}@redis:6379"},
                      states={"shared-cache": "@shared-cache"},
                      inputs={"logs": "kafka://kafka:9092/logs?group=g"})
    assert files_holding(folder, VALUES) == []
    assert_owner_only(folder / "_components")
    component = yaml.safe_load((folder / "_components" / "shared-cache.yaml").read_text())
    assert component["auth"] == {"secretStore": "kubernetes"}
    password = next(m for m in component["spec"]["metadata"] if m["name"] == "redisPassword")
    assert password["secretKeyRef"] == {"name": "shared-cache-auth",
                                        "key": "shared-cache.redisPassword"}
    assert "kubectl create secret generic shared-cache-auth -n default --from-literal=" \
           "shared-cache.redisPassword='<redisPassword>'" in \
           (folder / "sec-named" / "README.md").read_text()
    ofnotebook.stop("sec-named")  # frees the kernel-wide name for the other tests' definitions


# -- the kubernetes target: a Secret object, replaced on redeploy, gone on stop ------------------

def kube(kubeconfig: str) -> KubernetesBackend:
    return KubernetesBackend(kubeconfig=kubeconfig, build=False, timeout=10)


def test_the_kubernetes_target_creates_replaces_and_removes_the_secret(
        cluster: KubeDouble, kubeconfig: str, monkeypatch: pytest.MonkeyPatch,
        token: str) -> None:
    target = kube(kubeconfig)
    handle = ofnotebook.deploy(handler(), "sec-kube", target=target, secret_env=["API_TOKEN"],
                               **COMPONENTS)
    secret = cluster.secrets.items[("demo", "sec-kube-env")]
    assert cluster.secrets.value("demo", "sec-kube-env", "API_TOKEN") == TOKEN
    assert cluster.secrets.value("demo", "sec-kube-env", "cache.redisPassword") == \
        REDIS_PASSWORD
    assert AMQP_PASSWORD in cluster.secrets.value("demo", "sec-kube-env", "out.connectionString")
    function = cluster.functions[("demo", "sec-kube")]
    assert secret["metadata"]["ownerReferences"][0]["uid"] == function["metadata"]["uid"]
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ofnotebook"
    text = str(function["spec"])
    assert not any(v in text for v in VALUES)
    assert "'secretKeyRef': {'name': 'sec-kube-env', 'key': 'API_TOKEN'}" in text
    assert files_holding(handle.package.path, VALUES) == []
    versions = "ofnotebook.io/secret-versions"
    assert function["spec"]["serving"]["annotations"][versions] == "sec-kube-env=1"
    generation = function["metadata"]["generation"]
    again = ofnotebook.deploy(handler(), "sec-kube", target=target, secret_env=["API_TOKEN"],
                              **COMPONENTS)  # unchanged: nothing applied, the pods stay
    assert again.deployment is handle.deployment
    assert cluster.functions[("demo", "sec-kube")]["metadata"]["generation"] == generation

    monkeypatch.setenv("API_TOKEN", "tok-rotated")  # a redeploy replaces the value in place
    uid = secret["metadata"]["uid"]
    ofnotebook.deploy(handler(), "sec-kube", target=target, secret_env=["API_TOKEN"],
                      **COMPONENTS)
    assert cluster.secrets.value("demo", "sec-kube-env", "API_TOKEN") == "tok-rotated"
    assert cluster.secrets.items[("demo", "sec-kube-env")]["metadata"]["uid"] == uid
    rotated = cluster.functions[("demo", "sec-kube")]  # a new value restarts the pods
    assert rotated["spec"]["serving"]["annotations"][versions] == "sec-kube-env=2"

    ofnotebook.stop("sec-kube")
    assert ("demo", "sec-kube-env") not in cluster.secrets.items


def test_someone_elses_secret_is_not_replaced(cluster: KubeDouble, kubeconfig: str,
                                              token: str) -> None:
    theirs = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec-taken-env"},
              "data": {"API_TOKEN": base64.b64encode(b"theirs").decode()}}
    assert call(cluster, "POST", SECRETS_PATH, theirs).status_code == 201
    with pytest.raises(DeployError) as info:
        ofnotebook.deploy(reader(), "sec-taken", target=kube(kubeconfig),
                          secret_env=["API_TOKEN"])
    assert str(info.value) == (
        "A Secret 'sec-taken-env' exists in namespace 'demo' and ofnotebook did not create it, "
        "so it is not replaced; rename the function (or the component), or delete that Secret "
        "(kubectl delete secret sec-taken-env -n demo).")
    assert cluster.secrets.value("demo", "sec-taken-env", "API_TOKEN") == "theirs"
    assert ("demo", "sec-taken") not in cluster.functions


def test_the_double_serves_secrets_as_the_api_server_does(cluster: KubeDouble) -> None:
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"},
            "stringData": {"k": "v"}}
    created = call(cluster, "POST", SECRETS_PATH, body)
    assert created.status_code == 201
    assert created.json()["data"] == {"k": base64.b64encode(b"v").decode()}
    again = call(cluster, "POST", SECRETS_PATH, body)
    assert (again.status_code, again.json()["reason"]) == (409, "AlreadyExists")
    missing = call(cluster, "GET", SECRETS_PATH + "/nope")
    assert (missing.status_code, missing.json()["message"]) == (404, 'secrets "nope" not found')
    rv = created.json()["metadata"]["resourceVersion"]
    stale = dict(body, metadata={"name": "s1", "resourceVersion": str(int(rv) - 1)})
    conflict = call(cluster, "PUT", SECRETS_PATH + "/s1", stale)
    assert (conflict.status_code, conflict.json()["reason"]) == (409, "Conflict")
    fresh = dict(body, metadata={"name": "s1", "resourceVersion": rv},
                 stringData={"k": "w"})
    replaced = call(cluster, "PUT", SECRETS_PATH + "/s1", fresh)
    assert replaced.status_code == 200 and replaced.json()["metadata"]["resourceVersion"] != rv
    assert cluster.secrets.value("demo", "s1", "k") == "w"
    bad = call(cluster, "POST", SECRETS_PATH, {"metadata": {"name": "s2"},
                                               "data": {"k": "not base64!"}})
    assert bad.status_code == 422
    assert call(cluster, "DELETE", SECRETS_PATH + "/s1").status_code == 200
    assert call(cluster, "DELETE", SECRETS_PATH + "/s1").status_code == 404


# -- the local target: the value in the process environment, not in the package ---------------

def test_the_local_target_gets_the_value_in_memory(local_backend: Any, token: str) -> None:
    handle = ofnotebook.deploy(reader(), "sec-local", target=local_backend,
                               secret_env=["API_TOKEN"])
    assert handle.invoke().text == TOKEN
    assert files_holding(handle.package.path, VALUES) == []
    assert_owner_only(handle.package.path)
    assert not any(TOKEN in line for line in handle.logs())
    handle.stop()


def test_a_spec_keeps_only_the_names() -> None:
    spec = FunctionSpec(name="names-only", secret_env=("API_TOKEN",))
    assert spec.secret_env == ("API_TOKEN",) and TOKEN not in repr(spec)


def test_a_named_component_on_kubernetes_gets_its_own_secret(cluster: KubeDouble,
                                                             kubeconfig: str) -> None:
    ofnotebook.deploy(handler(), "sec-comp", target=kube(kubeconfig),
                      components={"shared-cache": f"redis://:{REDIS_PASSWORD}@redis:6379"},
                      states={"shared-cache": "@shared-cache"},
                      inputs={"logs": "kafka://kafka:9092/logs?group=g"})
    assert cluster.secrets.value("demo", "shared-cache-auth", "shared-cache.redisPassword") \
        == REDIS_PASSWORD
    component = cluster.components.items[("demo", "shared-cache")]
    assert component["auth"] == {"secretStore": "kubernetes"}
    assert REDIS_PASSWORD not in str(component)
    owners = cluster.secrets.items[("demo", "shared-cache-auth")]["metadata"]["ownerReferences"]
    function = cluster.functions[("demo", "sec-comp")]
    assert [o["uid"] for o in owners] == [function["metadata"]["uid"]]
    assert ("demo", "sec-comp-env") not in cluster.secrets.items  # nothing of its own
    ofnotebook.stop("sec-comp")  # the garbage collector takes it with its last owner
    assert ("demo", "shared-cache-auth") not in cluster.secrets.items


def test_the_magic_takes_secret_env_names_and_export_writes_no_value(
        ip: Any, tmp_path: Path, token: str, capsys: pytest.CaptureFixture[str]) -> None:
    handle = ip.run_cell_magic(
        "function", "sec-magic --secret-env API_TOKEN --secret-env OTHER=their-secret:key",
        "import os\n\ndef reader(request):\n    return os.environ.get('API_TOKEN', 'unset')\n")
    assert handle.invoke().text == TOKEN
    ip.run_line_magic("function", f"export sec-magic {tmp_path}")
    bundle = tmp_path / "sec-magic"
    assert files_holding(bundle, VALUES) == []
    assert_owner_only(bundle)
    env = yaml.safe_load((bundle / "function.yaml").read_text())[
        "spec"]["serving"]["template"]["containers"][0]["env"]
    assert env == [
        {"name": "OTHER", "valueFrom": {"secretKeyRef": {"name": "their-secret", "key": "key"}}},
        {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "sec-magic-env",
                                                             "key": "API_TOKEN"}}}]
    assert 'kubectl create secret generic sec-magic-env --from-literal=API_TOKEN="$API_TOKEN"' \
        in (bundle / "README.md").read_text()


def test_the_magic_refuses_a_duplicate_option_before_running_the_cell(ip: Any) -> None:
    with pytest.raises(ConfigError) as info:
        ip.run_cell_magic("function", "dup --port 8001 --port 8002",
                          "RAN = True\ndef f(request):\n    return 'x'\n")
    assert str(info.value) == ("--port is given 2 times (8001, 8002); it takes one value: "
                               "keep the one you mean.")
    assert "RAN" not in ip.user_ns and not any(n == "dup" for _, n in api._handles)


def test_the_same_env_variable_twice_in_a_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        ofnotebook.deploy(reader(), "env-twice", target=YamlBackend(tmp_path / "out"),
                          env=["MODE=a", "MODE=b"])
    assert str(info.value) == ("--env MODE is given twice (MODE=a, MODE=b); give each "
                               "variable once.")
    assert not (tmp_path / "out").exists()


def test_v1beta1_keeps_every_credential_in_the_functions_secret(tmp_path: Path) -> None:
    from ofnotebook.backends.gitops import write_function
    from ofnotebook.cluster import ClusterOptions
    from ofnotebook.manifests import validate
    from tests.helpers import shared_file

    handle = ofnotebook.deploy(handler(), "sec-beta1", target=YamlBackend(tmp_path / "a"),
                               components={"shared-cache": f"redis://:{REDIS_PASSWORD}@r:6379"},
                               states={"shared-cache": "@shared-cache"},
                               inputs={"logs": "kafka://kafka:9092/logs?group=g"})
    bundle = write_function(handle.package, tmp_path / "b", ClusterOptions(api_version="v1beta1"))
    manifest = yaml.safe_load((bundle / "function.yaml").read_text())
    validate(manifest, yaml.safe_load(shared_file("schemas/openfunction-function-crd.yaml")
                                      .read_text()))
    password = next(m for m in manifest["spec"]["serving"]["states"]["shared-cache"]["metadata"]
                    if m["name"] == "redisPassword")
    assert password["secretKeyRef"] == {"name": "sec-beta1-env",
                                        "key": "shared-cache.redisPassword"}
    assert files_holding(tmp_path / "b", VALUES) == []
    assert "kubectl create secret generic sec-beta1-env --from-literal=shared-cache." \
           "redisPassword='<redisPassword>'" in (bundle / "README.md").read_text()
