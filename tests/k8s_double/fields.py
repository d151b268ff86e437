"""Server-side apply and managed fields, as structured-merge-diff does them for a CRD.

A field set is a set of paths; a path is a tuple of elements in the ``fieldsV1`` spelling:
``f:name`` a field, ``k:{"name":"x"}`` an item of a list keyed by ``x-kubernetes-list-map-keys``,
``v:"x"`` a member of a ``set`` list. Other lists and ``x-kubernetes-map-type: atomic`` maps are
owned whole. Each manager (and operation: ``Apply`` or ``Update``) owns a set, kept in
``metadata.managedFields``. An apply merges the applied fields into the object, removes the
fields the same manager applied before and leaves out now (unless another manager owns them
too), and with ``force`` takes over fields other managers owned with another value; an update
(create, PUT, merge patch) gives its manager every field it changed and takes them from the
others.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Iterable

from .schema import SERVER_META, child_schema

Path = tuple[str, ...]


def _key(item: dict[str, Any], keys: list[str]) -> str:
    return "k:" + json.dumps({k: item.get(k) for k in keys}, separators=(",", ":"),
                             sort_keys=True)


def leaves(value: Any, schema: dict[str, Any], prefix: Path = ()) -> set[Path]:
    """The field set of ``value`` (an object's ``spec``/``metadata``/... subtree)."""
    root = prefix == ()
    if isinstance(value, dict):
        if schema.get("x-kubernetes-map-type") == "atomic" or (not value and not root):
            return {prefix}
        out: set[Path] = set()
        for key, item in value.items():
            if root and key in ("apiVersion", "kind", "status"):
                continue
            if prefix == ("f:metadata",) and key in SERVER_META:
                continue
            out |= leaves(item, child_schema(schema, key, root), prefix + (f"f:{key}",))
        return out
    if isinstance(value, list):
        kind = schema.get("x-kubernetes-list-type")
        items = schema.get("items") or {}
        if kind == "map":
            keys = list(schema.get("x-kubernetes-list-map-keys") or [])
            out = set()
            for item in value:
                node = prefix + (_key(item, keys),)
                out |= {node} | leaves(item, items, node)
            return out
        if kind == "set":
            return {prefix + ("v:" + json.dumps(item),) for item in value}
    return {prefix}


def get(value: Any, path: Path) -> Any:
    """The value at ``path`` (``KeyError`` when absent)."""
    for element in path:
        kind, _, name = element.partition(":")
        if kind == "f" and isinstance(value, dict) and name in value:
            value = value[name]
        elif kind == "k" and isinstance(value, list):
            want = json.loads(name)
            value = next((i for i in value if all(i.get(k) == v for k, v in want.items())),
                         KeyError)
            if value is KeyError:
                raise KeyError(element)
        elif kind == "v" and isinstance(value, list) and json.loads(name) in value:
            value = json.loads(name)
        else:
            raise KeyError(element)
    return value


def _positions(value: Any, path: Path) -> tuple[int, ...]:
    """Where each element of ``path`` stands in ``value`` (field order, list index)."""
    out = []
    for element in path:
        kind, _, name = element.partition(":")
        if kind == "f" and isinstance(value, dict):
            out.append(list(value).index(name) if name in value else 0)
            value = value.get(name)
        elif kind in ("k", "v") and isinstance(value, list):
            want = json.loads(name)
            index = next((i for i, item in enumerate(value) if (
                item == want if kind == "v" else isinstance(item, dict) and
                all(item.get(k) == v for k, v in want.items()))), 0)
            out.append(index)
            value = value[index] if value else None
        else:
            out.append(0)
    return tuple(out)


def _put(target: Any, path: Path, source: Any) -> None:
    """Copy the value at ``path`` in ``source`` into ``target``, creating what is missing."""
    node = target
    for index, element in enumerate(path):
        kind, _, name = element.partition(":")
        last = index == len(path) - 1
        nxt = path[index + 1].partition(":")[0] if not last else ""
        if kind == "f":
            if last:
                node[name] = copy.deepcopy(get(source, path))
                return
            if name not in node or not isinstance(node[name], (dict, list)):
                node[name] = [] if nxt in ("k", "v") else {}
            node = node[name]
        elif kind == "k":
            want = json.loads(name)
            item = next((i for i in node if all(i.get(k) == v for k, v in want.items())), None)
            if item is None:
                item = dict(want)
                node.append(item)
            node = item
        elif kind == "v":
            value = json.loads(name)
            if value not in node:
                node.append(value)
            return


def _remove(target: Any, path: Path, keep: set[Path]) -> None:
    """Remove ``path`` from ``target``, and the parents it leaves empty that nobody keeps."""
    parents = [target]
    node = target
    try:
        for element in path[:-1]:
            node = get(node, (element,))
            parents.append(node)
    except KeyError:
        return
    for depth in range(len(path) - 1, -1, -1):
        node, element = parents[depth], path[depth]
        kind, _, name = element.partition(":")
        if kind == "f" and isinstance(node, dict):
            node.pop(name, None)
        elif kind == "k" and isinstance(node, list):
            want = json.loads(name)
            node[:] = [i for i in node if not all(i.get(k) == v for k, v in want.items())]
        elif kind == "v" and isinstance(node, list) and json.loads(name) in node:
            node.remove(json.loads(name))
        if depth <= 1 or node or path[:depth] in keep:
            return  # metadata and spec themselves stay; so does a non-empty parent


def parse(fields_v1: dict[str, Any], prefix: Path = ()) -> set[Path]:
    """The field set of a ``fieldsV1`` tree."""
    out: set[Path] = set()
    for key, sub in fields_v1.items():
        if key == ".":
            continue
        path = prefix + (key,)
        if not sub or "." in sub:
            out.add(path)
        out |= parse(sub, path)
    return out


def render(paths: Iterable[Path]) -> dict[str, Any]:
    """A field set as a ``fieldsV1`` tree (``.`` marks a member that also has children)."""
    tree: dict[str, Any] = {}
    paths = set(paths)
    for path in sorted(paths):
        node = tree
        for element in path:
            node = node.setdefault(element, {})
    def mark(node: dict[str, Any], prefix: Path) -> None:
        for key, sub in node.items():
            if key != "." and sub:
                if prefix + (key,) in paths:
                    sub["."] = {}
                mark(sub, prefix + (key,))
    mark(tree, ())
    return tree


class Managers:
    """The managed fields of one object, by (manager, operation, subresource)."""

    def __init__(self, entries: list[dict[str, Any]] | None) -> None:
        self.sets: dict[tuple[str, str, str], set[Path]] = {}
        self.meta: dict[tuple[str, str, str], dict[str, Any]] = {}
        for entry in entries or []:
            key = (entry["manager"], entry["operation"], entry.get("subresource", ""))
            self.sets[key] = parse(entry.get("fieldsV1") or {})
            self.meta[key] = entry

    def others(self, key: tuple[str, str, str]) -> set[Path]:
        return set().union(*[s for k, s in self.sets.items() if k != key])

    def entries(self, api_version: str, now: str, changed: set[tuple[str, str, str]]
                ) -> list[dict[str, Any]]:
        out = []
        for key, paths in self.sets.items():
            if not paths:
                continue
            manager, operation, subresource = key
            entry = {"manager": manager, "operation": operation, "apiVersion": api_version,
                     "time": now if key in changed or key not in self.meta
                     else self.meta[key].get("time", now),
                     "fieldsType": "FieldsV1", "fieldsV1": render(paths)}
            if subresource:
                entry["subresource"] = subresource
            out.append(entry)
        return out


def apply(live: dict[str, Any], config: dict[str, Any], schema: dict[str, Any],
          managers: Managers, manager: str, force: bool) -> tuple[dict[str, Any], list[str]]:
    """Merge ``config`` (applied by ``manager``) into ``live``; return the result and the
    conflicts (paths another manager owns with a different value) when not forced."""
    key = (manager, "Apply", "")
    new = leaves(config, schema)
    old = managers.sets.get(key, set())
    conflicts = []
    for other, paths in managers.sets.items():
        if other == key:
            continue
        for path in paths & new:
            try:
                same = get(live, path) == get(config, path)
            except KeyError:
                same = False
            if not same:
                if not force:
                    conflicts.append(f'.{".".join(e[2:] for e in path)} ({other[0]})')
                paths.discard(path)
    if conflicts:
        return live, conflicts
    result = copy.deepcopy(live)
    for path in sorted(new, key=lambda p: (len(p), _positions(config, p))):
        _put(result, path, config)  # new list items appended in the applied order
    keep = managers.others(key) | new
    for path in sorted(old - new, key=len, reverse=True):
        if path not in keep:
            _remove(result, path, keep)
    managers.sets[key] = new
    return result, []


def apply_object(live: dict[str, Any] | None, config: dict[str, Any], schema: dict[str, Any],
                 kind: str, manager: str, force: bool
                 ) -> tuple[dict[str, Any], Managers, list[str]]:
    """Server-side apply of ``config`` onto object ``live`` (None: the apply creates it):
    the result, its managers and the conflicts."""
    base = live if live is not None else {"apiVersion": config.get("apiVersion"),
                                          "kind": kind, "metadata": {}}
    managers = Managers(base["metadata"].get("managedFields"))
    result, conflicts = apply(base, config, schema, managers, manager, force)
    return result, managers, conflicts


def update(live: dict[str, Any] | None, new: dict[str, Any], schema: dict[str, Any],
           managers: Managers, manager: str, subresource: str = "") -> None:
    """Record a non-apply write of ``new`` over ``live`` by ``manager``."""
    key = (manager, "Update", subresource)
    if subresource == "status":
        sub = child_schema(schema, "status")
        before = leaves((live or {}).get("status", {}), sub, ("f:status",))
        after = leaves(new.get("status", {}), sub, ("f:status",))
    else:
        before = leaves(live, schema) if live is not None else set()
        after = leaves(new, schema)
    changed = set()
    for path in after:
        try:
            if live is None or get(live, path) != get(new, path):
                changed.add(path)
        except KeyError:
            changed.add(path)
    gone = before - after
    for other, paths in managers.sets.items():
        paths -= gone
        if other != key:
            paths -= changed
    managers.sets.setdefault(key, set()).update(changed)


def extract(value: Any, paths: set[Path], prefix: Path = ()) -> Any:
    """The part of ``value`` that field set ``paths`` covers (what a manager applied)."""
    if prefix in paths or not isinstance(value, (dict, list)):
        return copy.deepcopy(value)
    below = {p for p in paths if p[:len(prefix)] == prefix and len(p) > len(prefix)}
    if isinstance(value, dict):
        names = {p[len(prefix)][2:] for p in below if p[len(prefix)].startswith("f:")}
        return {k: extract(v, paths, prefix + (f"f:{k}",)) for k, v in value.items()
                if k in names}
    out = []
    for element in sorted({p[len(prefix)] for p in below}):
        if element.startswith("v:"):
            out.append(json.loads(element[2:]))
        elif element.startswith("k:"):
            try:
                out.append(extract(get(value, (element,)), paths, prefix + (element,)))
            except KeyError:
                continue
    return out
