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
    assert "#1a7f37" not in view.event_result.value  # not green: whether it worked is not known
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


# -- issue 13: logs that follow, errors that read, honest controls, progress, metrics --------

def test_logs_pane_opens_at_its_end_and_scrolling_up_unticks_follow() -> None:
    view = FunctionView("f", "sync", "local")
    for i in range(40):
        view.state.on_log(f"line {i}")
    view.state.on_log("[build] STEP 1/2: FROM python")
    view.flush()
    pane = view.logs.value
    # a redraw replaces the pane; a column-reverse pane opens scrolled to its end
    assert "flex-direction:column-reverse" in pane and "overflow:auto" in pane
    assert '<span class="ofn-last"><span class="ofn-src"' in pane and "STEP 1/2" in pane
    # in the page: scrolling away unticks follow and keeps the place, each redraw restores
    # it (the image's onerror runs after the redraw), "jump to end" scrolls back
    assert "onscroll=" in pane and "ofn-follow input" in pane and "dataset.hold" in pane
    assert 'onerror="' in pane and 'class="ofn-jump"' in pane
    assert "ofn-follow" in view.follow._dom_classes
    assert pane.index("line 0") < pane.index("line 39") < pane.index("STEP 1/2")  # in order
    view.follow.value = False  # what the pane's scroll handler clicks
    view.state.on_log("held back")
    view.flush()
    assert "held back" not in view.logs.value
    before = view.logs.value
    view.follow.value = True  # ticked again (by "jump to end"): redrawn at once
    assert "held back" in view.logs.value
    view.follow.value = False
    view.follow.value = True  # no new line, still a new pane (which opens at its end)
    assert view.logs.value != before and 'data-jumps="2"' in view.logs.value


def test_a_build_error_reads_as_its_step_and_pips_error_line() -> None:
    from ofnotebook.errors import BuildError
    from ofnotebook.view import summarize

    error = BuildError("Building the image for 'pd' failed at STEP 9/10: RUN pip install -r "
                       "requirements.txt\nThe command returned a non-zero code: 1\n"
                       "Last build lines:\nCollecting pandsa==9\n"
                       "ERROR: No matching distribution found for pandsa==9\n  more  spaced")
    summary, details = summarize(error)
    assert summary == ("Building the image for 'pd' failed at STEP 9/10: RUN pip install -r "
                       "requirements.txt: ERROR: No matching distribution found for pandsa==9")
    assert details.startswith("The command returned") and "  more  spaced" in details
    view = FunctionView("pd", "sync", "container")
    view.fail(error)
    html = view.error.value
    assert html.count('class="ofn-error"') == 1 and summary.replace("'", "&#x27;") in html
    assert "<details" in html and "white-space:pre;line-height:normal" in html
    assert "  more  spaced" in html  # the block keeps its spaces and newlines
    assert "ofn-status-failed" in view.header.value
    assert getattr(error, "shown_in_view", False)  # the cell's report may stay one line


def test_a_failed_deploy_shows_its_error_and_redeploy_only(local_backend: Any) -> None:
    import socket

    from ofnotebook import api
    from ofnotebook.request import DeployRequest

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    fn = make_function("def f(request):\n    return 'up'\n")
    planned = api.plan(fn, DeployRequest(name="retry-me", target=local_backend, port=port))
    view = FunctionView(planned.name, planned.runtime, planned.target)
    assert view.stop_button.disabled and view.send.disabled  # deploying: nothing to act on
    try:
        with pytest.raises(ofnotebook.DeployError):
            view.deploy(planned)
    finally:
        holder.close()
    assert view.state.status == "failed" and str(port) in view.error.value
    assert view.tabs.layout.display == "none" and view.stop_button.layout.display == "none"
    assert not view.redeploy_button.disabled  # Redeploy only
    view._redeploy()  # the port is free now: the same plan again
    assert view.handle is not None and view.handle.status == "running"
    assert view.handle.url.endswith(f":{port}/") or f":{port}" in view.handle.url
    assert view.error.value == "" and view.tabs.layout.display is None
    assert not view.send.disabled and not view.stop_button.disabled


def test_ofnotebook_warnings_become_one_amber_line() -> None:
    import warnings

    import ofnotebook.images

    view = FunctionView("f", "sync", "container")
    with pytest.warns(UserWarning) as shown:
        with view.warnings_to_view():
            for _ in range(2):  # the same warning twice: one line
                warnings.warn_explicit("The base image has Python 3.11.2, the notebook 3.11.9",
                                       UserWarning, ofnotebook.images.__file__, 129)
            warnings.warn_explicit("someone else's", UserWarning, "/elsewhere/lib.py", 1)
    assert view.warnings.value.count("ofn-warning") == 1
    assert "Python 3.11.2" in view.warnings.value and "images.py" not in view.warnings.value
    # not ours: shown as Python shows it, and only that one
    assert [str(w.message) for w in shown] == ["someone else's"]
    view.on_phase(phase("capture", "progress", detail="warning: --env API_TOKEN looks like a "
                                                      "secret"))
    assert view.warnings.value.count("ofn-warning") == 2 and "API_TOKEN" not in view.logs.value


