"""``%%function`` and ``%function`` through a real IPython ``InteractiveShell``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from ofnotebook.errors import CaptureError, ConfigError, OfnotebookError
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]


def run(ip: InteractiveShell, cell: str) -> Any:
    result = ip.run_cell(cell)
    result.raise_error()
    return result.result


GREET = '''
def greet(request):
    name = request.args.get("name", "world")
    return {"greeting": f"hello {name}", "model": MODEL_VERSION}
'''


def test_the_quickstart_flow(ip: InteractiveShell) -> None:
    run(ip, "MODEL_VERSION = 'v7'")
    handle = ip.run_cell_magic("function", "--runtime sync", GREET)
    assert ip.user_ns["greet"] is handle
    assert handle.name == "greet" and handle.target == "local" and handle.status == "running"
    assert handle.invoke(params={"name": "ada"}).json() == {"greeting": "hello ada",
                                                            "model": "v7"}
    # Still the plain function in the kernel.
    run(ip, "class R:\n    args = {'name': 'local'}")
    assert run(ip, "greet(R())") == {"greeting": "hello local", "model": "v7"}
    assert "greet" in repr(handle) and "running" in handle._repr_html_()


def test_rerun_unchanged_reuses_and_edit_replaces(ip: InteractiveShell) -> None:
    run(ip, "MODEL_VERSION = 'v1'")
    first = ip.run_cell_magic("function", "", GREET)
    second = ip.run_cell_magic("function", "", GREET)
    assert second.deployment is first.deployment and second.reused
    third = ip.run_cell_magic("function", "", GREET.replace("hello", "hi"))
    assert third.deployment is not first.deployment and first.status == "stopped"
    assert third.invoke().json()["greeting"] == "hi world"


def test_name_env_port_and_entry(ip: InteractiveShell) -> None:
    cell = ("import os\n"
            "def helper():\n    return os.environ['GREETING']\n"
            "def main_fn(request):\n    return helper()\n")
    handle = ip.run_cell_magic("function", "custom-name --entry main_fn --env GREETING=hey",
                               cell)
    assert handle.name == "custom-name" and ip.user_ns["main_fn"] is handle
    assert handle.invoke().text == "hey"


def test_var_expansion_in_the_magic_line(ip: InteractiveShell) -> None:
    run(ip, "fn_name = 'expanded-name'")
    handle = ip.run_cell_magic("function", "{fn_name}", "def f(request):\n    return 'x'\n")
    assert handle.name == "expanded-name"


def test_backslash_continuations_are_expanded_too(ip: InteractiveShell) -> None:
    run(ip, "fn_name = 'continued-name'\ngreeting = 'from-a-variable'")
    run(ip, "%%function \\\n"
            "    {fn_name} \\\n"
            "    --env GREETING={greeting}\n"
            "import os\n"
            "def f(request):\n    return os.environ['GREETING']\n")
    handle = ip.user_ns["f"]
    assert handle.name == "continued-name"
    assert handle.invoke().text == "from-a-variable"


def test_default_name_is_made_kubernetes_valid(ip: InteractiveShell) -> None:
    handle = ip.run_cell_magic("function", "", "def My_Handler(request):\n    return 'x'\n")
    assert handle.name == "my-handler"


def test_ambiguous_cell_lists_the_candidates(ip: InteractiveShell) -> None:
    with pytest.raises(CaptureError, match=r"2 functions \(a, b\).*--entry"):
        ip.run_cell_magic("function", "", "def a(r): pass\ndef b(r): pass\n")


def test_cell_without_a_function(ip: InteractiveShell) -> None:
    with pytest.raises(CaptureError, match="no top-level function"):
        ip.run_cell_magic("function", "", "x = 1\n")


def test_failing_cell_deploys_nothing(ip: InteractiveShell) -> None:
    with pytest.raises(CaptureError, match="nothing was deployed"):
        ip.run_cell_magic("function", "", "def f(r): pass\nraise ValueError('boom')\n")
    assert run(ip, "import ofnotebook; ofnotebook.deployments()") == []


@pytest.mark.parametrize("line, message", [
    ("Bad_Name", "not valid for Kubernetes"),
    ("a" * 41, "41 characters"),
    ("--env NOEQUALS", "not KEY=VALUE"),
    ("--build registry", "Target 'local' takes no --build option"),
    ("--target yaml --out /tmp/ofn-never --build cluster", "--build cluster pushes to a "
                                                            "registry"),
])
def test_bad_arguments_are_rejected_before_anything_runs(ip: InteractiveShell, line: str,
                                                         message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ip.run_cell_magic("function", line, "def f(r):\n    return 1\n")
    assert run(ip, "import ofnotebook; ofnotebook.deployments()") == []


def test_errors_render_as_one_short_line(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    result = ip.run_cell("%%function Bad_Name\ndef f(r):\n    return 1\n")
    assert not result.success
    out = capsys.readouterr()
    text = out.out + out.err
    assert "ConfigError" in text and "not valid for Kubernetes" in text
    assert "Traceback" not in text


def test_line_magic_list_logs_stop(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
                                   ) -> None:
    ip.run_cell_magic("function", "lister",
                      "def f(request):\n    print('seen-in-logs', flush=True)\n    return 'ok'\n")
    listing = ip.run_line_magic("function", "list")
    assert "lister" in repr(listing) and "running" in repr(listing)
    assert "<table>" in listing._repr_html_()
    ip.user_ns["f"].invoke()
    wait_for(lambda: "seen-in-logs" in ip.user_ns["f"].logs(), 5,
             lambda: f"not in the logs: {ip.user_ns['f'].logs()[-2000:]}")
    ip.run_line_magic("function", "logs lister --tail 5")
    assert "seen-in-logs" in capsys.readouterr().out
    ip.run_line_magic("function", "stop lister")
    assert "stopped: lister" in capsys.readouterr().out
    assert repr(ip.run_line_magic("function", "list")) == "no deployments"
    with pytest.raises(OfnotebookError, match="No deployment named 'lister'"):
        ip.run_line_magic("function", "stop lister")
    with pytest.raises(OfnotebookError, match="Unknown %function command"):
        ip.run_line_magic("function", "frobnicate")


def test_the_readme_cron_syntax_deploys_and_ticks(ip: InteractiveShell, tmp_path: Path) -> None:
    """The line is split as a shell line: the quoted schedule is one argument, quotes gone."""
    seen = tmp_path / "ticks"
    run(ip, f"SEEN = {str(seen)!r}")
    handle = ip.run_cell_magic("function", 'ticker --input "c=cron://@every 1s"',
                               "def tick(cloud_event):\n"
                               "    with open(SEEN, 'a') as out:\n"
                               "        out.write(cloud_event['type'] + '\\n')\n")
    assert handle.name == "ticker" and handle.runtime == "async"
    wait_for(lambda: seen.exists() and "dapr.binding.cron" in seen.read_text(), 15,
             lambda: f"no tick; logs: {handle.logs()[-2000:]}")


def test_a_quoted_expanded_value_with_spaces_is_one_argument(ip: InteractiveShell) -> None:
    run(ip, "msg = 'hello big world'")
    handle = ip.run_cell_magic("function", 'spaced --env "MSG={msg}" --env \'B=x y\'',
                               "import os\n"
                               "def f(request):\n    return os.environ['MSG'] + '|' + "
                               "os.environ['B']\n")
    assert handle.name == "spaced" and handle.invoke().text == "hello big world|x y"


@pytest.mark.parametrize("line, error, message", [
    ("--input c=cron://@every 5s", ConfigError,
     r"'5s' would be taken as the deployment name; quote the item: "
     r'--input "c=cron://@every 5s"'),
    ("--input c=cron://*/5 * * * *", ConfigError, r'quote the item: --input "c=cron://\*/5 '),
    ('--input "c=cron://@every 1s', OfnotebookError,
     "Unbalanced quote in the %%function line"),
    ("--port abc", ConfigError, "--port: invalid int value: 'abc'; see %%function\\?"),
    ("--no-such-option", ConfigError, "unrecognized arguments: --no-such-option"),
    ("--batch 5 --batch 6 --input e=memory://e", ConfigError,
     r"--batch is given 2 times \(5, 6\); it takes one value"),
    ("--batch 5 --batch-wait 9 --batch-wait=10 --input e=memory://e", ConfigError,
     r"--batch-wait is given 2 times \(9, 10\)"),
    ("--batch ten --input e=memory://e", ConfigError, "--batch: invalid int value: 'ten'"),
])
def test_a_bad_magic_line_is_one_message_and_nothing_runs(ip: InteractiveShell, line: str,
                                                          error: type, message: str) -> None:
    with pytest.raises(error, match=message) as info:
        ip.run_cell_magic("function", line, "def f(r):\n    return 1\n")
    assert str(info.value).count("\n") == 0
    assert "f" not in ip.user_ns  # refused before the cell ran
    assert run(ip, "import ofnotebook; ofnotebook.deployments()") == []


def test_bad_line_magic_lines_are_usage_errors(ip: InteractiveShell) -> None:
    for line, message in [
            ("logs x --tail abc", r"--tail: invalid int value: 'abc'\. Usage: %function logs"),
            ('stop "x', "Unbalanced quote in the %function line"),
            ("stop", "Give a NAME or --all. Usage: %function stop NAME  or  %function stop --all"),
            ("stop a --all", "Usage: %function stop NAME  or"),
            ("logs", "required: NAME. Usage: %function logs"),
            ("export only-a-name", "required: DIR. Usage: %function export"),
            ("frobnicate", r"Unknown %function command 'frobnicate'\. Usage: %function"),
            ("list extra", "Unrecognized arguments: extra. Usage: %function list"),
            ("--bogus", "Unrecognized arguments: --bogus. Usage: %function")]:
        with pytest.raises(OfnotebookError, match=message):
            ip.run_line_magic("function", line)


def test_line_magic_help_prints_the_usage(ip: InteractiveShell,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert ip.run_line_magic("function", "--help") is None
    out = capsys.readouterr().out
    assert out.startswith("usage: %function") and "export" in out and "dapr" in out
    ip.run_line_magic("function", "logs --help")
    assert "usage: %function logs [-h] [--tail N] NAME" in capsys.readouterr().out
    assert repr(ip.run_line_magic("function", "")) == "no deployments"


def test_help_is_generated_from_the_parser(ip: InteractiveShell) -> None:
    doc = ip.find_cell_magic("function").__doc__
    for option in ("--runtime", "--target", "--entry", "--env", "--requirements", "--port"):
        assert option in doc


def test_load_ext_imports_no_heavy_packages() -> None:
    code = ("import sys\nfrom IPython.core.interactiveshell import InteractiveShell\n"
            "ip = InteractiveShell.instance()\nip.run_line_magic('load_ext', 'ofnotebook')\n"
            "print(sorted(m for m in ('docker', 'kubernetes', 'ipywidgets', 'flask') "
            "if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_stop_all_leaves_a_clean_slate(ip: InteractiveShell) -> None:
    """``%function stop --all`` also stops the warm standby runtime and the local Dapr
    stand-in (issue 12 item 7); the next deploy starts both again."""
    import psutil

    from ofnotebook.backends.standin import current_standin
    from tests.helpers import runtime_children

    cell = "def relay(ctx, data):\n    return data\n"
    ip.run_cell_magic("function", "clean-slate --input e=memory://e", cell)
    standin = current_standin()
    assert standin is not None and runtime_children()  # the function's and the standby's
    ip.run_line_magic("function", "stop --all")
    assert wait_for(lambda: not runtime_children(), timeout=10) is True
    assert current_standin() is None
    assert not psutil.pid_exists(standin.proc.pid) or \
        psutil.Process(standin.proc.pid).status() == psutil.STATUS_ZOMBIE
    again = ip.run_cell_magic("function", "clean-slate --input e=memory://e", cell)
    assert again.status == "running" and current_standin() is not None


def test_a_batch_function_from_the_magic_line(ip: InteractiveShell) -> None:
    """``--batch N --batch-wait MS`` reach the package manifest and stay with the handle's
    request, so a redeploy batches the same way."""
    import json

    cell = "def score(ctx, events):\n    ctx.send('sizes', len(events))\n"
    handle = ip.run_cell_magic("function", "scorer --batch 5 --batch-wait 30 "
                               "--input events=memory://magic-batch "
                               "--output sizes=memory://magic-batch-out", cell)
    manifest = json.loads((handle.package.path / "function" / "manifest.json").read_text())
    assert manifest["batch"] == {"size": 5, "waitMs": 30}
    assert (handle.request.batch, handle.request.batch_wait_ms) == (5, 30)
    for i in range(12):
        handle.publish("events", i)
    sizes = wait_for(lambda: (lambda s: s if sum(s) == 12 else None)(
        [o.data for o in handle.outputs]), 10, lambda: f"outputs: {handle.outputs}")
    assert max(sizes) <= 5
