"""What every backend must do, as test classes a backend's test module subclasses (in the
style of fsspec's abstract test classes).

A subclass provides the ``backend`` fixture and sets the capability flags; the tests here then
run real deployments through the public API against that backend, one test per verb of the
:class:`~ofnotebook.backends.base.Deployment` contract. A verb a target does not support is
not skipped: its test asserts the :class:`~ofnotebook.errors.UnsupportedError` that names the
target and what to use instead.

Subclasses: ``tests/backends/test_local.py`` (local), ``tests/containers/test_container.py``
(container, on Podman and on Docker Engine), ``tests/test_kubernetes.py`` (kubernetes,
through the API server double) and ``tests/test_gitops.py`` (yaml).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import pytest

import ofnotebook
from ofnotebook.backends.base import PHASES
from ofnotebook.errors import InvocationError, RemoteFunctionError, UnsupportedError
from tests.helpers import make_function, uid, wait_for

DAPR_FUNCTION = ("def tally(ctx, data):\n"
                 "    total = (ctx.get_state('totals', 'sum') or 0) + data['n']\n"
                 "    ctx.save_state('totals', 'sum', total)\n"
                 "    ctx.send('out', total)\n")


class BackendConformance:
    """Deploy, invoke, reuse, replace, logs, errors, stop, and the Dapr verbs."""

    #: The target's name, as ``handle.target`` says it.
    target: ClassVar[str] = ""
    #: ``status`` of a deployed function.
    running_status: ClassVar[str] = "running"
    #: ``status`` of a deployment replaced by an edited one.
    replaced_status: ClassVar[str] = "stopped"
    #: An unchanged redeploy returns the running deployment (``False``: it is done again).
    reuses_unchanged: ClassVar[bool] = True
    #: Runs the function and the test process can reach it over HTTP (``False``: either the
    #: target runs nothing, see ``invoke_unsupported``, or its address is in a cluster).
    reachable: ClassVar[bool] = True
    #: ``invoke`` raises ``UnsupportedError`` (nothing runs).
    invoke_unsupported: ClassVar[bool] = False
    #: ``publish``, ``get_state`` and the events verbs work from the notebook.
    supports_dapr_verbs: ClassVar[bool] = True
    #: Components for the Dapr test: the target must accept them (cluster addresses for
    #: cluster targets, in-memory ones where the kernel's stand-in serves them).
    components: ClassVar[dict[str, str]] = {"inputs": "memory://conf-in-{u}",
                                             "outputs": "memory://conf-out-{u}",
                                             "states": "memory://?bus=conf-{u}"}

    @pytest.fixture
    def backend(self) -> Any:
        raise NotImplementedError("A backend test module must provide the 'backend' fixture.")

    def logged_line(self, handle: Any) -> str:
        """Make the function log something and return a line that must show in its logs."""
        handle.invoke(params={"n": "7"})
        return "log-line-7"

    # -- deploy and status -------------------------------------------------------------------

    def test_deploy_reports_status_phases_and_address(self, backend: Any) -> None:
        fn = make_function("def f(request):\n    return {'echo': request.args.get('x')}\n")
        handle = ofnotebook.deploy(fn, "conf-echo", target=backend)
        assert handle.status == self.running_status
        assert handle.name == "conf-echo" and handle.target == self.target
        assert set(handle.timings) >= {"capture", "package"}
        finished = [e.phase for e in handle.events if e.state == "finished"]
        assert finished[:2] == ["capture", "package"] and set(finished) <= set(PHASES)
        if self.reachable:
            assert handle.url.startswith("http")
            assert handle.invoke(params={"x": "1"}).json() == {"echo": "1"}

    def test_handle_is_still_the_plain_function(self, backend: Any) -> None:
        fn = make_function("def f(x):\n    return x * 2\n")
        handle = ofnotebook.deploy(fn, "conf-plain", target=backend)
        assert handle(21) == 42

    def test_unchanged_redeploy_reuses(self, backend: Any) -> None:
        source = "def f(request):\n    return 'same'\n"
        first = ofnotebook.deploy(make_function(source), "conf-reuse", target=backend)
        second = ofnotebook.deploy(make_function(source), "conf-reuse", target=backend)
        if self.reuses_unchanged:
            assert second.deployment is first.deployment and second.reused
            assert "start" not in second.timings and "deploy" not in second.timings
        else:
            assert second.deployment is not first.deployment and not second.reused
        assert [d.name for d in backend.deployments()].count("conf-reuse") == 1

    def test_edit_replaces(self, backend: Any) -> None:
        first = ofnotebook.deploy(make_function("def f(request):\n    return 'v1'\n"),
                                  "conf-edit", target=backend)
        second = ofnotebook.deploy(make_function("def f(request):\n    return 'v2'\n"),
                                   "conf-edit", target=backend)
        assert second.digest != first.digest and second.deployment is not first.deployment
        if self.reachable:
            assert second.invoke().text == "v2"
        wait_for(lambda: first.status == self.replaced_status,
                 message=lambda: f"the replaced deployment is {first.status!r}")
        assert second.status == self.running_status
        assert [d.name for d in backend.deployments()].count("conf-edit") == 1

    # -- invoke ------------------------------------------------------------------------------

    def test_invoke_or_say_why_not(self, backend: Any) -> None:
        fn = make_function("def f(request):\n    raise ValueError('bad input ' + "
                           "request.args['v'])\n")
        handle = ofnotebook.deploy(fn, "conf-error", target=backend)
        if self.reachable:
            with pytest.raises(RemoteFunctionError) as info:
                handle.invoke(params={"v": "42"})
            assert info.value.ename == "ValueError" and info.value.evalue == "bad input 42"
            assert "raise ValueError" in info.value.traceback
            assert info.value.function_name == "conf-error"
            assert handle.last_invocation is not None
            assert handle.last_invocation.status == 500
        elif self.invoke_unsupported:
            with pytest.raises(UnsupportedError, match=f"The {self.target} target") as info:
                handle.invoke(params={"v": "42"})
            assert (info.value.target, info.value.verb) == (self.target, "invoke")
            assert "local target" in str(info.value)
        else:  # an address inside a cluster: declared, and named when it cannot be reached
            assert handle.deployment.invoke_url() == handle.url
            assert handle.url.startswith("http")
            with pytest.raises(InvocationError, match=f"Could not reach function "
                                                      f"'conf-error' at {handle.url}"):
                handle.invoke(timeout=2)

    # -- logs --------------------------------------------------------------------------------

    def test_logs(self, backend: Any) -> None:
        fn = make_function("def f(request):\n    print('log-line-' + request.args['n'], "
                           "flush=True)\n    return 'ok'\n")
        handle = ofnotebook.deploy(fn, "conf-logs", target=backend)
        followed: list[str] = []
        unsubscribe = handle.deployment.subscribe_logs(followed.append)
        line = self.logged_line(handle)
        wait_for(lambda: line in handle.logs(), message=lambda: f"{line!r} not in the logs: "
                                                             f"{handle.logs()[-2000:]}")
        assert line in handle.logs(tail=5)
        assert all(isinstance(entry, str) for entry in handle.deployment.logs())
        unsubscribe()

    # -- stop --------------------------------------------------------------------------------

    def test_stop(self, backend: Any) -> None:
        handle = ofnotebook.deploy(make_function("def f(request):\n    return 'x'\n"),
                                   "conf-stop", target=backend)
        handle.stop()
        assert handle.status == "stopped"
        assert "conf-stop" not in [d.name for d in backend.deployments()]
        with pytest.raises(InvocationError):
            handle.invoke(timeout=2)
        handle.stop()  # idempotent
        assert handle.status == "stopped"

    # -- the Dapr verbs: publish, read_state, events -----------------------------------------

    def test_publish_state_and_events(self, backend: Any) -> None:
        u = uid(6)
        items = {role: {name: uri.format(u=u)} for (role, uri), name in
                 zip(self.components.items(), ("numbers", "out", "totals"))}
        handle = ofnotebook.deploy(make_function(DAPR_FUNCTION, name="tally"),
                                   f"conf-dapr-{u}", target=backend, **items)
        assert handle.runtime == "async" and handle.status == self.running_status
        with pytest.raises(InvocationError, match="asynchronous"):
            handle.invoke()
        if self.supports_dapr_verbs:
            handle.publish("numbers", {"n": 20})
            handle.wait_for_outputs(1, timeout=30)  # one at a time: the state adds up
            handle.publish("numbers", {"n": 22})
            assert [o.data for o in handle.wait_for_outputs(2, timeout=30)] == [20, 42]
            assert [o.name for o in handle.outputs] == ["out", "out"]
            assert handle.get_state("sum") == 42 and handle.get_state("sum", "totals") == 42
            assert handle.stats["events_in"] == 2 and handle.stats["events_out"] == 2
            assert handle.dead_letters == []
            return
        calls: dict[str, Callable[[], Any]] = {
            "publish": lambda: handle.publish("numbers", {"n": 1}),
            "read_state": lambda: handle.get_state("sum"),
            "events": lambda: handle.outputs}
        for verb, call in calls.items():
            with pytest.raises(UnsupportedError, match=f"The {self.target} target") as info:
                call()
            assert (info.value.target, info.value.verb) == (self.target, verb)
            assert info.value.function_name == handle.name
            assert "local target" in str(info.value)  # what to use instead
        for reader in (lambda: handle.stats, lambda: handle.dead_letters,
                       lambda: handle.wait_for_outputs(1, timeout=1)):
            with pytest.raises(UnsupportedError):
                reader()