def test_build_progress_ticks_and_shows_the_current_step() -> None:
    view = FunctionView("pd", "sync", "container")
    view.on_phase(PhaseEvent("build", "started", time.time() - 7))
    assert "7 s" in view.phases.value  # elapsed, not "…"
    view.on_phase(phase("build", "progress", detail="STEP 9/10: RUN pip install pandas"))
    assert "STEP 9/10: RUN pip install pandas" in view.phases.value
    assert 'class="ofn-bar"' in view.phases.value and "width:80%" in view.phases.value
    assert "[build] STEP 9/10" in view.state.logs[-1]
    view.on_phase(phase("build", "finished", 11.0))
    assert "ofn-step" not in view.phases.value and "11000 ms" in view.phases.value
    view.on_phase(phase("push", "started"))
    view.on_phase(phase("push", "progress", detail="layer 2/3: 24.0 MB of 91.5 MB"))
    assert "24.0 MB of 91.5 MB" in view.phases.value and "ofn-bar" not in view.phases.value


def test_sync_and_async_headers_counters_and_invocations(local_backend: Any) -> None:
    sync = ofnotebook.deploy(make_function("def f(request):\n    return {'a': [1, 2]}\n"),
                             "honest-sync", target=local_backend)
    view = ofnotebook.view_for(sync)
    view.flush()
    assert "events in" not in view.outputs.value  # a sync function without outputs
    assert "events/s" not in view.metrics.value and "requests/s" in view.metrics.value
    sync.invoke(params={"name": "ada", "x": "1 2"})
    wait_for(lambda: "ofn-invocation" in view.response.value, 30)
    call = sync.last_invocation
    assert call is not None and call.path == "/?name=ada&x=1+2"
    assert "GET /?name=ada&amp;x=1+2" in view.response.value
    assert '"a": [\n    1,' in view.response.value.replace("&quot;", '"')  # pretty JSON
    assert "&lt; Content-Type: application/json" in view.response.value  # headers folded
    sync.invoke("/echo", json={"n": 1})
    wait_for(lambda: "POST /echo" in view.response.value, 30)
    curl = ofnotebook.view.curl_for(sync.last_invocation)  # type: ignore[arg-type]
    assert curl == (f"curl -X POST {sync.url.rstrip('/')}/echo -H 'Content-Type: "
                    f"application/json' --data-raw '{{\"n\": 1}}'")
    assert 'data-curl="curl -X POST' in view.response.value
    import shlex
    import subprocess

    ran = subprocess.run(shlex.split(curl), capture_output=True, text=True, timeout=30)
    assert ran.returncode == 0 and '"a"' in ran.stdout  # the copied command works as is

    handle = ofnotebook.deploy(make_function("def g(ctx, data):\n    ctx.send('out', data)\n",
                                             name="g"), "honest-async", target=local_backend,
                               inputs={"numbers": "memory://honest-in"},
                               outputs={"out": "memory://honest-out"})
    aview = ofnotebook.view_for(handle)
    assert "grpc://" not in aview.header.value and "ofn-url" not in aview.header.value
    assert "in: numbers (pubsub.in-memory/honest-in)" in aview.header.value
    assert "out: out (pubsub.in-memory/honest-out)" in aview.header.value
    assert "events in 0" in aview.outputs.value and "events/s" in aview.metrics.value


def test_redeploy_keeps_the_port_and_the_url(local_backend: Any) -> None:
    handle = ofnotebook.deploy(make_function("def f(request):\n    return 'x'\n"),
                               "same-port", target=local_backend)
    view = ofnotebook.view_for(handle)
    url, pid = handle.url, handle.deployment.process.pid
    view.state.set_error("could not reach same-port")
    view._redeploy()
    assert handle.deployment.process.pid != pid and handle.url == url
    assert handle.status == "running" and view.error.value == ""
    assert handle.invoke().text == "x"


def test_unchanged_rerun_says_it_reuses(local_backend: Any) -> None:
    fn = make_function("def f(request):\n    return 'x'\n")
    ofnotebook.deploy(fn, "reuse-me", target=local_backend)
    again = ofnotebook.deploy(fn, "reuse-me", target=local_backend)
    view = ofnotebook.view_for(again)
    assert again.reused and f"unchanged: reusing reuse-me (digest {again.digest[:12]})" \
        in view.phases.value


