"""What every backend must do, as test classes a backend's test module subclasses.

A subclass provides the ``backend`` fixture and sets capability flags; the tests here then run
real deployments through the public API against that backend.
"""

from __future__ import annotations

from typing import Any

import pytest

import ofnotebook
from ofnotebook.errors import InvocationError, RemoteFunctionError
from tests.helpers import make_function


class BackendConformance:
    """Deploy, invoke, reuse, replace, logs, errors, stop."""

    supports_follow_logs = True

    @pytest.fixture
    def backend(self) -> Any:
        raise NotImplementedError("A backend test module must provide the 'backend' fixture.")

    def test_deploy_and_invoke(self, backend: Any) -> None:
        fn = make_function("def f(request):\n    return {'echo': request.args.get('x')}\n")
        handle = ofnotebook.deploy(fn, "conf-echo", target=backend)
        assert handle.status == "running"
        assert handle.invoke(params={"x": "1"}).json() == {"echo": "1"}
        assert handle.name == "conf-echo" and handle.url.startswith("http")
        assert set(handle.timings) >= {"capture", "package"}

    def test_handle_is_still_the_plain_function(self, backend: Any) -> None:
        fn = make_function("def f(x):\n    return x * 2\n")
        handle = ofnotebook.deploy(fn, "conf-plain", target=backend)
        assert handle(21) == 42

    def test_unchanged_redeploy_reuses(self, backend: Any) -> None:
        source = "def f(request):\n    return 'same'\n"
        first = ofnotebook.deploy(make_function(source), "conf-reuse", target=backend)
        second = ofnotebook.deploy(make_function(source), "conf-reuse", target=backend)
        assert second.deployment is first.deployment and second.reused
        assert "start" not in second.timings

    def test_edit_replaces(self, backend: Any) -> None:
        first = ofnotebook.deploy(make_function("def f(request):\n    return 'v1'\n"),
                                  "conf-edit", target=backend)
        second = ofnotebook.deploy(make_function("def f(request):\n    return 'v2'\n"),
                                   "conf-edit", target=backend)
        assert second.invoke().text == "v2"
        assert first.status == "stopped" and second.status == "running"
        assert [d.name for d in backend.deployments()].count("conf-edit") == 1

    def test_remote_exception(self, backend: Any) -> None:
        fn = make_function("def f(request):\n    raise ValueError('bad input ' + request.args['v'])\n")
        handle = ofnotebook.deploy(fn, "conf-error", target=backend)
        with pytest.raises(RemoteFunctionError) as info:
            handle.invoke(params={"v": "42"})
        assert info.value.ename == "ValueError" and info.value.evalue == "bad input 42"
        assert "raise ValueError" in info.value.traceback
        assert info.value.function_name == "conf-error"

    def test_logs_capture_prints(self, backend: Any) -> None:
        fn = make_function("def f(request):\n    print('log-line-' + request.args['n'], flush=True)\n"
                           "    return 'ok'\n")
        handle = ofnotebook.deploy(fn, "conf-logs", target=backend)
        handle.invoke(params={"n": "7"})
        self.wait_for(lambda: "log-line-7" in handle.logs())
        assert "log-line-7" in handle.logs(tail=5)

    def test_stop(self, backend: Any) -> None:
        handle = ofnotebook.deploy(make_function("def f(request):\n    return 'x'\n"),
                                   "conf-stop", target=backend)
        handle.stop()
        assert handle.status == "stopped"
        assert "conf-stop" not in [d.name for d in backend.deployments()]
        with pytest.raises(InvocationError):
            handle.invoke(timeout=2)
        handle.stop()  # idempotent

    @staticmethod
    def wait_for(condition: Any, timeout: float = 5.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError("condition not met in time")
            time.sleep(0.02)
