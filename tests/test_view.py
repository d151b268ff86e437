"""The live view without a browser: widget model state after each phase event, against real
deployed functions; the text fallback; thread safety under a flood of log lines."""

from __future__ import annotations

import io
import threading
import time
import tracemalloc
from typing import Any

import pytest

import ofnotebook
from ofnotebook.backends.base import PhaseEvent
from ofnotebook.view import LOG_LINES, TextProgress, ViewState, widgets_enabled
from ofnotebook import widget
from ofnotebook.widget import FunctionView
from tests.helpers import make_function, wait_for

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def phase(name: str, state: str, duration: float | None = None, detail: str = "") -> PhaseEvent:
    return PhaseEvent(name, state, time.time(), duration, detail)


def test_widget_model_after_each_phase_event() -> None:
    view = FunctionView("greet", "sync", "local")
    assert "deploying" in view.header.value and "greet" in view.header.value
    view.on_phase(phase("capture", "started"))
    assert "ofn-phase-started" in view.phases.value and "capture" in view.phases.value
    view.on_phase(phase("capture", "finished", 0.012))
    assert "ofn-phase-finished" in view.phases.value and "12 ms" in view.phases.value
    view.on_phase(phase("package", "finished", 0.0016))
    view.on_phase(phase("start", "started", detail="local process"))
    # phases keep the order they happen in, whatever order they were reported
    assert view.phases.value.index("capture") < view.phases.value.index("package") \
        < view.phases.value.index("start")
    view.on_phase(phase("start", "failed", 0.2, detail="port 8080 is taken"))
    assert "ofn-phase-failed" in view.phases.value
    assert "ofn-status-failed" in view.header.value
    assert "start failed: port 8080 is taken" in view.error.value
    assert view._repr_mimebundle_()["text/plain"].startswith("greet [sync · local] failed")


def test_view_follows_a_deployed_sync_function(local_backend: Any) -> None:
    fn = make_function("def greet(request):\n"
                       "    print('greeting', request.args.get('name'))\n"
                       "    if request.args.get('name') == 'boom':\n"
                       "        raise ValueError('no booms')\n"
                       "    return {'hello': request.args.get('name')}\n", name="greet")
    view = FunctionView("greet", "sync", "local")
    handle = ofnotebook.deploy(fn, "view-sync", target=local_backend, on_event=view.on_phase)
    assert "ofn-phase-finished" in view.phases.value and "ready" in view.phases.value
    view.attach(handle)
    assert "ofn-status-running" in view.header.value and handle.url in view.header.value
    assert not view.send.disabled and not view.stop_button.disabled

    handle.invoke(params={"name": "ada"})  # from code: the view shows it too
    wait_for(lambda: "200" in view.response.value, 30)
    assert "GET /" in view.response.value and "ada" in view.response.value
    wait_for(lambda: "greeting ada" in view.logs.value, 30)

    view.method.value, view.path.value, view.body.value = "POST", "/?name=boom", "{}"
    view._invoke()  # what the Send button runs
    assert "500" in view.response.value and "ValueError: no booms" in view.response.value
    assert "<details" in view.response.value and "raise ValueError" in view.response.value

    view.body.value = "{not json"
    view._invoke()
    assert "not JSON" in view.response.value

    pid = handle.deployment.process.pid
    view._redeploy()
    assert handle.deployment.process.pid != pid and handle.status == "running"
    assert "ofn-status-running" in view.header.value
    view._stop()
    assert handle.status == "stopped" and "ofn-status-stopped" in view.header.value
    assert view.stop_button.disabled


def test_view_of_an_async_function_sends_test_events_and_lists_outputs(local_backend: Any
                                                                       ) -> None:
    fn = make_function("def double(ctx, data):\n    ctx.send('out', data['n'] * 2)\n",
                       name="double")
    handle = ofnotebook.deploy(fn, "view-async", target=local_backend,
                               inputs={"numbers": "memory://view-numbers"},
                               outputs={"out": "memory://view-doubled"})
    view = ofnotebook.view_for(handle)
    assert ofnotebook.view_for(handle) is view  # made once, then the same one
    assert view.tabs.get_title(0) == "Send event" and view.input_name.options == ("numbers",)
    view.event_body.value = '{"n": 21}'
    view._publish()
    assert "published to numbers" in view.event_result.value
    handle.wait_for_outputs(1, timeout=20)
    wait_for(lambda: "42" in view.outputs.value, 30)
    assert "<td>out</td>" in view.outputs.value
    wait_for(lambda: "events out 1" in view.outputs.value, 30)


