"""``%%function`` and ``%function``: a thin syntax layer over :mod:`ofnotebook.api`.

IPython's ``{var}`` and ``$var`` expansion stays on in the magic line and its backslash
continuations, so ``%%function {name} --env MODEL={model_path}`` works. The line is then split
as a shell line (``shlex``): quotes group and are removed, so a value with spaces, written or
expanded, is one argument when quoted (``--input "c=cron://@every 5s"``,
``--env "MSG={msg}"``).
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar, cast

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, argument_group, magic_arguments
from IPython.utils.text import DollarFormatter

from . import api, config
from .capture import SIGNATURES
from .errors import CaptureError, ConfigError, OfnotebookError
from .handle import FunctionHandle
from .magic_options import (join_continuations, refuse_duplicates as refuse_duplicates,
                            refuse_split_schedule, split_line, target_options)
from .request import DeployRequest
from .view import TextProgress, widgets_enabled

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _named(marker: Callable[[str], object], name: str) -> Callable[[_Method], _Method]:
    """``cell_magic(name)``/``line_magic(name)`` as the decorator it is: IPython types the
    call as "the function or a decorator", since the same marker also decorates bare."""
    return cast("Callable[[_Method], _Method]", marker(name))


def find_entry(python_source: str, entry: str | None) -> str:
    """The function the cell deploys: ``entry``, else the cell's only top-level function."""
    if entry:
        return entry
    try:
        tree = ast.parse(python_source)
    except SyntaxError:
        tree = ast.Module(body=[], type_ignores=[])
    names = [node.name for node in tree.body
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if len(names) == 1:
        return names[0]
    if not names:
        raise CaptureError("The cell defines no top-level function; define one with 'def', "
                           "or name the function to deploy with --entry NAME.")
    raise CaptureError(f"The cell defines {len(names)} functions ({', '.join(names)}); "
                       f"choose the one to deploy with --entry NAME.")


@magics_class
class FunctionMagics(Magics):
    """Deploy the function a cell defines, and manage what this kernel deployed."""

    # IPython types ``shell`` as optional for a Magics made without one; the extension always
    # registers this one on a shell.
    shell: InteractiveShell

    @magic_arguments()
    @argument("name", nargs="?", default=None,
              help="Deployment name (lowercase letters, digits, '-'; at most 40 characters). "
                   "Default: the function's name, made valid.")
    @argument("--runtime", choices=["sync", "async"], default=None,
              help="sync: served over HTTP (Knative in a cluster); async: triggered by its "
                   "inputs (Dapr, KEDA in a cluster). Default: async with inputs, else sync.")
    @argument("--input", action="append", default=[], metavar="NAME=URI",
              help="An input (Dapr input binding or subscription), e.g. "
                   "logs=kafka://127.0.0.1:9092/logs; NAME alone is in-memory. Repeatable.")
    @argument("--output", action="append", default=[], metavar="NAME=URI",
              help="An output for ctx.send(NAME, data), e.g. notify=http://host/alerts or "
                   "events=redis://127.0.0.1:6379/events. Repeatable.")
    @argument("--state", action="append", default=[], metavar="NAME=URI",
              help="A state store, e.g. cache=redis://127.0.0.1:6379. Repeatable.")
    @argument("--target", default=None,
              help="Where to run it: local (default, or OFNOTEBOOK_TARGET).")
    @argument("--entry", default=None, metavar="PYNAME",
              help="The Python function to deploy when the cell defines several.")
    @argument("--env", action="append", default=[], metavar="K=V",
              help="An environment variable for the function; repeat for more.")
    @argument("--requirements", nargs="+", default=[], metavar="PKG",
              help="Extra distributions for the image, pinned at the installed version "
                   "unless a version is given (pkg==1.2).")
    @argument("--port", type=int, default=None,
              help="Fixed local port for the function (the cluster port stays 8080).")
    @argument("--version", default=None, help="Function version (spec.version). Default: latest.")
    @argument("--registry", default=None, metavar="HOST[:PORT][/NAMESPACE]",
              help="Registry to push the image to (container, kubernetes; default "
                   "OFNOTEBOOK_REGISTRY).")
    @argument("--namespace", default=None,
              help="Kubernetes namespace (kubernetes: default the kubeconfig context's; yaml: "
                   "written when given).")
    @argument("--out", default=None, metavar="DIR",
              help="Folder the yaml target writes into (default OFNOTEBOOK_YAML_DIR).")
    @argument("--build", default=None, choices=list(config.BUILD_MODES),
              help="How the image is made (kubernetes, yaml): auto (default, "
                   "OFNOTEBOOK_BUILD: the engine when a Docker API answers, else registry), "
                   "engine (Docker or Podman), registry (no engine: layers pushed straight "
                   "to the registry), cluster (OpenFunction builds it in the cluster).")
    @argument("--platform", default=None, metavar="OS/ARCH",
              help="Image platform for --build registry (default OFNOTEBOOK_PLATFORM or "
                   "linux/amd64).")
    @argument("--base-image", default=None, metavar="IMAGE",
              help="Base image for image targets. Default: OFNOTEBOOK_BASE_IMAGE or "
                   "python:<major>.<minor>-slim of this Python.")
    @argument("--signature", default=None, choices=list(SIGNATURES), metavar="SHAPE",
              help="How the function is called, when detection guesses wrong: "
                   + ", ".join(SIGNATURES) + ".")
    @argument("--include", nargs="+", default=[], metavar="PATH",
              help="Files or folders (relative to the notebook) the function reads: packaged "
                   "at the same relative path, the working directory on every target.")
    @argument("--batch", type=int, default=None, metavar="N",
              help="Call the function as f(ctx, events) with lists of up to N events of its "
                   "pub/sub inputs (one bulk delivery; 1-1000), e.g. to score them in one "
                   "vectorised call.")
    @argument("--batch-wait", type=int, default=None, metavar="MS",
              help="How long a partial batch waits to fill (1-10000 ms, default 20; needs "
                   "--batch).")
    @argument("--component", action="append", default=[], metavar="NAME=URI",
              help="A Dapr component with exactly this name (inputs, outputs and states may "
                   "use it as NAME=@COMPONENT; the Dapr SDK may call it by name). Repeatable.")
    @argument_group("cluster settings (kubernetes, yaml, %function export)")
    @argument("--min-replicas", type=int, default=None, metavar="N",
              help="Fewest replicas (0 scales to zero).")
    @argument("--max-replicas", type=int, default=None, metavar="N", help="Most replicas.")
    @argument("--keda-trigger", action="append", default=[], metavar="TYPE:KEY=VALUE,...",
              help="A KEDA scale trigger, e.g. kafka:topic=logs,lagThreshold=20. Repeatable.")
    @argument("--keda-polling-interval", type=int, default=None, metavar="SECONDS",
              help="How often KEDA checks its triggers (needs --keda-trigger).")
    @argument("--keda-cooldown", type=int, default=None, metavar="SECONDS",
              help="How long KEDA waits before scaling to zero (needs --keda-trigger).")
    @argument("--hpa-behavior", default=None, metavar="YAML",
              help="The HPA behavior of the KEDA ScaledObject (scaleUp/scaleDown), as YAML or "
                   "JSON (needs --keda-trigger).")
    @argument("--image-credentials", default=None, metavar="SECRET",
              help="Image pull secret (spec.imageCredentials).")
    @argument("--pull-policy", default=None, choices=["Always", "IfNotPresent", "Never"],
              help="The function container's imagePullPolicy (default IfNotPresent).")
    @argument("--api-version", default=None, choices=["v1beta2", "v1beta1"],
              help="OpenFunction API version the yaml target and %%function export write "
                   "(default v1beta2; the kubernetes target applies v1beta2).")
    @argument("--cpu", default=None, help="CPU limit, e.g. 500m.")
    @argument("--memory", default=None, help="Memory limit, e.g. 512Mi.")
    @argument("--gpus", type=int, default=None, metavar="N", help="nvidia.com/gpu limit.")
    @argument("--secret-env", action="append", default=[], metavar="NAME",
              help="A secret environment variable, its value from the kernel's environment "
                   "(or a prompt), never written to a file: the process or container "
                   "environment, a Secret <name>-env on kubernetes, a secretKeyRef with its "
                   "kubectl command on yaml. VAR=SECRET:KEY takes it from an existing "
                   "Kubernetes Secret instead. Repeatable.")
    @argument("--dapr-mode", default=None, choices=["standalone", "sidecar"],
              help="How OpenFunction attaches Dapr (default standalone: the Dapr proxy).")
    @argument("--label", action="append", default=[], metavar="K=V",
              help="A label on the Function. Repeatable.")
    @_named(cell_magic, "function")
    def function(self, line: str, cell: str) -> Any:
        """Run the cell, then deploy the function it defines and bind its name to a handle.

        The handle is still callable as the plain function; ``.invoke()`` calls the deployed
        one; ``.url``, ``.status``, ``.logs()`` and ``.stop()`` manage it. The line is split
        as a shell line: quote a value with spaces (``--input "c=cron://@every 5s"``), also
        one from a variable, since ``{var}`` is expanded before the split
        (``--env "MSG={msg}"``).
        """
        line, cell = join_continuations(line, cell, self._expand)
        words = split_line(line, "%%function")
        refuse_split_schedule(words)
        try:
            args = self.function.parser.parse_args(words)
        except UsageError as exc:
            raise ConfigError(f"%%function {line}: {exc}; see %%function? for the options."
                              ) from None
        refuse_duplicates(words, self.function.parser, args)
        secret_names, args.secret_env = api.split_secret_env(args.secret_env)
        result = self.shell.run_cell(cell, store_history=False)
        if not result.success:
            raise CaptureError("The cell raised an exception (shown above); nothing was deployed.")
        pyname = find_entry(self.shell.transform_cell(cell), args.entry)
        fn = self.shell.user_ns.get(pyname)
        if fn is None:
            raise CaptureError(f"The cell did not define {pyname!r}; check --entry.")
        if isinstance(fn, FunctionHandle):  # a re-run over an existing handle; never a
            fn = fn.__wrapped__              # decorator's wrapper (functions_framework's)
        _use_notebook_components(args, self.shell.user_ns)
        planned = api.plan(fn, DeployRequest(
            name=args.name, runtime=args.runtime, target=args.target, entry=pyname,
            env=args.env, requirements=args.requirements, port=args.port,
            version=args.version, inputs=args.input, outputs=args.output, states=args.state,
            base_image=args.base_image, signature=args.signature, include=args.include,
            components=args.component, target_options=target_options(args),
            secret_env=secret_names, batch=args.batch, batch_wait_ms=args.batch_wait))
        if not widgets_enabled():
            from .viewparts import route_warnings

            with route_warnings(lambda text: print(f"warning: {text}")):  # one line, no path
                handle = planned.deploy(on_event=TextProgress().on_phase)
            self.shell.user_ns[pyname] = handle
            return handle
        self.shell.user_ns[pyname] = self._deploy_with_view(planned)
        return None

    @staticmethod
    def _deploy_with_view(planned: api.Plan) -> Any:
        """Show the live view at once, with the header ``api`` decided, so the phases appear
        as they happen; the cell's output is that view (its text/plain twin is the handle's
        repr once deployed)."""
        from IPython.display import display

        from .widget import FunctionView

        view = FunctionView(planned.name, planned.runtime, planned.target)
        shown = display(view, display_id=True)
        try:  # attaches the handle (display(handle) draws this view); warnings go to it
            handle = view.deploy(planned)
        except Exception:  # shown in the view (Redeploy retries the plan); the cell says so
            shown.update(view)
            raise
        shown.update(handle)
        return handle

    def _expand(self, text: str) -> str:
        """``{var}``/``$var`` from the user's namespace, as IPython does for the magic line
        (unchanged when it does not format, as IPython leaves it)."""
        try:
            return DollarFormatter().vformat(text, args=[], kwargs=self.shell.user_ns)
        except Exception:
            return text

    @_named(line_magic, "function")
    def function_line(self, line: str) -> Any:
        """Manage deployments: ``%function list``, ``%function stop NAME``,
        ``%function stop --all``, ``%function logs NAME [--tail N]``, ``%function export NAME
        DIR`` (the yaml target's folder for a function deployed elsewhere), ``%function dapr``
        (point the Dapr SDK of this kernel, and of what it starts, at the local stand-in)."""
        words = split_line(line, "%function")
        if words and not words[0].startswith("-") and words[0] not in _COMMANDS:
            _LINE_PARSER.error(f"unknown %function command {words[0]!r}")
        try:
            args, extra = _LINE_PARSER.parse_known_args(words or ["list"])
            if args.command is None or extra:  # the subcommand's usage, not the top one's
                _SUBCOMMANDS.get(args.command, _LINE_PARSER).error(
                    f"unrecognized arguments: {' '.join(extra)}" if extra else
                    "give a command")
        except _HelpShown:
            return None
        if args.command == "list":
            if widgets_enabled():  # a live table: status, URL, rates, Stop and Logs per row
                from .widget import function_table

                return function_table(api.deployments())
            return _Listing(api.deployments())
        if args.command == "stop":
            if args.all == (args.name is not None):
                _SUBCOMMANDS["stop"].error("give a NAME or --all")
            stopped = api.stop(all=True) if args.all else api.stop(args.name)
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
            return None
        if args.command == "export":
            from .backends.gitops import write_function
            from .cluster import cluster_settings

            handle = api.get(args.name)  # with the cluster settings its deploy was given
            given = handle.request.target_options if handle.request is not None else None
            options, _ = cluster_settings(dict(given or {}))
            print(f"written: {write_function(handle.package, Path(args.dir), options)}")
            return None
        if args.command == "dapr":
            found = {k: v for k, v in (("app_id", args.app_id), ("app_port", args.app_port))
                     if v is not None}
            print(_env_text(api.dapr_env(export=True, **found)))
            return None
        print(api.get(args.name).logs(tail=args.tail))  # logs
        return None


class _HelpShown(Exception):
    """``--help`` printed the usage: the magic returns instead of exiting the kernel."""


class _LineParser(argparse.ArgumentParser):
    """argparse for ``%function``: a bad line is one ``OfnotebookError`` with the usage of
    the subcommand, never ``SystemExit`` (which would end the kernel's cell with a trace)."""

    def error(self, message: str) -> Any:
        usage = self.format_usage().strip().replace("usage: ", "Usage: ", 1)
        raise OfnotebookError(f"{message[:1].upper()}{message[1:]}. {usage}")

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        if status:
            self.error(message or "bad %function line")
        raise _HelpShown()


def _port_number(value: str) -> int:
    """``--app-port`` as the digits of a port; the range is ``dapr_env``'s to check."""
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number")
    return int(value)


def _line_parser() -> tuple[_LineParser, dict[str, _LineParser]]:
    """``%function``'s parser, and one per subcommand (by name: their usage is the one an
    error shows)."""
    parser = _LineParser(prog="%function", description="Manage this kernel's deployments.")
    commands = parser.add_subparsers(dest="command", parser_class=_LineParser,
                                     metavar="{list,stop,logs,export,dapr}")
    commands.add_parser("list", help="the deployments, as a table (the default)")
    stop = commands.add_parser("stop", help="stop one deployment, or all of them",
                               usage="%(prog)s NAME  or  %(prog)s --all")
    stop.add_argument("name", nargs="?", metavar="NAME")
    stop.add_argument("--all", action="store_true", help="stop every deployment")
    logs = commands.add_parser("logs", help="a deployment's logs")
    logs.add_argument("name", metavar="NAME")
    logs.add_argument("--tail", type=int, default=None, metavar="N", help="the last N lines")
    export = commands.add_parser("export", help="write a deployment's yaml folder")
    export.add_argument("name", metavar="NAME")
    export.add_argument("dir", metavar="DIR")
    dapr = commands.add_parser("dapr", help="point the Dapr SDK at the local stand-in",
                               usage="%(prog)s [--app-id ID [--app-port PORT]]")
    dapr.add_argument("--app-id", default=None, metavar="ID")
    dapr.add_argument("--app-port", type=_port_number, default=None, metavar="PORT")
    return parser, dict(commands.choices)


_LINE_PARSER, _SUBCOMMANDS = _line_parser()
_COMMANDS = tuple(_SUBCOMMANDS)


def _use_notebook_components(args: Any, user_ns: dict[str, Any]) -> None:
    """An ``@NAME`` that neither ``--component`` nor an earlier deploy declared may name a
    notebook variable holding a named ``Component``: the item then uses that component, by
    its own Dapr name, and this deploy declares it (``args`` is rewritten so)."""
    from .components import Component

    declared = set(api.declared_components())
    declared.update(str(c).partition("=")[0].strip() for c in args.component)
    found: list[Component] = []
    for option in ("input", "output", "state"):
        items = getattr(args, option)
        for i, item in enumerate(items):
            key, _, value = item.partition("=")
            match = re.match(r"@([^/?]+)(.*)$", value.strip())  # @NAME, then /TOPIC or ?...
            value = user_ns.get(match[1]) if match and match[1] not in declared else None
            if match is None or not isinstance(value, Component):
                continue
            if not value.name:
                raise ConfigError(f"--{option} {item!r}: the notebook's {match[1]!r} is a "
                                  f"Component without a name; give it one "
                                  f"(Component(..., name=...)).", key="components")
            items[i] = f"{key}=@{value.name}{match[2]}"
            found.append(value)
    args.component = [*args.component, *found]


def _env_text(env: dict[str, str]) -> str:
    """The variables ``%function dapr`` set, one a line, the token masked."""
    lines = [f"{k}={'***' if k == 'DAPR_API_TOKEN' else v}" for k, v in sorted(env.items())]
    return "Dapr SDK environment (set in os.environ):\n" + "\n".join(lines)


class _Listing(list):
    """The handles ``%function list`` returns, shown as a table."""

    def __repr__(self) -> str:
        if not self:
            return "no deployments"
        rows = [("NAME", "RUNTIME", "TARGET", "STATUS", "URL")]
        rows += [(h.name, h.runtime, h.target, h.status, h.url) for h in self]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)

    def _repr_html_(self) -> str:
        import html

        if not self:
            return "<i>no deployments</i>"
        head = "".join(f"<th>{c}</th>" for c in ("name", "runtime", "target", "status", "url"))
        body = "".join(
            f"<tr><td>{html.escape(h.name)}</td><td>{h.runtime}</td><td>{h.target}</td>"
            f"<td>{h.status}</td><td><a href='{html.escape(h.url)}'>{html.escape(h.url)}</a>"
            f"</td></tr>" for h in self)
        return f"<table><tr>{head}</tr>{body}</table>"
