"""Bad input is refused where it enters: one ``ConfigError`` naming the cause and the fix,
raised before anything runs, nothing left deployed.

The API table runs in the unit tier: its autouse fixture fails a test that starts a process,
so a refusal that came only after a runtime or the stand-in started would fail here too. The
magic table checks the same refusals through ``%%function`` (the magic calls the API).
"""

from __future__ import annotations

import re
from typing import Any, Callable

import pytest
from IPython.core.interactiveshell import InteractiveShell

import ofnotebook
from ofnotebook import config
from ofnotebook.errors import ConfigError, OfnotebookError
from tests.helpers import make_function, runtime_children

SOURCE = "def f(request):\n    return 'ok'\n"

API_CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({"name": 123}, ["must be a string", "int", "'my-func'"]),
    ({"name": "1abc"}, ["'1abc'", "starting with a letter", "'fn-1abc'"]),
    ({"name": "1abc", "target": "yaml"}, ["'1abc'", "starting with a letter"]),
    ({"version": "a" * 64}, ["label value", "at most 63"]),
    ({"version": "-v1"}, ["'-v1'", "label value", "starting and ending"]),
    ({"version": "v1 beta"}, ["'v1 beta'", "label value"]),
    ({"outputs": {"o": "redis://127.0.0.1:abc/t"}},
     ["'o'", ":abc", "port must be a number 1-65535"]),
    ({"outputs": {"o": "redis://127.0.0.1:99999/t"}}, [":99999", "port must be a number 1-65535"]),
    ({"states": {"s": "redis://127.0.0.1:0"}}, ["port must be a number 1-65535"]),
    ({"states": {"s": "redis:/host"}}, ["'redis:' needs two slashes", "redis://host"]),
    ({"outputs": {"o": "kafka:127.0.0.1/t"}}, ["needs two slashes", "kafka://127.0.0.1/t"]),
    ({"requirements": "numpy"}, ["is a string", "requirements=['numpy']"]),
    ({"env": "K=V"}, ["is a string", "env=['K=V']"]),
    ({"env": 42}, ["env=42", "'KEY=VALUE'"]),
    ({"inputs": 42}, ["inputs=42", "int", "'NAME=URI'"]),
    ({"outputs": 4.5}, ["outputs=4.5", "float", "'NAME=URI'"]),
    ({"port": "8080"}, ["port='8080'", "1-65535"]),
    ({"port": 70000}, ["port=70000", "1-65535"]),
    ({"runtime": "async"}, ["has none", "--input NAME=URI", "'sync'"]),
    ({"runtime": "async", "inputs": {}}, ["has none", "--input"]),
    ({"name": ""}, ["is empty", "'my-func'"]),
    ({"name": "UPPER"}, ["'UPPER'", "lowercase", "'upper'"]),
    ({"name": "a_b"}, ["'a_b'", "'a-b'"]),
    ({"name": "a.b"}, ["'a.b'", "'a-b'"]),
    ({"name": "a" * 64}, ["64 characters", "40 or fewer", "shorter name"]),
    ({"version": ""}, ["version ''", "label value", "'v1.0.0'"]),
    ({"runtime": "bogus"}, ["Unknown runtime 'bogus'", "sync, async"]),
    ({"signature": "bogus"}, ["Unknown signature 'bogus'", "request, cloudevent"]),
    ({"port": 0}, ["port=0", "1-65535"]),
    ({"port": True}, ["port=True", "1-65535"]),
    ({"env": ["NOEQUALS"]}, ["'NOEQUALS'", "KEY=VALUE", "--env NOEQUALS=value"]),
    ({"inputs": {"i": "nosuch://x"}}, ["Input 'i'", "unknown scheme 'nosuch'", "memory://"]),
    ({"outputs": {"o": "redis://"}}, ["Output 'o'", "must name the topic"]),
    ({"outputs": {"o": "mqtt://127.0.0.1:1883"}}, ["'mqtt://127.0.0.1:1883'", "name the topic"]),
    ({"outputs": {"o": "@missing"}}, ["'missing'", "not declared", "--component missing=URI"]),
    ({"include": ["../outside"]}, ["'../outside'", "leaves the notebook's folder"]),
    ({"include": ["missing.txt"]}, ["'missing.txt'", "there is no", "check the path"]),
    ({"target": "nope"}, ["Unknown target 'nope'", "container, kubernetes, local, yaml"]),
    ({"entry": "not-identifier"}, ["entry='not-identifier'", "not a Python name"]),
    ({"env": ["=v"]}, ["'=v'", "--env KEY=v"]),
    ({"env": ["1X=v"]}, ["'1X'", "not an environment variable name", "'X'"]),
    ({"env": {"MY-VAR": "v"}}, ["'MY-VAR'", "'MY_VAR'"]),
    ({"env": ["A=1", "A=2"]}, ["--env A is given twice", "give each variable once"]),
    ({"base_image": "UPPER:tag"}, ["--base-image", "'UPPER:tag'", "python:3.11-slim"]),
    ({"outputs": {"o": "http://"}}, ["'http://'", "no host", "http://127.0.0.1:8000/path"]),
    ({"requirements": ["numpy=>1"]}, ["'numpy=>1'", "write 'numpy>=1'", "PEP 508"]),
    ({"requirements": ["pandas=="]}, ["'pandas=='", "pandas==X.Y"]),
    ({"requirements": ["ofnotebook-no-such-dist"]},
     ["'ofnotebook-no-such-dist'", "not installed in this kernel", "%pip install"]),
    ({"secret_env": ["OFNOTEBOOK_TEST_UNSET_SECRET"]},
     ["OFNOTEBOOK_TEST_UNSET_SECRET is not set", "no prompt", "os.environ"]),
]

