"""The live view in a real JupyterLab, in Debian's Chromium (headless), driven by Playwright.

JupyterLab runs on 127.0.0.1 with a token, in a temp directory holding a copy of
``notebooks/quickstart.ipynb`` (outputs cleared). The test runs all cells from the Run menu and
asserts what the rendered widget shows: the Running status, the invoke response and a log line
(in the Logs tab, after clicking it). It saves screenshots; set ``SAVE_WIDGET_SCREENSHOT=PATH``
to also write the view's screenshot there.

Needs ``/usr/bin/chromium`` (Debian's package ``chromium``; .ci/run installs it). Elsewhere the
test skips with that reason; under CI a missing browser fails it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest
import requests

from tests.helpers import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As the machine notes say: without the background-networking flags Chromium keeps trying to
# reach outside hosts, which this closed network refuses.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.browser


def _need_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing; CI must install Debian's 'chromium' package")
        pytest.skip("Chromium is not installed (apt-get install chromium)")


class Lab:
    def __init__(self, process: subprocess.Popen[bytes], port: int, token: str, root: Path,
                 cache: Path, log: Path) -> None:
        self.process, self.port, self.token = process, port, token
        self.root, self.cache, self.log = root, cache, log
        self.base = f"http://127.0.0.1:{port}"
        self.code_cells = 0

    def wait_for_idle_kernel(self, timeout: float = 60) -> None:
        """Until the notebook's session has a kernel that reports idle."""
        def idle() -> bool:
            sessions = self.api("GET", "/api/sessions")
            return bool(sessions) and sessions[0]["kernel"]["execution_state"] == "idle"

        wait_for(idle, timeout, lambda: "the notebook's kernel did not start:\n"
                 + self.log.read_text(), interval=0.2)

    def api(self, method: str, path: str) -> Any:
        session = requests.Session()
        session.trust_env = False
        response = session.request(method, f"{self.base}{path}",
                                   headers={"Authorization": f"token {self.token}"}, timeout=10)
        response.raise_for_status()
        return response.json() if response.content else None


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    _need_chromium()
    with start_lab(tmp_path) as server:
        yield server


#: Installs a MutationObserver that sets ``window.__ofnSawDeploying`` once the view named by
#: its argument shows the "deploying" status, however briefly.
SAW_DEPLOYING_JS = """(name) => {
  window.__ofnSawDeploying = false;
  const seen = () => [...document.querySelectorAll('.ofnotebook-view')].some(v =>
      [...v.querySelectorAll('.ofn-name')].some(n => n.textContent.trim() === name)
      && v.querySelector('.ofn-status-deploying'));
  new MutationObserver(() => { if (seen()) window.__ofnSawDeploying = true; })
      .observe(document.body, {subtree: true, childList: true, characterData: true,
                               attributes: true});
}"""


def report_failure(page: Any, lab: Any, tmp_path: Path) -> None:
    """What a failed browser test leaves to read: a full-page screenshot and JupyterLab's log."""
    failed = tmp_path / "failure.png"
    page.screenshot(path=str(failed), full_page=True)
    print(f"screenshot of the failure: {failed}\nJupyterLab log:\n{lab.log.read_text()}")


