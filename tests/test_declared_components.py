"""Components a deploy declares by name and its function calls only through the Dapr SDK
(``invoke_binding("kafka-server", ...)``, ``save_state("st", ...)``, ``get_secret("vault",
...)``): they are the function's (``FunctionSpec.components``) on every target; the user's
own ``dapr.ext.grpc.App`` registered with ``ofnotebook.dapr_env(app_id=, app_port=)`` gets its
``@app.subscribe`` topics; and an output binding's operation is checked at deploy against
the operations Dapr's component metadata lists."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from dapr.ext.grpc import SubscriptionMessage  # module level: the SDK reads the annotation

import ofnotebook
from ofnotebook import api, named
from ofnotebook.backends.gitops import YamlBackend
from ofnotebook.components import (BINDING_OPERATIONS, Component, parse_components,
                                   parse_items)
from ofnotebook.errors import ConfigError
from ofnotebook.request import DeployRequest
from tests.helpers import free_port, make_function, runtime_children, shared_file, uid, wait_for
from tests.test_named_components import fresh_kernel_table  # noqa: F401  (autouse)


def _spec(fn_source: str = "def f(request):\n    return 'ok'\n", **request: Any) -> Any:
    return api.plan(make_function(fn_source, name="f"),
                    DeployRequest(name=request.pop("name", "caller"), **request)).spec()


# -- the spec: declared and not used is the function's; an earlier cell's stays the kernel's --

def test_a_declared_component_the_code_calls_by_name_is_part_of_the_function() -> None:
    spec = _spec(target="yaml", components={"st": "redis://127.0.0.1:6379",
                                            "out": "http://127.0.0.1:9/x",
                                            "tick": "cron://@every 1s"},
                 outputs={"o": "@out"})
    assert [(c.component, c.type, c.topic, c.operation) for c in spec.components] == [
        ("st", "state.redis", None, None)]  # out is an output; an unused cron only triggers
    assert spec.uses_components and spec.needs_dapr and spec.runtime == "sync"
    # declared in an earlier cell and not referenced: the kernel's, not this function's
    named.remember(parse_components({"older": "redis://127.0.0.1:6379"}))
    later = _spec(target="yaml")
    assert later.components == () and not later.needs_dapr


def test_secret_stores_are_declared_as_components_and_nothing_else_is() -> None:
    vault = Component("secretstores.local.env", {"prefix": "APP_"}, name="vault")
    spec = _spec(target="local", components=[vault])
    assert [(c.component, c.type) for c in spec.components] == [
        ("vault", "secretstores.local.env")]
    with pytest.raises(ConfigError, match="a component must be a bindings.\\*, pubsub.\\*, "
                                          "state.\\*, secretstores.\\* one"):
        parse_components([Component("configuration.redis", name="cfg")])
    with pytest.raises(ConfigError, match="must start with bindings., pubsub. or state."):
        parse_items({"v": vault}, "output")  # a secret store is no output


# -- kubernetes / yaml: standalone, scoped Components; v1beta1 inline; local stores refused --

def test_the_yaml_target_writes_the_declared_components_scoped_to_the_function(
        tmp_path: Path) -> None:
    fn = make_function("def f(request):\n    return 'ok'\n", name="f")
    written = ofnotebook.deploy(fn, "caller", target=YamlBackend(tmp_path),
                                components={"st": "redis://redis.default.svc:6379",
                                            "vault": Component("secretstores.kubernetes",
                                                               name="vault")})
    written.stop()  # the kernel forgets it: later tests declare 'st' anew
    function = yaml.safe_load((tmp_path / "caller" / "function.yaml").read_text())
    assert function["spec"]["serving"]["annotations"]["openfunction.io/enable-dapr"] == "true"
    assert function["metadata"]["namespace"] == "default"
    for name, type_ in (("st", "state.redis"), ("vault", "secretstores.kubernetes")):
        component = yaml.safe_load((tmp_path / "_components" / f"{name}.yaml").read_text())
        assert (component["kind"], component["spec"]["type"], component["scopes"]) == (
            "Component", type_, ["caller-default"])
    readme = (tmp_path / "caller" / "README.md").read_text()
    assert "kubectl apply -f ../_components/st.yaml" in readme


def test_v1beta1_keeps_them_inline_and_refuses_what_cannot_be_inline() -> None:
    from ofnotebook.manifests import ClusterOptions, function_manifest

    spec = _spec(target="yaml", components={"st": "redis://redis:6379",
                                            "bus": "redis://redis:6379/orders"})
    serving = function_manifest(spec, "img", ClusterOptions(api_version="v1beta1"))["spec"][
        "serving"]
    assert serving["states"]["st"]["type"] == "state.redis"
    assert serving["pubsub"]["bus"]["type"] == "pubsub.redis"
    vault = _spec(target="yaml", components=[Component("secretstores.kubernetes", name="v")])
    with pytest.raises(ConfigError, match="cannot be written in a v1beta1 Function.*"
                                          "--api-version v1beta2"):
        function_manifest(vault, "img", ClusterOptions(api_version="v1beta1"))


def test_a_local_secret_store_is_refused_on_a_cluster_with_the_fix(tmp_path: Path) -> None:
    fn = make_function("def f(request):\n    return 'ok'\n", name="f")
    with pytest.raises(ConfigError) as info:
        ofnotebook.deploy(fn, "caller", target=YamlBackend(tmp_path), components=[
            Component("secretstores.local.file", {"secretsFile": "s.json"}, name="vault")])
    assert "secretstores.local.file secret store" in str(info.value)
    assert "Component('secretstores.kubernetes', name='vault')" in str(info.value)
    assert not (tmp_path / "caller").exists() and not (tmp_path / "_components").exists()


# -- output binding operations: checked at deploy, against Dapr's component metadata ---------

def test_the_operations_table_is_the_one_of_daprs_component_metadata() -> None:
    folder = shared_file("schemas/dapr-components-metadata")
    found = {}
    for path in sorted(folder.glob("bindings_*.yaml")):
        meta = yaml.safe_load(path.read_text())
        binding = meta.get("binding") or {}
        if binding.get("output"):
            found[f"{meta['type']}.{meta['name']}"] = tuple(
                op["name"] for op in binding.get("operations") or [])
    assert found == BINDING_OPERATIONS, (
        "ofnotebook/components.py BINDING_OPERATIONS is out of date; it should be:\n"
        + json.dumps(found, indent=1))


@pytest.mark.parametrize("value", [
    "http://127.0.0.1:9/x?operation=bogus", "@hook?operation=bogus",
    Component("bindings.http", {"url": "http://127.0.0.1:9/x"}, operation="bogus")])
def test_an_unknown_operation_of_an_output_binding_is_refused_at_deploy(
        value: Any, local_backend: Any) -> None:
    running = {p.pid for p in runtime_children()}
    with pytest.raises(ConfigError) as info:
        ofnotebook.deploy(make_function("def f(request):\n    return 'ok'\n", name="f"),
                          "bogus-op", target=local_backend, outputs={"o": value},
                          components={"hook": "http://127.0.0.1:9/hook"})
    assert str(info.value) == (
        "Output 'o': operation 'bogus' is not one of the operations of bindings.http (create, "
        "get, head, post, put, patch, delete, options, trace); e.g. ?operation=create.")
    assert "bogus-op" not in [h.name for h in ofnotebook.deployments()]
    assert {p.pid for p in runtime_children()} <= running
    with pytest.raises(ConfigError, match="--component 'k': operation 'post' is not one of "
                                          "the operations of bindings.kafka \\(create\\)"):
        parse_components({"k": "kafka://127.0.0.1:9092/t?operation=post"})
    # a type whose operations are not known is not checked
    (custom,) = parse_items({"o": Component("bindings.smtp", {}, operation="send")}, "output")
    assert custom.operation == "send"


# -- locally: the function calls them by name through the unmodified SDK ----------------------

CALLER = """
def caller(request):
    from dapr.clients import DaprClient
    with DaprClient() as d:
        d.save_state("st", "k", request.get_data())
        got = d.get_state("st", "k").data.decode()
        secret = dict(d.get_secret("vault", "db:password").secret)
        return {"state": got, "secret": secret, "app": d.get_metadata().application_id}
