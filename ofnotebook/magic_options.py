"""The ``%%function`` line as options: its continuation lines, its shell split, and the
refusals argparse does not make (a cron schedule split by its space, a single-valued option
or a ``NAME=`` item given twice), and which options go to the target. The parser itself is
the ``@argument`` list on :meth:`ofnotebook.magics.FunctionMagics.function`.
"""

from __future__ import annotations

import argparse
import re
import shlex
from typing import Any, Callable

from .errors import ConfigError, OfnotebookError


def join_continuations(line: str, cell: str,
                       expand: Callable[[str], str] = lambda text: text) -> tuple[str, str]:
    """Let the magic line continue over several lines ending in a backslash.

    IPython expands ``{var}`` and ``$var`` in the first line only; ``expand`` does the same
    for the continuation lines, so a URI can use notebook variables on any of them.
    """
    rest = cell.split("\n")
    while line.rstrip().endswith("\\") and rest:
        line = line.rstrip()[:-1] + " " + expand(rest.pop(0).strip())
    return line.rstrip().rstrip("\\"), "\n".join(rest)


def split_line(line: str, magic: str) -> list[str]:
    """The magic line's words as a shell splits them (IPython's own splitter keeps the quotes
    around ``"c=cron://@every 1s"``); an unbalanced quote is a usage error, not a traceback."""
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise OfnotebookError(f"Unbalanced quote in the {magic} line: {line!r} ({exc}); close "
                              f"the quote, or escape a literal one as \\\" or \\'.") from None


#: A word a cron schedule splits into when unquoted: a Go duration (``5s``, ``1m30s``) or a
#: cron field (``*``, ``*/5``, ``1-5``, ``MON-FRI``).
_SCHEDULE_PART = re.compile(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+|[\d*/,?LW#-]+|"
                            r"[A-Za-z]{3}(-[A-Za-z]{3})?", re.ASCII)


def refuse_split_schedule(words: list[str]) -> None:
    """``--input c=cron://@every 5s`` unquoted splits the schedule, and ``5s`` would become the
    deployment name: refuse it with the quoted line instead."""
    for i, word in enumerate(words[:-1]):
        if "cron://" not in word or words[i + 1].startswith("-"):
            continue
        parts = []
        for part in words[i + 1:]:
            if part.startswith("-") or not _SCHEDULE_PART.fullmatch(part):
                break
            parts.append(part)
        if not parts:
            continue
        option = words[i - 1] if i and words[i - 1].startswith("--") else ""
        quoted = f'"{word} {" ".join(parts)}"'
        raise ConfigError(f"{option + ' ' if option else ''}{word} {' '.join(parts)}: the cron "
                          f"schedule has a space, so the magic line splits it and "
                          f"{parts[0]!r} would be taken as the deployment name; quote the "
                          f"item: {option + ' ' if option else ''}{quoted}.", key="inputs")


#: Repeatable options whose items are ``NAME=...``: the same NAME twice is refused too.
_NAMED_ITEMS = ("input", "output", "state", "component", "env", "secret_env", "label")


def refuse_duplicates(words: list[str], parser: argparse.ArgumentParser, args: Any) -> None:
    """argparse keeps the last of a single-valued option given twice (``--port 1 --port 2``)
    and both items of ``--input a=... --input a=...``: refuse either, naming the option."""
    seen: dict[str, list[str]] = {}
    for i, word in enumerate(words):
        if not word.startswith("--") or word == "--":
            continue
        option, has_value, value = word.partition("=")
        action = _action_of(parser, option)
        if action is None or not isinstance(action, argparse._StoreAction):
            continue  # append, store_true, help: repeating them is how they are used
        given = value if has_value else (words[i + 1] if i + 1 < len(words) else "")
        seen.setdefault(action.option_strings[0], []).append(given)
    for option, values in seen.items():
        if len(values) > 1:
            raise ConfigError(f"{option} is given {len(values)} times ({', '.join(values)}); "
                              f"it takes one value: keep the one you mean.",
                              key=option.lstrip("-"))
    for dest in _NAMED_ITEMS:
        names = [str(item).partition("=")[0].strip() for item in getattr(args, dest, [])
                 if isinstance(item, str)]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            flag = "--" + dest.replace("_", "-")
            raise ConfigError(f"{flag} {twice[0]} is given {names.count(twice[0])} times; "
                              f"each {flag} NAME once (give the others another name).",
                              key=dest)


def _action_of(parser: argparse.ArgumentParser, option: str) -> argparse.Action | None:
    """The action of ``option`` as argparse resolves it (a unique prefix counts)."""
    actions = parser._option_string_actions
    if option in actions:
        return actions[option]
    found = {id(a): a for o, a in actions.items() if o.startswith(option)}
    return next(iter(found.values())) if len(found) == 1 else None


#: magic option -> target option; cluster settings go to ``ClusterOptions`` as plain values.
_TARGET_OPTIONS = {"registry": "registry", "namespace": "namespace", "out": "folder",
                   "build": "build", "platform": "platform", "min_replicas": "min_replicas",
                   "max_replicas": "max_replicas", "keda_trigger": "keda_triggers",
                   "keda_polling_interval": "keda_polling_interval",
                   "keda_cooldown": "keda_cooldown_period", "hpa_behavior": "hpa_behavior",
                   "image_credentials": "image_credentials", "pull_policy": "pull_policy",
                   "api_version": "api_version", "cpu": "cpu", "memory": "memory",
                   "gpus": "gpus", "secret_env": "secrets", "dapr_mode": "dapr_mode",
                   "label": "labels"}


def target_options(args: Any) -> dict[str, Any]:
    """The options the magic line gave, as ``target_options`` (unset ones left out)."""
    given = {key: getattr(args, option) for option, key in _TARGET_OPTIONS.items()}
    return {k: v for k, v in given.items() if v is not None and v != []}