@contextlib.contextmanager
def start_lab(tmp_path: Path) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 in ``tmp_path/lab`` with a copy of the quickstart (outputs
    cleared); stopped afterwards, and nothing its kernels deployed may outlive it. Also what
    benchmarks/bench_view.py measures the page with."""
    root = tmp_path / "lab"
    root.mkdir()
    notebook = json.loads((ROOT / "notebooks" / "quickstart.ipynb").read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    (root / "quickstart.ipynb").write_text(json.dumps(notebook))
    code_cells = sum(cell["cell_type"] == "code" for cell in notebook["cells"])
    # User settings: every cell stays in the page (JupyterLab 4 otherwise detaches cells scrolled
    # out of view), and no news prompt over the notebook.
    settings = tmp_path / "settings"
    for plugin, values in (("notebook-extension/tracker", {"windowingMode": "none"}),
                           ("apputils-extension/notification", {"fetchNews": "false"})):
        path = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token, cache = free_port(), uuid.uuid4().hex, tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFNOTEBOOK_")}
    env.update(OFNOTEBOOK_CACHE_DIR=str(cache), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"), PYTHONPATH=str(ROOT),
               JUPYTERLAB_SETTINGS_DIR=str(settings))
    log = tmp_path / "lab.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
             "--ServerApp.allow_root=True", "--ServerApp.terminals_enabled=False",
             "--LabApp.extension_manager=readonly", "--LabApp.news_url=",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Lab(process, port, token, root, cache, log)
    server.code_cells = code_cells
    try:
        def up() -> bool:
            try:
                server.api("GET", "/api/status")
                return True
            except requests.RequestException:
                assert process.poll() is None, log.read_text()
                return False

        wait_for(up, 60, lambda: "JupyterLab did not start:\n" + log.read_text(), interval=0.2)
        yield server
    finally:
        try:
            for kernel in server.api("GET", "/api/kernels"):
                server.api("DELETE", f"/api/kernels/{kernel['id']}")
        except requests.RequestException:
            pass
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        # Nothing the kernel deployed may outlive it.
        wait_for(lambda: not _processes_using(cache), 15,
                 lambda: f"left behind: {[p.cmdline() for p in _processes_using(cache)]}",
                 interval=0.2)


def _processes_using(cache: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            if str(cache) in " ".join(proc.info["cmdline"] or []) or \
                    (proc.info["environ"] or {}).get("OFNOTEBOOK_CACHE_DIR") == str(cache):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def open_and_run_all(page: Any, lab: Lab, name: str) -> None:
    """Open notebook ``name`` in the lab, wait for its kernel, run all its cells."""
    from playwright.sync_api import expect

    page.goto(f"{lab.base}/lab/tree/{name}?token={lab.token}")
    expect(page.locator(".jp-NotebookPanel")).to_be_visible(timeout=60_000)
    lab.wait_for_idle_kernel()
    run_all(page)


def run_all(page: Any) -> None:
    """Run > Run All Cells, as a person would; the page may still be wiring the kernel when it
    first says idle, so a click that ran nothing is repeated once."""
    from playwright.sync_api import expect

    for attempt in range(2):
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        try:
            expect(page.locator(".jp-InputPrompt", has_text="[1]:")).to_have_count(
                1, timeout=20_000)
            return
        except AssertionError:
            if attempt:
                raise


def test_quickstart_view_in_jupyterlab(lab: Lab, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            open_and_run_all(page, lab, "quickstart.ipynb")
            view = page.locator(".ofnotebook-view").filter(
                has=page.locator(".ofn-name", has_text="greet"))
            expect(view.locator(".ofn-status-running")).to_be_visible(timeout=90_000)
            expect(view.locator(".ofn-name")).to_have_text("greet")
            # the notebook's greet.invoke(...) shows in the view: status and response body
            expect(view.locator(".ofn-invocation")).to_contain_text("200", timeout=30_000)
            expect(view.locator(".ofn-response")).to_contain_text("hello ada")
            # every phase drawn with its duration
            for name in ("capture", "package", "start", "ready"):
                expect(view.locator(".ofn-phase-finished", has_text=name)).to_be_visible()
            # the last code cell ran: the whole notebook went through in the browser
            expect(page.locator(".jp-InputPrompt", has_text=f"[{lab.code_cells}]:")
                   ).to_have_count(1, timeout=60_000)
            expect(page.locator(".jp-InputPrompt", has_text="[*]:")).to_have_count(0)
            view.locator(".lm-TabBar-tabLabel, .p-TabBar-tabLabel", has_text="Logs").click()
            expect(view.locator(".ofn-logs")).to_contain_text("greeting ada", timeout=30_000)
            view.scroll_into_view_if_needed()
            shot = tmp_path / "quickstart-view.png"
            view.screenshot(path=str(shot))
            page.screenshot(path=str(tmp_path / "quickstart-page.png"), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("SAVE_WIDGET_SCREENSHOT"):
                shutil.copy(shot, os.environ["SAVE_WIDGET_SCREENSHOT"])
        except Exception:
            report_failure(page, lab, tmp_path)
            raise
        finally:
            browser.close()


LIVE_CELLS = [
    "%load_ext ofnotebook",
    "%%function streamer\n"
    "def stream(request):\n"
    "    n = int(request.args.get('n', '1'))\n"
    "    for i in range(n):\n"
    "        print(f\"line {request.args.get('batch')}-{i:03d}\", flush=True)\n"
    "    if request.args.get('boom'):\n"
    "        raise ValueError('no booms here')\n"
    "    return {'printed': n}",
    # waits for the test to open the Logs tab, then streams 30 batches of lines
    "import os, time\n"
    "while not os.path.exists('go'):\n"
    "    time.sleep(0.1)\n"
    "for batch in range(30):\n"
    "    stream.invoke(params={'n': 20, 'batch': batch})\n"
    "    time.sleep(0.1)\n"
    "print('streamed')",
    "while not os.path.exists('boom'):  # after the test looked at the streamed logs\n"
    "    time.sleep(0.1)\n"
    "try:\n"
    "    stream.invoke(params={'n': 1, 'boom': 1})\n"
    "except Exception as error:\n"
    "    print('raised', type(error).__name__)",
    "import ofnotebook.view\n"
    "print('KERNELCURL=' + ofnotebook.view.curl_for(stream.last_invocation))",
    "READY = os.path.abspath('ready')",
    # fails until the test creates READY: its first event becomes a dead letter
    "%%function jobs --input jobs=memory://live-jobs --output out=memory://live-done\n"
    "def job(ctx, data):\n"
    "    if not os.path.exists(READY):\n"
    "        raise RuntimeError('not ready')\n"
    "    ctx.send('out', data)",
    "job.publish('jobs', {'job': 7})",
]

#: In the page: whether the log pane's last line lies inside the pane's visible box.
LAST_LINE_VISIBLE = """view => {
    const pane = view.querySelector('.ofn-logs-pane');
    const last = pane && pane.querySelector('.ofn-last');
    if (!last) return null;
    const a = pane.getBoundingClientRect(), b = last.getBoundingClientRect();
    return {visible: b.top >= a.top - 1 && b.bottom <= a.bottom + 1,
            overflowing: pane.scrollHeight > pane.clientHeight + 4, text: last.textContent};
}"""


def write_notebook(path: Path, sources: list[str]) -> None:
    """A notebook of code cells, not run yet."""
    cells = [{"cell_type": "code", "metadata": {}, "source": source, "outputs": [],
              "execution_count": None} for source in sources]
    path.write_text(json.dumps({
        "cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}))


def test_live_view_follows_folds_errors_copies_curl_and_keeps_its_port(lab: Lab,
                                                                         tmp_path: Path) -> None:
    """Issue 13 in the browser: follow keeps the last log line visible while lines stream in
    and scrolling up pauses it; a remote error is one summary line with a fold; the copied curl
    is the request's; Redeploy keeps the URL; screenshots in the light and dark themes."""
    from playwright.sync_api import expect, sync_playwright

    write_notebook(lab.root / "live.ipynb", LIVE_CELLS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            open_and_run_all(page, lab, "live.ipynb")
            view = page.locator(".ofnotebook-view").filter(
                has=page.locator(".ofn-name", has_text="streamer"))
            expect(view.locator(".ofn-status-running")).to_be_visible(timeout=90_000)
            view.locator(".lm-TabBar-tabLabel", has_text="Logs").click()
            (lab.root / "go").write_text("")
            samples = []
            while not page.locator(".jp-OutputArea-output", has_text="streamed").count():
                sample = view.evaluate(LAST_LINE_VISIBLE)
                if sample and sample["overflowing"]:
                    samples.append(sample)
                page.wait_for_timeout(50)
            assert len(samples) >= 5, samples  # the pane overflowed while lines came in
            hidden = [s for s in samples if not s["visible"]]
            assert not hidden, hidden  # follow: the newest line always in view
            expect(view.locator(".ofn-last")).to_contain_text("line 29-019", timeout=10_000)
            assert view.evaluate(LAST_LINE_VISIBLE)["visible"]
            # scrolling up pauses follow; "jump to end" resumes it at the end
            follow = view.locator(".ofn-follow input")
            expect(follow).to_be_checked()
            view.locator(".ofn-logs-pane").hover()
            page.mouse.wheel(0, -400)
            expect(follow).not_to_be_checked(timeout=5_000)
            view.locator(".ofn-jump").click()
            expect(follow).to_be_checked()
            assert view.evaluate(LAST_LINE_VISIBLE)["visible"]
            (lab.root / "boom").write_text("")

            # the remote error: one summary line, the traceback folded
            view.locator(".lm-TabBar-tabLabel", has_text="Invoke").click()
            call = view.locator(".ofn-invocation")
            expect(call).to_contain_text("500", timeout=30_000)
            expect(call).to_contain_text("/?n=1&boom=1")
            errors = view.locator(".ofn-response-area .ofn-error, .ofn-error")
            expect(errors).to_have_count(1)
            expect(errors.first).to_have_text("ValueError: no booms here")
            fold = view.locator(".ofn-error-details")
            expect(fold).to_have_count(1)
            assert fold.evaluate("d => !d.open")  # folded until clicked
            fold.locator("summary").click()
            expect(fold.locator("pre")).to_contain_text("raise ValueError")
            assert fold.locator("pre").evaluate("p => getComputedStyle(p).whiteSpace") == "pre"
            # copy as curl: the kernel's own curl_for of the last call
            printed = page.locator(".jp-OutputArea-output", has_text="KERNELCURL=")
            expect(printed).to_have_count(1, timeout=30_000)
            kernel_curl = printed.inner_text().strip().removeprefix("KERNELCURL=").strip()
            copy = call.locator(".ofn-copy-curl")
            assert copy.get_attribute("data-curl") == kernel_curl
            assert kernel_curl.startswith("curl ") and "n=1&boom=1" in kernel_curl

            # Redeploy keeps the port, and so the URL (a click reaches the kernel between
            # cells: wait for the last one)
            expect(page.locator(".jp-InputPrompt", has_text=f"[{len(LIVE_CELLS)}]:")
                   ).to_have_count(1, timeout=60_000)
            expect(page.locator(".jp-InputPrompt", has_text="[*]:")).to_have_count(0)
            url = view.locator("a.ofn-url").inner_text()
            # an unchanged redeploy is "deploying" for a few ms, maybe never painted or polled:
            # record every DOM state it passes through instead
            page.evaluate(SAW_DEPLOYING_JS, "streamer")
            view.locator("button", has_text="Redeploy").click()
            page.wait_for_function("() => window.__ofnSawDeploying === true", timeout=10_000)
            expect(view.locator(".ofn-status-running")).to_be_visible(timeout=60_000)
            assert view.locator("a.ofn-url").inner_text() == url
            expect(view.locator(".ofn-error")).to_have_count(1)  # the invocation's, no other

            # Replay re-delivers a dead letter: the event failed every attempt; once the
            # function can handle it, the button publishes it again and it comes out
            jobs = page.locator(".ofnotebook-view").filter(
                has=page.locator(".ofn-name", has_text="jobs"))
            jobs.locator(".lm-TabBar-tabLabel", has_text="Metrics").click()
            replay = jobs.locator(".ofn-replay")
            expect(replay).to_have_count(1, timeout=60_000)
            expect(jobs.locator(".ofn-dead-letter")).to_contain_text('{"job": 7}')
            (lab.root / "ready").write_text("")
            replay.click()
            jobs.locator(".lm-TabBar-tabLabel", has_text="Outputs").click()
            expect(jobs.locator(".ofn-outputs")).to_contain_text('{"job": 7}', timeout=30_000)

            shots = {}
            for theme in ("light", "dark"):
                if theme == "dark":
                    page.locator(".lm-MenuBar-itemLabel", has_text="Settings").first.click()
                    page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
                    page.locator(".lm-Menu-itemLabel", has_text="JupyterLab Dark").first.click()
                    expect(page.locator("body[data-jp-theme-light='false']")
                           ).to_have_count(1, timeout=20_000)
                view.scroll_into_view_if_needed()
                shots[theme] = tmp_path / f"live-view-{theme}.png"
                view.screenshot(path=str(shots[theme]))
                assert shots[theme].stat().st_size > 10_000
            target = os.environ.get("SAVE_LIVE_VIEW_SCREENSHOTS")  # how docs/screenshots is made
            if target:
                for theme, shot in shots.items():
                    shutil.copy(shot, Path(target) / shot.name)
        except Exception:
            report_failure(page, lab, tmp_path)
            raise
        finally:
            browser.close()