#: Cluster settings (``target_options`` on the yaml target, as ``%%function`` passes them).
CLUSTER_CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({"min_replicas": -1}, ["--min-replicas -1", "0 or more"]),
    ({"min_replicas": 3, "max_replicas": 1}, ["--min-replicas 3 is above --max-replicas 1"]),
    ({"cpu": "lots"}, ["--cpu 'lots'", "quantity", "500m"]),
    ({"memory": "12XB"}, ["--memory '12XB'", "512Mi"]),
    ({"pull_policy": "Sometimes"}, ["'Sometimes'", "Always, IfNotPresent, Never"]),
    ({"labels": {"bad key!": "v"}}, ["'bad key!=v'", "team=data"]),
    ({"gpus": -1}, ["--gpus -1", "0 or more"]),
    ({"api_version": "v9"}, ["'v9'", "v1beta2, v1beta1"]),
    ({"platform": "linux"}, ["'linux'", "os/arch", "linux/amd64"]),
    ({"dapr_mode": "x"}, ["--dapr-mode 'x'", "standalone, sidecar"]),
    ({"namespace": "Bad_NS"}, ["'Bad_NS'", "lowercase letters"]),
    ({"image_credentials": "Bad Secret"}, ["'Bad Secret'", "Secret name"]),
    ({"keda_polling_interval": 0}, ["needs a --keda-trigger", "kafka:topic=logs"]),
    ({"hpa_behavior": "{not yaml"}, ["'{not yaml'", "neither JSON nor YAML"]),
    ({"bogus": 1}, ["no --bogus option", "it takes:"]),
    ({"build": "bogus"}, ["--build 'bogus'", "auto, engine, registry, cluster"]),
]

ENV_CASES: list[tuple[str, str, list[str]]] = [
    ("OFNOTEBOOK_TARGET", "bogus", ["Unknown target 'bogus'", "from OFNOTEBOOK_TARGET"]),
    ("OFNOTEBOOK_DELIVERY_ATTEMPTS", "0", ["OFNOTEBOOK_DELIVERY_ATTEMPTS='0'", "positive"]),
    ("OFNOTEBOOK_DELIVERY_ATTEMPTS", "many", ["OFNOTEBOOK_DELIVERY_ATTEMPTS='many'"]),
    ("OFNOTEBOOK_LOG_LINES", "-5", ["OFNOTEBOOK_LOG_LINES='-5'", "positive", "Unset it"]),
    ("OFNOTEBOOK_START_TIMEOUT", "soon", ["OFNOTEBOOK_START_TIMEOUT='soon'", "seconds"]),
    ("OFNOTEBOOK_START_TIMEOUT", "-1", ["OFNOTEBOOK_START_TIMEOUT='-1'"]),
    ("OFNOTEBOOK_MAX_GLOBAL_MB", "lots", ["OFNOTEBOOK_MAX_GLOBAL_MB='lots'"]),
    ("OFNOTEBOOK_BUILD", "bogus", ["OFNOTEBOOK_BUILD='bogus'", "auto"]),
]


