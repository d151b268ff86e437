"""Small pure pieces of the live view: error summaries, ``curl`` for a call, pretty JSON,
the log pane's in-page scripts, and where ofnotebook's warnings go.

Apart from :mod:`ofnotebook.view` so that module stays about the state; everything here is a
function of its arguments, tested without a widget.
"""

from __future__ import annotations

import contextlib
import functools
import html
import importlib.util
import json
import os
import shlex
import warnings
from pathlib import Path
from typing import Callable, Iterator, Mapping
from urllib.parse import urlsplit

from .errors import DeployError, RemoteFunctionError
from .handle import Invocation
from .viewmetrics import BAD, MUTED

PRE = "white-space:pre;line-height:normal;margin:0;overflow:auto"
_PACKAGE = str(Path(__file__).resolve().parent)
#: Headers a copied curl leaves out: curl sets its own, and they only add noise.
_CURL_SKIP = {"user-agent", "accept-encoding", "accept", "connection", "content-length"}


def summarize(error: BaseException | str) -> tuple[str, str]:
    """(one summary line, the rest) for any error: what the view shows above the fold. A
    failed image build reads as its failing step and pip's ``ERROR:`` line; a remote error as
    its type and message, with the remote traceback folded."""
    if isinstance(error, RemoteFunctionError):
        return str(error), error.traceback
    text = str(error).strip()
    lines = text.splitlines() or [""]
    first, rest = lines[0], "\n".join(lines[1:]).strip()
    pip = next((line.strip() for line in lines[1:] if line.strip().startswith("ERROR:")), "")
    if pip and pip not in first:
        first = f"{first.rstrip(':')}: {pip}"
    if isinstance(error, DeployError) and error.last_logs:
        rest = (rest + "\n\nLast log lines:\n" + "\n".join(error.last_logs)).strip()
    return first, rest


def curl_for(call: Invocation) -> str:
    """The call as a ``curl`` command line (what the devtools' "copy as curl" gives)."""
    words = ["curl"] + (["-X", call.method] if call.method != "GET" or call.request_body
                        else [])
    words.append(shlex.quote(call.url))
    for key, value in call.request_headers.items():
        if key.lower() not in _CURL_SKIP:
            words += ["-H", shlex.quote(f"{key}: {value}")]
    if call.request_body:
        words += ["--data-raw", shlex.quote(call.request_body)]
    return " ".join(words)


def pretty(body: str) -> str:
    """A JSON body indented; anything else as it came."""
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body


def folded(summary: str, details: str, label: str = "details", cls: str = "ofn-error") -> str:
    """One summary line, and the details folded underneath, preformatted."""
    esc = html.escape
    fold = (f'<details class="{cls}-details"><summary style="color:{MUTED}">{esc(label)}'
            f'</summary><pre style="{PRE};max-height:24em">{esc(details)}</pre></details>'
            if details else "")
    return f'<div class="{cls}" style="color:{BAD}">{esc(summary)}</div>{fold}'


@contextlib.contextmanager
def route_warnings(sink: Callable[[str], None]) -> Iterator[None]:
    """Warnings raised from ofnotebook's own code while the block runs go to ``sink`` as their
    text (the view's amber line; ``print`` in text mode), not as a ``UserWarning`` naming a
    library path; warnings from any other code are shown as Python shows them."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        for item in caught:
            if item.filename.startswith(_PACKAGE):
                sink(str(item.message))
            else:
                warnings.showwarning(item.message, item.category, item.filename, item.lineno)


#: The log pane's scroll handler: away from the end unticks *follow* and keeps the place (from
#: the top, so new lines do not move what is read); back at the end, ticks it again.
FOLLOW_JS = ("var h=this.parentNode,v=this.closest('.ofnotebook-view'),f=v&amp;&amp;"
              "v.querySelector('.ofn-follow input'),away=Math.abs(this.scrollTop)&gt;8;"
              "h.dataset.hold=away?String(this.scrollHeight-this.clientHeight+this.scrollTop)"
              ":'';if(f&amp;&amp;away===f.checked)f.click();")
#: Run after each redraw (an image that fails at once): a paused pane goes back to its place.
RESTORE_JS = ("var p=this.parentNode.querySelector('.ofn-logs-pane'),h=this.parentNode;"
               "if(p&amp;&amp;h.dataset.hold)p.scrollTop=Number(h.dataset.hold)-"
               "(p.scrollHeight-p.clientHeight);")
JUMP_JS = ("var h=this.closest('.widget-html-content')||this.parentNode.parentNode,"
            "p=h.querySelector('.ofn-logs-pane');h.dataset.hold='';if(p){p.scrollTop=0;"
            "p.dispatchEvent(new Event('scroll'))}return false;")


def copy_button(text: str) -> str:
    """A "copy as curl" button: the command is in its ``data-curl`` (and its title)."""
    esc = html.escape(text, quote=True)
    return (f'<button class="ofn-copy-curl" data-curl="{esc}" title="{esc}" '
            f'onclick="navigator.clipboard&amp;&amp;navigator.clipboard.writeText('
            f'this.dataset.curl);this.textContent=\'copied\'" style="font-size:85%;'
            f'cursor:pointer">copy as curl</button>')


@functools.lru_cache(maxsize=1)
def _has_server_proxy() -> bool:
    """Whether jupyter-server-proxy is installed (asked once: the view redraws often)."""
    return importlib.util.find_spec("jupyter_server_proxy") is not None


def proxied_url(url: str, environ: Mapping[str, str] | None = None,
                has_proxy: bool | None = None) -> str:
    """The path through jupyter-server-proxy that reaches a local function's ``url`` from the
    browser ("" where it does not apply). On a remote Jupyter server (JupyterHub's pods, a
    shared server) the browser cannot open ``127.0.0.1``; with jupyter-server-proxy installed
    the server forwards ``{base}proxy/{port}/`` to that port, on the page's own origin.
    ``base`` is JupyterHub's ``JUPYTERHUB_SERVICE_PREFIX`` (``/user/NAME/``), else ``/``."""
    environ = os.environ if environ is None else environ
    if has_proxy is None:
        has_proxy = _has_server_proxy()
    parts = urlsplit(url)
    if not has_proxy or parts.scheme != "http" or parts.hostname != "127.0.0.1" \
            or not parts.port:
        return ""
    base = environ.get("JUPYTERHUB_SERVICE_PREFIX", "/") or "/"
    base = base if base.endswith("/") else base + "/"
    return f"{base}proxy/{parts.port}{parts.path or '/'}"