def test_ten_thousand_log_lines_from_threads_stay_bounded() -> None:
    view = FunctionView("flood", "sync", "local")
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    workers = [threading.Thread(target=lambda k=k: [view.state.on_log(f"w{k} line {i:05d} " +
                                                                          "x" * 80)
                                                    for i in range(2500)])
               for k in range(4)]
    for worker in workers:
        worker.start()
    while any(worker.is_alive() for worker in workers):
        view.flush()  # redraws race the writers, as the flusher thread does
    for worker in workers:
        worker.join()
    view.flush()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert view.state.lines_seen == 10_000
    assert len(view.state.logs) == LOG_LINES
    assert view.logs.value.count("\n") == LOG_LINES - 1
    assert "9500 earlier lines" in view.logs.value
    assert "line 02499" in view.logs.value  # the newest lines are the ones shown
    # bounded: the buffer (500 lines of ~100 B) and one rendering, not 10,000 lines
    assert grown < 400_000, grown


def test_follow_off_freezes_the_log_pane() -> None:
    view = FunctionView("f", "sync", "local")
    view.state.on_log("first")
    view.flush()
    view.follow.value = False
    view.state.on_log("second")
    view.flush()
    assert "first" in view.logs.value and "second" not in view.logs.value


def test_text_progress_prints_only_long_phases() -> None:
    out = io.StringIO()
    progress = TextProgress(out)
    for event in (phase("capture", "started"), phase("capture", "finished", 0.01),
                  phase("build", "started", detail="podman"),
                  phase("build", "finished", 12.34),
                  phase("push", "started"), phase("push", "failed", 1.0, "denied")):
        progress.on_phase(event)
    assert out.getvalue().splitlines() == ["build (podman) …", "build done in 12.3 s",
                                           "push …", "push failed: denied in 1.0 s"]


def test_view_state_text_twin() -> None:
    state = ViewState("f", "async", "local")
    state.on_phase(phase("capture", "finished", 0.004))
    state.on_phase(phase("ready", "started"))
    state.set_status("deploying")
    assert state.render_text() == "f [async · local] deploying\n  phases   ✓capture 4 ms · ready …"


def test_outside_a_kernel_the_magic_prints_text(ip: Any, capsys: pytest.CaptureFixture[str]
                                                ) -> None:
    assert not widgets_enabled()
    handle = ip.run_cell_magic("function", "text-mode", "def f(request):\n    return 'x'\n")
    assert handle not in widget._views and capsys.readouterr().out == ""  # local phases: quick
    bundle = ip.display_formatter.format(handle)[0]  # IPython uses __repr__ / _repr_html_
    assert WIDGET_MIME not in bundle and bundle["text/plain"] == repr(handle)
    assert bundle["text/html"] == handle._repr_html_()


