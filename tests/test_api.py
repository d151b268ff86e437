"""``api`` decides a deploy once (``plan``), and hands the handle its request and redeploy."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

import ofnotebook
from ofnotebook import api
from ofnotebook.backends.gitops import YamlBackend
from ofnotebook.errors import InvocationError
from ofnotebook.handle import FunctionHandle
from ofnotebook.request import DeployRequest
from tests.helpers import make_function


def test_plan_decides_target_name_and_runtime_and_runs_nothing(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fn = make_function("def My_Fn(ctx, data):\n    return data\n", name="My_Fn")
    planned = api.plan(fn, DeployRequest(inputs=["numbers"]))
    assert (planned.name, planned.runtime, planned.target) == ("my-fn", "async", "local")
    assert api.plan(fn, DeployRequest(name="x", runtime="sync")).runtime == "sync"
    monkeypatch.setenv("OFNOTEBOOK_TARGET", "yaml")
    assert api.plan(fn, DeployRequest()).target == "yaml"
    folder = YamlBackend(tmp_path)
    written = api.plan(fn, DeployRequest(target=folder, inputs={"numbers": None}))
    assert written.backend is folder and written.runtime == "async"
    assert not folder.deployments() and not list(tmp_path.iterdir())  # nothing done yet
    assert written.deploy().status == "written" and (tmp_path / "my-fn").is_dir()


def test_the_request_is_frozen_and_read_only() -> None:
    env = {"K": "V"}
    request = DeployRequest(env=env, inputs=["a=memory://a"], requirements=["x"])
    env["K"] = "changed"  # the caller's dict is copied
    assert dict(request.env) == {"K": "V"} and request.inputs == ("a=memory://a",)
    assert request.requirements == ("x",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        request.env["K"] = "x"  # type: ignore[index]
    # a generator or a set is read once, here: a redeploy sees the same values again
    once = DeployRequest(env=(f"K{i}=v" for i in range(2)), inputs={"a=memory://a"})
    assert once.env == ("K0=v", "K1=v") and once.env == ("K0=v", "K1=v")
    assert once.inputs == ("a=memory://a",)
    assert DeployRequest(inputs="a=memory://a").inputs == "a=memory://a"  # a str stays one


def test_redeploy_keeps_the_handle_its_request_and_its_place(local_backend: Any) -> None:
    fn = make_function("import os\ndef f(request):\n    return os.environ['K']\n")
    handle = ofnotebook.deploy(fn, target=local_backend, env={"K": "one"})
    assert handle.request is not None and handle.request.name == "f"  # the name decided
    assert dict(handle.request.env or {}) == {"K": "one"}
    first = handle.deployment
    seen: list[str] = []
    handle.redeploy(on_event=lambda event: seen.append(event.phase))
    assert handle.deployment is not first and first.status == "stopped"
    assert handle.status == "running" and handle.invoke().text == "one"
    assert seen[:2] == ["capture", "capture"] and "ready" in seen
    assert api.get("f") is handle


def test_a_handle_made_by_hand_cannot_redeploy_itself(local_backend: Any) -> None:
    made = ofnotebook.deploy(make_function("def f(request):\n    return 1\n"), "by-hand",
                             target=local_backend)
    bare = FunctionHandle(made.function, deployment=made.deployment, backend=local_backend,
                          target="local", events=[], timings={})
    with pytest.raises(InvocationError, match="not made by ofnotebook.deploy"):
        bare.redeploy()