"""


@pytest.mark.broker
def test_a_function_calls_a_declared_state_store_and_secret_store_by_name(
        local_backend: Any, tmp_path: Path) -> None:
    import redis

    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"db": {"password": "pw"}}))
    name = f"decl-{uid()}"
    handle = ofnotebook.deploy(make_function(CALLER, name="caller"), name,
                               target=local_backend, components={
                                   "st": "redis://127.0.0.1:6379",
                                   "vault": Component("secretstores.local.file",
                                                      {"secretsFile": str(secrets)})})
    try:
        assert handle.invoke(data=b"v1").json() == {
            "state": "v1", "secret": {"db:password": "pw"}, "app": name}
        assert redis.Redis().hget(f"{name}||k", "data") == b"v1"  # its own key prefix
    finally:
        redis.Redis().delete(f"{name}||k")


# -- the user's own dapr.ext.grpc App, registered with dapr_env(app_id=, app_port=) -------------

@pytest.mark.broker
def test_a_users_dapr_grpc_app_gets_its_subscribed_topics() -> None:
    from dapr.clients import DaprClient
    from dapr.ext.grpc import App

    topic, got = f"orders-{uid()}", []
    app = App()

    @app.subscribe(pubsub_name="orders-bus", topic=topic)
    def orders(event: SubscriptionMessage) -> None:
        got.append((event.data(), event.source()))

    port = free_port()
    threading.Thread(target=app.run, args=(port, "127.0.0.1"), daemon=True).start()
    try:
        env = ofnotebook.dapr_env({"orders-bus": f"redis://127.0.0.1:6379/{topic}"},
                                  app_id="my-app", app_port=port)
        notebook = ofnotebook.dapr_env()
        assert env["DAPR_API_TOKEN"] != notebook["DAPR_API_TOKEN"]  # each app its own
        os.environ.update(env)
        with DaprClient() as client:
            assert client.get_metadata().application_id == "my-app"
        os.environ.update(notebook)
        with DaprClient() as client:
            client.publish_event("orders-bus", topic, json.dumps({"n": 1}),
                                 data_content_type="application/json")
        wait_for(lambda: got, 30, lambda: "nothing delivered to my-app")
        assert got == [({"n": 1}, named.NOTEBOOK_APP)]  # published by the notebook's client
    finally:
        app.stop()


def test_bad_app_registrations_are_refused_with_the_fix() -> None:
    for kwargs, message in [
            ({"app_id": "My_App"}, "'My_App' is not a valid Dapr component name"),
            ({"app_id": "a", "app_port": 0}, "is not a TCP port"),
            ({"app_port": 50051}, "needs app_id")]:
        with pytest.raises(ConfigError, match=message):
            ofnotebook.dapr_env(**kwargs)


def test_the_dapr_line_magic_registers_an_app_by_its_id(ip: Any) -> None:
    from dapr.clients import DaprClient

    from ofnotebook.errors import OfnotebookError

    ip.run_line_magic("function", "dapr --app-id script-app")
    with DaprClient() as client:  # the exported variables carry that app's own token
        assert client.get_metadata().application_id == "script-app"
    for line in ("dapr --app-port x", "dapr --app-id", "dapr --port 1"):
        with pytest.raises(OfnotebookError, match="Usage: %function dapr"):
            ip.run_line_magic("function", line)


def test_a_publish_through_a_declared_pubsub_is_one_of_the_functions_outputs(
        local_backend: Any) -> None:
    """The code publishes with the SDK by the component's name: the event shows in the
    function's outputs (its view) as a ctx.send would."""
    fn = make_function("from dapr.clients import DaprClient\n"
                       "def shout(request):\n"
                       "    with DaprClient() as d:\n"
                       "        d.publish_event('bus', 'alerts', request.get_data())\n"
                       "    return 'sent'\n", name="shout")
    handle = ofnotebook.deploy(fn, f"pub-{uid()}", target=local_backend,
                               components={"bus": f"memory://x?bus=b-{uid()}"})
    assert handle.invoke(data=b'{"level": 3}', headers={
        "Content-Type": "application/json"}).text == "sent"
    out = handle.wait_for_outputs(1, timeout=10)
    assert out[0].name == "bus" and out[0].data == {"level": 3}
