"""Components by name: declared once (``--component NAME=URI``, ``components=``, a named
``Component``), used as ``@NAME`` by this and later deploys, registered with the stand-in
under exactly that name for every client, the notebook's own Dapr SDK code included
(``ofnotebook.dapr_env()``, ``%function dapr``); and the operation of an output in its URI."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from typing import Any, Iterator

import pytest

import ofnotebook
from ofnotebook import api, named
from ofnotebook.backends.standin import get_standin
from ofnotebook.components import (DECLARATION, Component, parse_components, parse_items,
                                   parse_uri)
from ofnotebook.context import context_v1beta1, context_v1beta2
from ofnotebook.errors import ConfigError
from ofnotebook.spec import FunctionSpec
from tests.helpers import make_function, runtime_children, uid, wait_for


@pytest.fixture(autouse=True)
def fresh_kernel_table() -> Iterator[None]:
    """Each test starts with a kernel that declared nothing; the notebook's client, its
    environment and any ``dapr.conf.settings`` it set are undone afterwards."""
    saved = dict(os.environ)
    named._table.clear()
    named._client_components.clear()
    try:
        yield
    finally:
        if named._client_standin is not None and named._client_standin.alive:
            for app in list(named._client_components):
                named._client_standin.unregister(app)
        named._client_standin = None
        named._table.clear()
        named._client_components.clear()
        os.environ.clear()
        os.environ.update(saved)
        settings = getattr(sys.modules.get("dapr.conf"), "settings", None)
        for key in list(vars(settings) if settings is not None else ()):
            delattr(settings, key)  # values pinned on the SDK's settings by export


# -- declarations ------------------------------------------------------------------------------

def test_a_declaration_in_every_form_is_one_component_of_that_name() -> None:
    named_obj = Component("bindings.http", {"url": "http://127.0.0.1:1/x"}, name="hook")
    found = parse_components(["bus=memory://orders", named_obj])
    found.update(parse_components({"cache": "redis://127.0.0.1:6379",
                                   "raw": Component("state.in-memory", {"bus": "b"})}))
    assert {n: (c.name, c.type) for n, c in found.items()} == {
        "bus": ("bus", "pubsub.in-memory"), "hook": ("hook", "bindings.http"),
        "cache": ("cache", "state.redis"), "raw": ("raw", "state.in-memory")}
    # the same definition twice is one declaration, not a conflict
    assert parse_components(["bus=memory://orders", "bus=memory://orders"])["bus"].topic == \
        "orders"


def test_a_declaration_takes_its_kind_from_the_uri_alone() -> None:
    kafka = parse_uri("kafka-server", "kafka://kafka:9092/sample-topic?initialOffset=oldest",
                      DECLARATION)
    # either role: Dapr's binding reads `topics` and writes `publishTopic`; the group is its name
    assert dict(kafka.metadata) == {"topics": "sample-topic", "consumerGroup": "kafka-server",
                                    "publishTopic": "sample-topic", "brokers": "kafka:9092",
                                    "authType": "none", "initialOffset": "oldest"}
    kinds = {uri: parse_uri("c", uri, DECLARATION).type for uri in (
        "redis://127.0.0.1:6379", "redis://127.0.0.1:6379/orders", "memory://", "memory://t",
        "postgresql://postgres@127.0.0.1/db", "nats://127.0.0.1", "cron://@every 1s")}
    assert kinds == {"redis://127.0.0.1:6379": "state.redis",
                     "redis://127.0.0.1:6379/orders": "pubsub.redis",
                     "memory://": "state.in-memory", "memory://t": "pubsub.in-memory",
                     "postgresql://postgres@127.0.0.1/db": "state.postgresql",
                     "nats://127.0.0.1": "pubsub.jetstream", "cron://@every 1s": "bindings.cron"}
    assert parse_uri("c", "nats://127.0.0.1", DECLARATION).topic is None  # given by each use


@pytest.mark.parametrize("items, message", [
    (["kafka-in"], "--component 'kafka-in' is not NAME=URI; write it as --component "
                   "kafka-in=kafka://"),
    (["=memory://t"], "is not NAME=URI"),
    (["Bad_Name=memory://t"], "'Bad_Name' is not a valid Dapr component name; use at most 63 "
                              "lowercase letters, digits and '-'"),
    ([f"{'a' * 64}=memory://t"], "is not a valid Dapr component name"),
    (["x="], "--component 'x' needs a URI or an ofnotebook.Component"),
    (["x=ftp://h/t"], "unknown scheme 'ftp'"),
    (["x=memory://a", "x=redis://127.0.0.1:6379/a"], "Component 'x' is declared twice with "
                                                     "different definitions"),
    ([Component("state.in-memory")], "needs a name"),
    ({"x": Component("state.in-memory", name="y")}, "the Component given is named 'y'"),
])
def test_a_bad_declaration_is_one_clear_error(items: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_components(items)
    assert message in str(info.value)


# -- references ---------------------------------------------------------------------------------

DECLARED = parse_components({
    "kafka-receiver": "kafka://127.0.0.1:9092/logs",
    "orders": "redis://127.0.0.1:6379/orders",
    "cache": "redis://127.0.0.1:6379",
    "alerts": "http://127.0.0.1:9/alerts?operation=post",
    "bus": "nats://127.0.0.1",
})


def test_a_reference_uses_the_component_by_its_exact_name_with_the_uses_topic_and_operation(
        ) -> None:
    inputs = parse_items({"kafka": "@kafka-receiver", "o": "@orders", "b": "@bus/in"}, "input",
                         app="fn", components=DECLARED)
    outputs = parse_items(["notify=@alerts", "again=@alerts?operation=put", "o2=@orders/other"],
                          "output", app="fn", components=DECLARED)
    states = parse_items({"store": "@cache"}, "state", components=DECLARED)
    assert [(c.name, c.component, c.topic) for c in inputs] == [
        ("kafka", "kafka-receiver", None), ("o", "orders", "orders"), ("b", "bus", "in")]
    assert [(c.component, c.operation, c.topic) for c in outputs] == [
        ("alerts", "post", None), ("alerts", "put", None), ("orders", None, "other")]
    assert states[0].component == "cache" and states[0].type == "state.redis"
    # the definition is the declaration's, whichever function uses it (no per-app group)
    assert dict(inputs[0].metadata)["consumerGroup"] == "kafka-receiver"
    spec = FunctionSpec(name="fn", runtime="async", inputs=inputs, outputs=outputs,
                        states=states)
    v1, v2 = context_v1beta1(spec), context_v1beta2(spec)
    assert v1["inputs"]["kafka"]["componentName"] == "kafka-receiver"
    assert v2["triggers"]["dapr"][1] == {"name": "orders", "type": "pubsub.redis",
                                         "topic": "orders"}
    assert v1["outputs"]["again"]["operation"] == "put"
    assert v2["outputs"]["notify"] == {"componentName": "alerts",
                                       "componentType": "bindings.http", "operation": "post"}
    assert v2["states"]["store"]["componentName"] == "cache"


@pytest.mark.parametrize("role, value, message", [
    ("input", "@missing", "Input 'x' uses component 'missing', which is not declared "
                          "(declared: alerts, bus, cache, kafka-receiver, orders). Declare it "
                          "with --component missing=URI"),
    ("input", "@cache", "Input 'x' cannot be a state store"),
    ("state", "@orders", "State store 'x' needs a state.* component"),
    ("output", "@bus", "Pub/sub output 'x' needs a topic (@bus/TOPIC)"),
    ("input", "@alerts", "a bindings.http component can only be an output"),
    ("output", "@kafka-receiver/t", "gives a topic, but 'kafka-receiver' is a bindings.kafka"),
    ("input", "@orders?operation=post", "an operation applies to outputs only"),
    ("output", "@alerts?group=g", "a reference takes only ?operation=OP"),
    ("output", "@Bad_Name", "'Bad_Name' is not a valid Dapr component name"),
])
def test_a_bad_reference_is_one_clear_error(role: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_items({"x": value}, role, components=DECLARED)
    assert message in str(info.value)


# -- operations in URIs -------------------------------------------------------------------------

def test_the_operation_of_an_output_comes_from_its_uri() -> None:
    (notify,) = parse_items({"notify": "http://127.0.0.1:9/alerts?a=1&operation=post&b=%202"},
                            "output")
    assert notify.operation == "post"
    assert dict(notify.metadata) == {"url": "http://127.0.0.1:9/alerts?a=1&b=%202"}
    (plain,) = parse_items({"n": "http://127.0.0.1:9/alerts"}, "output")
    assert plain.operation == "create" and dict(plain.metadata)["url"].endswith("/alerts")
    (kafka,) = parse_items({"k": "kafka://127.0.0.1:9092/t?operation=create"}, "output")
    assert kafka.operation == "create" and "operation" not in dict(kafka.metadata)
    for role, value, message in [
            ("input", "kafka://127.0.0.1:9092/t?operation=create", "applies to outputs only"),
            ("output", "http://127.0.0.1:9/a?operation=", "?operation= is empty"),
            ("output", Component("pubsub.redis", {}, topic="t", operation="post"),
             "an operation applies to output bindings only")]:
        with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
            parse_items({"x": value}, role)


# -- through deploys: the kernel's table, conflicts, nothing deployed on bad input ------------

CONSUMER = "def consume(ctx, data):\n    ctx.send('seen', data)\n"
PRODUCER = "def produce(ctx, data):\n    ctx.send('out', data)\n    return 'ok'\n"


def test_a_later_deploy_uses_an_earlier_declaration_and_a_conflict_deploys_nothing(
        local_backend: Any) -> None:
    bus = f"memory://t-{uid()}?bus=b-{uid()}"
    first = ofnotebook.deploy(make_function(PRODUCER, name="produce"), "named-first",
                              target=local_backend, components=[f"shared-bus={bus}"],
                              outputs={"out": "@shared-bus"})
    assert "shared-bus" in api.declared_components()
    # a later cell: no --component, the kernel knows it
    second = ofnotebook.deploy(make_function(PRODUCER, name="produce"), "named-second",
                               target=local_backend, outputs={"out": "@shared-bus"})
    assert second.package.spec.outputs[0].component == "shared-bus"
    assert first.invoke(json={"i": 1}).text == second.invoke(json={"i": 2}).text == "ok"
    spawned = {p.pid for p in runtime_children()}
    with pytest.raises(ConfigError) as info:
        ofnotebook.deploy(make_function(PRODUCER, name="produce"), "named-third",
                          target=local_backend, outputs={"out": "@shared-bus"},
                          components={"shared-bus": "memory://another"})
    assert ("Component 'shared-bus' is in use by 'named-first', 'named-second' as "
            "pubsub.in-memory" in str(info.value)) and "%function stop NAME" in str(info.value)
    assert {p.pid for p in runtime_children()} == spawned
    assert "named-third" not in [h.name for h in ofnotebook.deployments()]
    # once nothing uses it, a new definition replaces the old one
    first.stop()
    second.stop()
    third = ofnotebook.deploy(make_function(PRODUCER, name="produce"), "named-third",
                              target=local_backend, outputs={"out": "@shared-bus"},
                              components={"shared-bus": f"memory://t-{uid()}"})
    assert api.declared_components()["shared-bus"].topic == third.package.spec.outputs[0].topic


def test_bad_component_options_through_the_magic_deploy_nothing(ip: Any) -> None:
    cell = "def produce(ctx, data):\n    ctx.send('out', data)\n"
    cases = {"--component kafka-in": "is not NAME=URI",
             "--component Bad_Name=memory://t --output out=@Bad_Name":
                 "'Bad_Name' is not a valid Dapr component name",
             "--output out=@missing": "uses component 'missing', which is not declared",
             # the magic refuses a NAME given twice before the API compares definitions
             "--component a=memory://t --component a=redis://127.0.0.1:6379/t":
                 "--component a is given 2 times"}
    running = {p.pid for p in runtime_children()}
    for line, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            ip.run_cell_magic("function", f"named-bad {line}", cell)
    assert "named-bad" not in [h.name for h in ofnotebook.deployments()]
    assert {p.pid for p in runtime_children()} <= running


# -- the stand-in registers a named component for every client ---------------------------------

SCRIPT = """
import sys
from dapr.clients import DaprClient
with DaprClient() as d:
    d.invoke_binding("kafka-binding", "create", b'{"from": "script"}')