@pytest.fixture
def assert_nothing_left() -> Callable[[], None]:
    """A check that this test left no deployment and no runtime process: compared with what
    was there before it (another test's function may still be stopping in the background)."""
    deployments = {id(h) for h in ofnotebook.deployments()}
    processes = {p.pid for p in runtime_children()}

    def check() -> None:
        assert [h.name for h in ofnotebook.deployments() if id(h) not in deployments] == []
        assert [p.pid for p in runtime_children() if p.pid not in processes] == []
    return check


def message_of(excinfo: pytest.ExceptionInfo[Any]) -> str:
    return str(excinfo.value)


@pytest.mark.parametrize(("kwargs", "words"), API_CASES,
                         ids=[repr(k)[:60] for k, _ in API_CASES])
def test_the_api_refuses_a_bad_argument_before_anything_runs(
        kwargs: dict[str, Any], words: list[str], tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch, assert_nothing_left: Callable[[], None]) -> None:
    monkeypatch.chdir(tmp_path)  # the yaml target would write here
    with pytest.raises(OfnotebookError) as excinfo:  # ConfigError, CaptureError (--include)...
        ofnotebook.deploy(make_function(SOURCE), **kwargs)
    for word in words:
        assert word in message_of(excinfo)
    assert "Traceback" not in message_of(excinfo)
    assert_nothing_left()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("options", "words"), CLUSTER_CASES,
                         ids=[repr(k)[:60] for k, _ in CLUSTER_CASES])
def test_a_bad_cluster_setting_is_refused_before_anything_is_written(
        options: dict[str, Any], words: list[str], tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch, assert_nothing_left: Callable[[], None]) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as excinfo:
        ofnotebook.deploy(make_function(SOURCE), "bad-cluster", target="yaml",
                          target_options=options)
    for word in words:
        assert word in message_of(excinfo)
    assert_nothing_left()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("variable", "value", "words"), ENV_CASES,
                         ids=[f"{v}={x}" for v, x, _ in ENV_CASES])
def test_a_bad_setting_refuses_the_deploy_naming_its_variable(
        variable: str, value: str, words: list[str], monkeypatch: pytest.MonkeyPatch,
        assert_nothing_left: Callable[[], None]) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(OfnotebookError) as excinfo:
        ofnotebook.deploy(make_function(SOURCE), "bad-setting")
    for word in words:
        assert word in message_of(excinfo)
    assert_nothing_left()


def test_settings_are_read_again_when_they_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFNOTEBOOK_DELIVERY_ATTEMPTS", "0")
    with pytest.raises(ConfigError, match="OFNOTEBOOK_DELIVERY_ATTEMPTS"):
        config.check()
    monkeypatch.setenv("OFNOTEBOOK_DELIVERY_ATTEMPTS", "3")
    config.check()
    assert config.get("delivery_attempts") == 3
    monkeypatch.delenv("OFNOTEBOOK_DELIVERY_ATTEMPTS")
    assert config.get("delivery_attempts") == config.DEFAULT_DELIVERY_ATTEMPTS
    monkeypatch.setenv("OFNOTEBOOK_LOG_LINES", "7")
    assert config.get("log_lines") == 7
    from ofnotebook.backends.container import ContainerBackend

    backend = ContainerBackend()  # made once per kernel: must see later changes
    monkeypatch.setenv("OFNOTEBOOK_START_TIMEOUT", "12.5")
    assert (backend.log_lines, backend.start_timeout) == (7, 12.5)
    assert ContainerBackend(start_timeout=3).start_timeout == 3  # an argument wins


def test_a_derived_name_never_starts_with_a_digit() -> None:
    from ofnotebook.spec import derive_name, validate_name

    for python_name in ("_9lives", "v2", "x" * 80, "_" + "1" * 50 + "_a"):
        assert validate_name(derive_name(python_name)) == derive_name(python_name)
    assert derive_name("_9lives") == "fn-9lives"