def test_with_widgets_on_the_cell_output_is_the_live_view(
        ip: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OFNOTEBOOK_WIDGETS", "on")
    result = ip.run_cell_magic("function", "widget-mode", "def f(request):\n    return 'y'\n")
    assert result is None  # the view was displayed; no second copy as the cell's result
    handle = ip.user_ns["f"]
    view = widget._views[handle]  # the view the magic drew is the handle's view
    assert view.handle is handle and handle.view is view and ofnotebook.view_for(handle) is view
    assert "ofn-status-running" in view.header.value
    bundle = ip.display_formatter.format(handle)[0]  # what display(handle) shows
    assert bundle[WIDGET_MIME]["model_id"] == view.model_id
    assert bundle["text/plain"] == repr(handle)
    # what a front end without widgets printed: the text twin, first deploying then final
    printed = capsys.readouterr().out
    assert "widget-mode [sync · local] deploying" in printed and "<FunctionHandle" in printed


def test_a_failed_deploy_shows_in_the_view(ip: Any, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OFNOTEBOOK_WIDGETS", "on")
    ip.run_cell("%%function bad-output --output out=nosuch://x\n"
                   "def f(ctx, data):\n    return 1\n")
    printed = capsys.readouterr()
    assert "bad-output [sync · local] failed" in printed.out
    assert "nosuch://x" in printed.out
    assert "Traceback" not in printed.err + printed.out  # one short message, no wall
    assert "f" not in ip.user_ns or not hasattr(ip.user_ns["f"], "deployment")


def test_widgets_setting_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFNOTEBOOK_WIDGETS", "maybe")
    with pytest.raises(ofnotebook.ConfigError, match="OFNOTEBOOK_WIDGETS='maybe'.*auto"):
        widgets_enabled()


def test_a_bad_widgets_setting_never_breaks_displaying_a_handle(
        ip: Any, local_backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    handle = ofnotebook.deploy(make_function("def f(request):\n    return 1\n"), "bad-setting",
                               target=local_backend)
    monkeypatch.setenv("OFNOTEBOOK_WIDGETS", "maybe")
    bundle = ip.display_formatter.format(handle)[0]
    assert WIDGET_MIME not in bundle and "bad-setting" in bundle["text/plain"]


def test_the_view_layer_is_attached_by_the_extension_and_removed_with_it(
        ip: Any, local_backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFNOTEBOOK_WIDGETS", "on")
    handle = ofnotebook.deploy(make_function("def f(request):\n    return 1\n"), "hooked",
                               target=local_backend)
    view = handle.view  # the provider the extension registered: made once, attached
    assert view is ofnotebook.view_for(handle) and view.handle is handle
    assert ip.display_formatter.format(handle)[0][WIDGET_MIME]["model_id"] == view.model_id
    ip.run_line_magic("unload_ext", "ofnotebook")
    try:
        bundle = ip.display_formatter.format(handle)[0]
        assert WIDGET_MIME not in bundle and bundle["text/plain"] == repr(handle)
        with pytest.raises(ofnotebook.OfnotebookError, match=r"%load_ext ofnotebook.*view_for"):
            handle.view  # noqa: B018
    finally:
        ip.run_line_magic("load_ext", "ofnotebook")  # the fixture unloads it again


def test_invoke_on_the_yaml_target_says_why_in_the_view(tmp_path: Any) -> None:
    """Nothing runs on the yaml target: the Invoke button shows the refusal, not silence."""
    from ofnotebook.backends.gitops import YamlBackend

    handle = ofnotebook.deploy(make_function("def f(request):\n    return 1\n"), "yaml-view",
                               target=YamlBackend(tmp_path))
    view = ofnotebook.view_for(handle)
    view._invoke()  # what the Send button runs
    assert "The yaml target cannot invoke the function" in view.response.value, \
        view.response.value
    assert handle.last_invocation is None


def test_deploy_in_a_notebook_without_the_extension_still_draws_the_view(
        ip: Any, local_backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from ofnotebook import display

    monkeypatch.setenv("OFNOTEBOOK_WIDGETS", "on")
    ip.run_line_magic("unload_ext", "ofnotebook")
    try:
        display._decided.pop(id(ip))  # a shell that never ran %load_ext ofnotebook
        handle = ofnotebook.deploy(make_function("def f(request):\n    return 1\n"),
                                   "no-ext", target=local_backend)
        assert ip.display_formatter.format(handle)[0][WIDGET_MIME]["model_id"] == \
            handle.view.model_id
        # but an explicit %unload_ext is respected by later deploys
        ip.run_line_magic("load_ext", "ofnotebook")
        ip.run_line_magic("unload_ext", "ofnotebook")
        again = ofnotebook.deploy(make_function("def f(request):\n    return 2\n"),
                                  "no-ext-2", target=local_backend)
        assert WIDGET_MIME not in ip.display_formatter.format(again)[0]
    finally:
        ip.run_line_magic("load_ext", "ofnotebook")