def test_dead_letters_table_and_replay_redelivers(local_backend: Any, tmp_path: Any) -> None:
    flag = tmp_path / "ready"
    fn = make_function(f"import os\ndef h(ctx, data):\n    if not os.path.exists({str(flag)!r}):"
                       f"\n        raise RuntimeError('not ready')\n    ctx.send('out', data)\n",
                       name="h")
    handle = ofnotebook.deploy(fn, "replayed", target=local_backend,
                               inputs={"jobs": "memory://replay-in"},
                               outputs={"out": "memory://replay-out"})
    view = ofnotebook.view_for(handle)
    handle.publish("jobs", {"job": 7})
    wait_for(lambda: handle.stats["dead_letters"] == 1, 60)
    wait_for(lambda: len(view.dead_letters.children) == 2, 10)  # title + one row
    row = view.dead_letters.children[1]
    assert "the function raised" in row.children[0].value  # the stand-in's error
    assert "{&quot;job&quot;: 7}" in row.children[0].value and "8 attempts" in row.children[0].value
    wait_for(lambda: "ofn-count-dead_letters" in view.metrics.value
             and "#cf222e" in view.metrics.value.split("ofn-count-dead_letters")[1][:80], 10)
    flag.write_text("")
    view._replay(view._tracker.dead_letters[0])  # type: ignore[union-attr]  # Replay's action
    assert [o.data for o in handle.wait_for_outputs(1, timeout=20)] == [{"job": 7}]
    wait_for(lambda: '{&quot;job&quot;: 7}' in view.outputs.value, 10)


def test_metrics_history_is_bounded_and_draws_sparklines() -> None:
    from ofnotebook.viewmetrics import WINDOW, MetricsHistory, metrics_html, sparkline

    history = MetricsHistory()
    start = 1_000_000.0
    history.tick(start)
    for second in range(3 * WINDOW):
        for latency in (1.0, 2.0, 30.0):
            history.on_invocation(latency, failed=latency > 10)
        history.on_counts({"events_in": second * 5, "errors": 0, "dead_letters": second // 100})
        history.tick(start + second + 1)
    assert len(history.samples) == WINDOW
    last = history.samples[-1]
    assert (last.requests, last.errors, last.p50, last.p95) == (3, 1, 2.0, 30.0)
    assert last.events == 5
    drawn = metrics_html(history, True, {"events_in": 10, "dead_letters": 2})
    assert drawn.count("<svg") == 6 and "<polyline" in drawn
    assert "dead letters 2" in drawn
    assert 'points="0.0,9.0 5.0,5.5 10.0,2.0"' in sparkline([0, 1, 2], width=10, height=10)
    # a gap of idle seconds is drawn as zeros, and never more than the window
    history.tick(start + 10 * WINDOW)
    assert len(history.samples) == WINDOW and history.samples[-1].requests == 0


def test_function_list_table_and_compact_view(local_backend: Any) -> None:
    handle = ofnotebook.deploy(make_function("def f(request):\n    return 'x'\n"),
                               "listed", target=local_backend)
    table = widget.function_table([handle])
    assert "listed" in table.rows[0].value and "running" in table.rows[0].value
    assert handle.url in table.rows[0].value and "req/s" in table.rows[0].value
    stop, logs = table.children[0].children[1:]
    logs.click()
    assert "listed" in table.log_box.value
    handle.stop()
    table.flush()
    assert "ofn-row-stopped" in table.rows[0].value
    view = ofnotebook.view_for(handle)
    view.collapse.value = True
    assert view.body_box.layout.display == "none"
    view.help.value = True
    assert view.help_text.layout.display is None and "%%function?" in view.help_text.value


def test_a_proxied_url_where_jupyter_server_proxy_can_forward_the_port() -> None:
    """On a remote Jupyter server the browser cannot open 127.0.0.1: with
    jupyter-server-proxy installed the view also links the port through the server."""
    from ofnotebook.viewparts import proxied_url

    url = "http://127.0.0.1:8123/"
    hub = {"JUPYTERHUB_SERVICE_PREFIX": "/user/ada/"}
    assert proxied_url(url, hub, has_proxy=True) == "/user/ada/proxy/8123/"
    assert proxied_url(url, {}, has_proxy=True) == "/proxy/8123/"
    assert proxied_url("http://127.0.0.1:8123/api", {"JUPYTERHUB_SERVICE_PREFIX": "/u/b"},
                       has_proxy=True) == "/u/b/proxy/8123/api"
    assert proxied_url(url, hub, has_proxy=False) == ""  # nothing would forward it
    assert proxied_url("grpc://127.0.0.1:8123", hub, has_proxy=True) == ""
    assert proxied_url("http://10.0.0.5:8080/", hub, has_proxy=True) == ""  # not ours
    import importlib.util

    installed = importlib.util.find_spec("jupyter_server_proxy") is not None
    assert bool(proxied_url(url, hub)) == installed  # the real installation decides


def test_the_header_links_the_proxied_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from ofnotebook import viewparts
    from ofnotebook.view import ViewState

    state = ViewState("greet", "sync", "local")
    state.set_status("running", "http://127.0.0.1:8123/")
    assert ("proxy/8123" in state.header_html()) == viewparts._has_server_proxy()
    monkeypatch.setattr(viewparts, "_has_server_proxy", lambda: True)  # as where installed
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    assert 'href="/user/ada/proxy/8123/"' in state.header_html()
    assert "via Jupyter: /user/ada/proxy/8123/" in state.header_html()