BATCH_SOURCE = "def f(ctx, events):\n    return None\n"
MEMORY = {"inputs": {"events": "memory://events"}}
#: ``batch=N`` (``--batch N``): the source, the arguments, the words of the refusal.
BATCH_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    (BATCH_SOURCE, {"batch": 0, **MEMORY}, ["--batch 0", "from 1 to 1000", "--batch 100"]),
    (BATCH_SOURCE, {"batch": 1001, **MEMORY}, ["--batch 1001", "from 1 to 1000"]),
    (BATCH_SOURCE, {"batch": "100", **MEMORY}, ["--batch '100'", "whole number"]),
    (BATCH_SOURCE, {"batch": True, **MEMORY}, ["--batch True", "whole number"]),
    (BATCH_SOURCE, {"batch": 10, "batch_wait_ms": 0, **MEMORY},
     ["--batch-wait 0", "from 1 to 10000", "default 1000 ms"]),
    (BATCH_SOURCE, {"batch": 10, "batch_wait_ms": 10_001, **MEMORY},
     ["--batch-wait 10001", "from 1 to 10000"]),
    (BATCH_SOURCE, {"batch": 10, "batch_wait_ms": 2.5, **MEMORY}, ["--batch-wait 2.5"]),
    (BATCH_SOURCE, {"batch_wait_ms": 50, **MEMORY},
     ["--batch-wait 50", "no --batch N was given", "--batch 100 --batch-wait 50"]),
    (BATCH_SOURCE, {"batch": 10}, ["synchronous", "batches come from pub/sub inputs",
                                   "--input events=redis://"]),
    (BATCH_SOURCE, {"batch": 10, "inputs": {"logs": "kafka://127.0.0.1:9092/logs"}},
     ["input 'logs' is a Dapr input binding (bindings.kafka)", "batches of one",
      "--input logs=pubsub+kafka://HOST:PORT/TOPIC"]),
    (BATCH_SOURCE, {"batch": 10, "inputs": {"tick": "cron://@every 1s"}},
     ["'tick' is a Dapr input binding (bindings.cron)", "another function, without --batch"]),
    ("def f(data):\n    return None\n", {"batch": 10, **MEMORY},
     ["calls the function as f(ctx, events)", "f(data) is f(request), the request shape",
      "def f(ctx, events)"]),
    ("def f():\n    return None\n", {"batch": 10, **MEMORY}, ["f() is f(), the noarg shape"]),
    ("def f(ctx):\n    return None\n", {"batch": 10, **MEMORY},
     ["f(ctx) is f(context), the context shape"]),
    ("def f(event, context):\n    return None\n", {"batch": 10, **MEMORY},
     ["the background shape", "def f(ctx, events)"]),
    ("def f(ctx, data, extra):\n    return None\n", {"batch": 10, **MEMORY},
     ["f(ctx, data, extra) is not a shape it can call", "def f(ctx, events)"]),
    (BATCH_SOURCE, {"batch": 10, "target": "yaml", "target_options": {"dapr_mode":
                                                                       "standalone"}, **MEMORY},
     ["--batch needs Dapr in sidecar mode", "dapr-proxy", "--dapr-mode sidecar"]),
]


@pytest.mark.parametrize(("source", "kwargs", "words"), BATCH_CASES,
                         ids=[f"{s.split(':')[0]}-{k}"[:70] for s, k, _ in BATCH_CASES])
def test_a_batch_function_that_cannot_be_batched_is_refused_before_anything_runs(
        source: str, kwargs: dict[str, Any], words: list[str], tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch, assert_nothing_left: Callable[[], None]) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as excinfo:
        ofnotebook.deploy(make_function(source), "batcher", **kwargs)
    for word in words:
        assert word in message_of(excinfo)
    assert_nothing_left()
    assert list(tmp_path.iterdir()) == []


MAGIC_CASES: list[tuple[str, list[str]]] = [
    ("1abc", ["'1abc'", "starting with a letter"]),
    ("ok-name --version v1.", ["'v1.'", "label value"]),
    ("ok-name --runtime async", ["has none", "--input NAME=URI"]),
    ("ok-name --output o=redis://127.0.0.1:abc/t", ["port must be a number 1-65535"]),
    ("ok-name --state s=redis:/host", ["needs two slashes", "redis://host"]),
    ("ok-name --batch 0 --input e=memory://e", ["--batch 0", "from 1 to 1000"]),
    ("ok-name --batch-wait 50 --input e=memory://e", ["no --batch N was given"]),
    ("ok-name --batch 10 --batch-wait 0 --input e=memory://e", ["--batch-wait 0"]),
    ("ok-name --batch 10 --input e=memory://e", ["calls the function as f(ctx, events)"]),
    ("ok-name --batch 10", ["synchronous"]),
]


@pytest.mark.parametrize(("line", "words"), MAGIC_CASES, ids=[c for c, _ in MAGIC_CASES])
def test_the_magic_refuses_the_same_values(ip: InteractiveShell, line: str, words: list[str],
                                           assert_nothing_left: Callable[[], None]) -> None:
    result = ip.run_cell(f"%%function {line}\n{SOURCE}")
    error = result.error_in_exec
    assert isinstance(error, ConfigError), error
    for word in words:
        assert re.search(re.escape(word), str(error))
    assert_nothing_left()
