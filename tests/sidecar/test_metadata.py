"""Component metadata as daprd reads it (``sidecar/metadata.py``), the table of what is not
served (``sidecar/unimplemented.py``) and ``docs/dapr-api.md``, which must list every call."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from ofnotebook.sidecar.drivers import ComponentConfig, ComponentError, SUPPORTED_TYPES
from ofnotebook.sidecar.metadata import known_keys, read_metadata
from ofnotebook.sidecar.metadata_keys import SCHEMA_KEYS
from tests.helpers import SHARED

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = SHARED / "schemas" / "dapr-components-metadata"


def _schema_table() -> dict[str, tuple[tuple[str, ...], frozenset[str]]]:
    """``SCHEMA_KEYS`` as the schemas give it: each type's keys, its authentication profiles'
    keys, and the built-in profiles it names."""
    table: dict[str, tuple[set[str], set[str]]] = {}
    for path in sorted(SCHEMAS.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        profiles, keys = table.setdefault(f"{doc['type']}.{doc['name']}", (set(), set()))
        keys.update(m["name"] for m in doc.get("metadata") or [])
        for profile in doc.get("authenticationProfiles") or []:
            keys.update(m["name"] for m in profile.get("metadata") or [])
        for profile in doc.get("builtinAuthenticationProfiles") or []:
            profiles.add(profile["name"])
            keys.update(m["name"] for m in profile.get("metadata") or [])
    return {t: (tuple(sorted(p)), frozenset(k)) for t, (p, k) in table.items()}


def test_the_key_table_is_the_schemas() -> None:
    expected = _schema_table()
    if expected != SCHEMA_KEYS:
        lines = []
        for type_, (profiles, keys) in sorted(expected.items()):
            body = textwrap.fill(", ".join(repr(k) for k in sorted(keys)), 90,
                                 initial_indent=" " * 8, subsequent_indent=" " * 8,
                                 break_on_hyphens=False)
            lines.append(f"    {type_!r}: ({profiles!r}, frozenset({{\n{body}\n    }})),")
        pytest.fail("ofnotebook/sidecar/metadata_keys.py is out of date; its table is:\n"
                    + "\n".join(lines))


def test_every_type_the_stand_in_runs_has_its_keys() -> None:
    assert [t for t in SUPPORTED_TYPES if known_keys(t) is None] == []


def test_the_drivers_read_only_keys_daprd_reads() -> None:
    """A key a driver reads is never warned about as unknown (for some type it serves)."""
    drivers = ROOT / "ofnotebook" / "sidecar" / "drivers"
    registry = (drivers / "__init__.py").read_text()
    for path in sorted(drivers.glob("*.py")):
        types = re.findall(rf'"([a-z.-]+)": "{path.stem}:', registry)
        if not types:
            continue
        read = set(re.findall(  # the component's metadata, not a request's (``metadata``)
            r'\b(?:cfg|c|meta|component|self\.component)\.(?:get|require)\("([A-Za-z_]+)"',
            path.read_text()))
        unknown = {k for k in read if not any(k in (known_keys(t) or ()) for t in types)}
        assert not unknown, f"{path.name} reads {sorted(unknown)}, which no type of it knows"


def _read(type_: str, **metadata: str) -> tuple[dict[str, str], list[str]]:
    config, warnings = read_metadata(ComponentConfig(name="c", type=type_, metadata=metadata))
    return config.metadata, warnings


@pytest.mark.parametrize(("given", "auth"), [
    ({"authRequired": "false"}, "none"), ({"authRequired": "False"}, "none"),
    ({"authRequired": "true", "saslUsername": "u", "saslPassword": "p"}, "password"),
    ({"authRequired": "1"}, "mtls")])
def test_kafka_auth_required_becomes_auth_type(given: dict[str, str], auth: str) -> None:
    for type_ in ("pubsub.kafka", "bindings.kafka"):
        metadata, warnings = _read(type_, brokers="b:9092", **given)
        assert metadata["authType"] == auth
        assert warnings == [f"component 'c' ({type_}): authRequired is deprecated, use "
                            f"authType instead (read as authType: {auth})"]


def test_an_explicit_auth_type_wins_and_a_bad_auth_required_fails() -> None:
    metadata, warnings = _read("pubsub.kafka", authType="password", authRequired="false")
    assert metadata["authType"] == "password" and warnings == []
    with pytest.raises(ComponentError, match="invalid value for 'authRequired'.*'maybe'"):
        _read("pubsub.kafka", authRequired="maybe")


def test_keys_match_in_any_case_and_unknown_ones_are_kept_and_warned() -> None:
    metadata, warnings = _read("pubsub.redis", REDISHOST="127.0.0.1:6379", redisHots="x",
                               consumerID="app", deadLetterTopic="dlq")
    assert metadata == {"redisHost": "127.0.0.1:6379", "redisHots": "x", "consumerID": "app",
                        "deadLetterTopic": "dlq"}
    assert warnings == ["component 'c' (pubsub.redis): metadata 'redisHots' is not a key "
                        "daprd reads for pubsub.redis; kept, and ignored (did you mean "
                        "'redisHost'?)"]
    assert _read("bindings.mqtt", url="tcp://x", topic="t", consumerID="c")[1] == []  # alias
    assert _read("pubsub.kafka", awsRegion="eu", region="eu")[1] == []  # built-in profile
    assert _read("bindings.something.else", anything="x")[1] == []  # types it does not know


def test_every_call_is_served_or_answers_what_to_use_instead() -> None:
    """No method of the Dapr servicer keeps the generated "Method not implemented!"; every
    call is named in docs/dapr-api.md."""
    from dapr.proto.runtime.v1 import dapr_pb2_grpc

    from ofnotebook.sidecar.server import DaprApi
    from ofnotebook.sidecar.unimplemented import grpc_message, http_message

    docs = (ROOT / "docs" / "dapr-api.md").read_text()
    methods = [n for n in dir(dapr_pb2_grpc.DaprServicer) if not n.startswith("_")]
    assert len(methods) > 80
    for name in methods:
        ours = getattr(DaprApi, name)
        assert ours is not getattr(dapr_pb2_grpc.DaprServicer, name), name
        assert f"`{name}`" in docs, f"docs/dapr-api.md does not list {name}"
        if (ours.__doc__ or "").startswith("UNIMPLEMENTED"):
            message = grpc_message(name)
            assert "is not served" in message and "; " in message, name
    assert "workflows" in http_message("POST", "/v1.0-beta1/workflows/dapr/w/start")
    assert "SetMetadata" not in http_message("GET", "/v1.0/metadata/x")


def test_metadata_warnings_are_deploy_warnings_naming_the_use_and_the_component(
        local_backend: Any) -> None:
    """On the local target, the stand-in's metadata warnings reach the user while deploying:
    a phase event the live view logs and the text progress prints, naming the input the user
    wrote and the Dapr component daprd knows."""
    import io

    import ofnotebook
    from ofnotebook.backends.base import PhaseEvent
    from ofnotebook.view import TextProgress
    from tests.helpers import make_function, uid

    seen: list[PhaseEvent] = []
    printed = io.StringIO()
    progress = TextProgress(printed)

    def on_event(event: PhaseEvent) -> None:
        seen.append(event)
        progress.on_phase(event)

    name = f"kafka-receiver-{uid()}"
    handle = ofnotebook.deploy(
        make_function("def f(data):\n    return data\n"), f"warned-{uid()}",
        target=local_backend, runtime="async", on_event=on_event,
        inputs={"kafka": f"memory://{name}?maxLenAprox=5"})
    try:
        warnings = [e.detail for e in seen if e.detail.startswith("warning: ")]
        assert len(warnings) == 1 and all(e.state == "progress" for e in seen
                                          if e.detail in warnings)
        assert warnings[0].startswith("warning: input 'kafka' (Dapr component ")
        assert "metadata 'maxLenAprox' is not a key daprd reads" in warnings[0]
        assert warnings[0] in printed.getvalue().splitlines()
        assert f"ofnotebook: {warnings[0]}" in handle.logs()
    finally:
        handle.stop()