print("sent")
"""


def test_functions_the_notebook_and_a_script_share_a_named_kafka_binding(
        local_backend: Any, kafka_broker: Any) -> None:
    topic = f"named-{uid()}"
    components = {"kafka-binding": f"kafka://{kafka_broker.bootstrap}/{topic}"
                                   f"?initialOffset=oldest"}
    consumer = ofnotebook.deploy(make_function(CONSUMER, name="consume"), "named-consumer",
                                 target=local_backend, components=components,
                                 inputs={"kafka": "@kafka-binding"},
                                 outputs={"seen": f"memory://seen-{uid()}"})
    producer = ofnotebook.deploy(make_function(PRODUCER, name="produce"), "named-producer",
                                 target=local_backend, outputs={"out": "@kafka-binding"})
    assert producer.invoke(json={"from": "function"}).text == "ok"
    env = ofnotebook.dapr_env()
    assert env["DAPR_GRPC_ENDPOINT"] == f"127.0.0.1:{env['DAPR_GRPC_PORT']}"
    assert env["DAPR_HTTP_ENDPOINT"] == f"http://127.0.0.1:{env['DAPR_HTTP_PORT']}"
    import dapr.conf  # imported before the variables are set: dapr 1.19 reads them at use

    os.environ.update(env)
    assert dapr.conf.settings.DAPR_GRPC_PORT == int(env["DAPR_GRPC_PORT"])
    from dapr.clients import DaprClient  # the unmodified SDK, in the notebook's own process

    with DaprClient() as client:
        client.invoke_binding("kafka-binding", "create", json.dumps({"from": "notebook"}))
        metadata = client.get_metadata()
    assert metadata.application_id == named.NOTEBOOK_APP  # the notebook's client calls
    # exactly that name, once, for every client
    assert [c.name for c in metadata.registered_components].count("kafka-binding") == 1
    done = subprocess.run([sys.executable, "-c", SCRIPT], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "sent", done.stderr
    seen = wait_for(lambda: [o for o in consumer.outputs if o.name == "seen"][2:] and
                    [o for o in consumer.outputs if o.name == "seen"], 30,
                    lambda: str(consumer.outputs))
    assert sorted(o.data["from"] for o in seen) == ["function", "notebook", "script"]
    # each call is its caller's: the consumer only reads the binding, the producer sent one
    assert {o.name for o in consumer.outputs} == {"seen"}
    wait_for(lambda: producer.stats["events_out"] == 1, 10, lambda: str(producer.stats))
    assert named.NOTEBOOK_APP in get_standin().stats()["apps"]


COUNTER = ("def count(ctx, data):\n"
           "    hits = [(ctx.get_state(s, 'hits') or 0) + 1 for s in ('own', 'shared')]\n"
           "    for store, n in zip(('own', 'shared'), hits):\n"
           "        ctx.save_state(store, 'hits', n)\n"
           "    return hits\n")


@pytest.mark.broker
def test_functions_and_the_notebook_share_a_named_state_store_by_its_key_prefix(
        local_backend: Any) -> None:
    import redis

    names = [f"named-count-{uid()}", f"named-count-{uid()}"]
    own, shared = f"counters-{uid()}", f"shared-{uid()}"
    stores = {own: "redis://127.0.0.1:6379",  # Dapr's default keyPrefix: each caller's app id
              shared: "redis://127.0.0.1:6379?keyPrefix=name"}  # the store's name: shared
    keys = [f"{name}||hits" for name in names] + [f"{shared}||hits"]
    try:
        a, b = (ofnotebook.deploy(make_function(COUNTER, name="count"), name,
                                  target=local_backend, components=stores,
                                  states={"own": f"@{own}", "shared": f"@{shared}"})
                for name in names)
        assert [a.invoke(json={}).json() for _ in range(2)] + [b.invoke(json={}).json()] == \
            [[1, 1], [2, 2], [1, 3]]
        assert a.get_state("hits", "own") == 2 and b.get_state("hits", "shared") == 3
        assert redis.Redis().hget(keys[0], "data") == b"2"
        os.environ.update(ofnotebook.dapr_env())
        from dapr.clients import DaprClient

        with DaprClient() as client:
            assert client.get_state(shared, "hits").data == b"3"
            assert client.get_state(own, "hits").data == b""  # the notebook's own key
    finally:
        redis.Redis().delete(*keys)


@pytest.mark.broker
def test_the_notebook_keeps_state_in_a_named_store_of_a_real_redis() -> None:
    import redis

    store = f"nb-{uid()}"
    env = ofnotebook.dapr_env({store: "redis://127.0.0.1:6379"}, export=True)
    assert os.environ["DAPR_GRPC_PORT"] == env["DAPR_GRPC_PORT"]
    from dapr.clients import DaprClient

    key = f"k-{uid()}"
    try:
        with DaprClient() as client:
            client.save_state(store, key, "v1")
            assert client.get_state(store, key).data == b"v1"
        # Dapr's default key prefix is the caller's app id: the notebook's client is 'notebook'
        assert redis.Redis().hget(f"{named.NOTEBOOK_APP}||{key}", "data") == b"v1"
    finally:
        redis.Redis().delete(f"{named.NOTEBOOK_APP}||{key}")
    assert store in api.declared_components()  # declared by dapr_env, for later cells too


@pytest.mark.broker
def test_the_dapr_line_magic_and_a_notebook_variable_component(ip: Any) -> None:
    topic = f"orders-{uid()}"
    ip.run_cell("from ofnotebook import Component\nimport dapr.conf\n"
                f"orders_in = Component('pubsub.redis', {{'redisHost': '127.0.0.1:6379', "
                f"'consumerID': 'g-{topic}'}}, topic='{topic}', name='orders-bus')").raise_error()
    handle = ip.run_cell_magic("function", "named-orders --input o=@orders_in "
                                           "--output seen=memory://seen-" + uid(), CONSUMER)
    assert handle.package.spec.inputs[0].component == "orders-bus"
    assert "orders-bus" in api.declared_components()
    printed = ip.run_line_magic("function", "dapr")
    assert printed is None
    grpc_port = os.environ["DAPR_GRPC_PORT"]
    import dapr.conf

    assert dapr.conf.settings.DAPR_GRPC_PORT == int(grpc_port)  # set on the imported SDK too
    ip.run_cell("from dapr.clients import DaprClient\n"
                "with DaprClient() as d:\n"
                f"    d.publish_event('orders-bus', '{topic}', '{{\"n\": 1}}',\n"
                "                    data_content_type='application/json')").raise_error()
    assert handle.wait_for_outputs(1, timeout=30)[0].data == {"n": 1}


def test_the_dapr_line_magic_prints_the_variables(ip: Any, capsys: pytest.CaptureFixture[str]
                                                  ) -> None:
    ip.run_line_magic("function", "dapr")
    out = capsys.readouterr().out
    assert out.startswith("Dapr SDK environment (set in os.environ):")
    assert f"DAPR_GRPC_ENDPOINT=127.0.0.1:{os.environ['DAPR_GRPC_PORT']}" in out


# -- ctx.send uses the operation of the URI ------------------------------------------------------

class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str]] = []

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        type(self).seen.append((self.command, self.path))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET = _any

    def log_message(self, *args: Any) -> None:
        pass


def test_ctx_send_uses_the_operation_given_in_the_uri(local_backend: Any) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        fn = make_function("def relay(ctx, data):\n    ctx.send('put', data)\n"
                           "    ctx.send('hook', data)\n    return 'ok'\n", name="relay")
        relay = ofnotebook.deploy(fn, "named-relay", target=local_backend,
                                  components=[f"hook={base}/hook?operation=delete"],
                                  outputs={"put": f"{base}/items?x=1&operation=put",
                                           "hook": "@hook?operation=patch"})
        assert relay.invoke(json={"n": 1}).text == "ok"
        wait_for(lambda: len(_Recorder.seen) == 2, 10, lambda: str(_Recorder.seen))
        assert sorted(_Recorder.seen) == [("PATCH", "/hook"), ("PUT", "/items?x=1")]
    finally:
        server.shutdown()
        server.server_close()


def test_no_local_deployment_may_take_the_notebook_clients_app_id() -> None:
    from ofnotebook.request import DeployRequest

    fn = make_function(PRODUCER, name="produce")
    with pytest.raises(ConfigError, match="'notebook' is the app id of the notebook's own Dapr"):
        api.plan(fn, DeployRequest(name=named.NOTEBOOK_APP, target="local")).spec()
    assert api.plan(fn, DeployRequest(name=named.NOTEBOOK_APP, target="yaml")).spec().name == \
        named.NOTEBOOK_APP  # a cluster has no such client


def test_a_conflict_message_masks_the_brokers_passwords() -> None:
    with pytest.raises(ConfigError) as info:
        parse_components(["q=amqp://u:first-pw@127.0.0.1:5672/t",
                          "q=amqp://u:second-pw@127.0.0.1:5672/t"])
    assert "declared twice" in str(info.value) and "amqp://u:***@127.0.0.1:5672" in str(info.value)
    assert "first-pw" not in str(info.value) and "second-pw" not in str(info.value)
