"""Where secret values go on a cluster: Kubernetes ``Secret`` s, never a manifest.

Two kinds of value are secret: the ``--secret-env NAME`` variables (their values come from the
kernel's environment or a prompt at deploy, :mod:`ofnotebook.api`) and the credentials in
component metadata (``redisPassword``, an AMQP ``user:password@`` URI, a PostgreSQL
``password=``: :func:`~ofnotebook.spec.is_credential`). The local and container targets use
them in memory. On the kubernetes and yaml targets a manifest only names them:

* ``--secret-env`` variables and the credentials of the function's inline components are keys
  of the function's Secret ``<fn>-env`` (a variable under its own name, a credential under
  ``<component>.<metadata key>``, which no variable name can be), referenced by
  ``env[].valueFrom.secretKeyRef`` and by the component's ``metadata[].secretKeyRef``;
* a standalone named Component (v1beta2 ``--component``), shared by the functions that use it,
  has its own Secret ``<component>-auth``, so that it outlives any one of them, and
  ``auth.secretStore: kubernetes``.

The kubernetes target creates these Secrets with the values; the yaml target writes only the
``kubectl create secret generic`` commands (no value) into the bundle's README.
"""

from __future__ import annotations

import shlex
from typing import Any, Mapping

from .spec import ComponentSpec, FunctionSpec, is_credential

ENV_SECRET_SUFFIX = "-env"
COMPONENT_SECRET_SUFFIX = "-auth"


def env_secret(spec: FunctionSpec) -> str:
    """The name of the function's own Secret."""
    return f"{spec.name}{ENV_SECRET_SUFFIX}"


def secret_for(spec: FunctionSpec, component: ComponentSpec, standalone: bool) -> str:
    """The Secret holding ``component``'s credentials: its own when it is a standalone
    Component, else the function's."""
    if standalone and component.component:
        return f"{component.component}{COMPONENT_SECRET_SUFFIX}"
    return env_secret(spec)


def secret_key(component: ComponentSpec, key: str) -> str:
    """The key of a component credential in its Secret (``cache.redisPassword``)."""
    return f"{component.component or component.name}.{key}"


def metadata_items(component: ComponentSpec, secret: str | None) -> list[dict[str, Any]]:
    """The component's metadata as a Dapr ``metadata`` list; with ``secret``, each credential
    is a ``secretKeyRef`` into that Secret instead of its value."""
    return [{"name": k, "secretKeyRef": {"name": secret, "key": secret_key(component, k)}}
            if secret and is_credential(k, v) else {"name": k, "value": v}
            for k, v in component.metadata]


def has_credentials(component: ComponentSpec) -> bool:
    return any(is_credential(k, v) for k, v in component.metadata)


def secret_data(spec: FunctionSpec, env: Mapping[str, str], standalone: bool
                ) -> dict[str, dict[str, str]]:
    """Every Secret ``spec`` needs on a cluster, by name: key -> value (a ``--secret-env``
    value from ``env``, empty when ``env`` lacks it: the yaml target knows only the keys).
    ``standalone``: named components are standalone Components (v1beta2)."""
    found: dict[str, dict[str, str]] = {}
    if spec.secret_env:
        found[env_secret(spec)] = {name: env.get(name, "") for name in spec.secret_env}
    seen: set[tuple[str, str]] = set()
    for c in spec.inputs + spec.outputs + spec.states + spec.components:
        for key, value in c.metadata:
            name = secret_for(spec, c, standalone)
            if is_credential(key, value) and (name, secret_key(c, key)) not in seen:
                seen.add((name, secret_key(c, key)))
                found.setdefault(name, {})[secret_key(c, key)] = str(value)
    return found


def secret_manifest(name: str, namespace: str, data: Mapping[str, str],
                    labels: Mapping[str, str]) -> dict[str, Any]:
    """A ``v1`` ``Secret`` (type Opaque) holding ``data``, base64 as the API stores it."""
    import base64

    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in sorted(data.items())}}


def kubectl_commands(spec: FunctionSpec, namespace: str | None, standalone: bool) -> list[str]:
    """The commands that create the Secrets a written bundle references, without a value: a
    variable reads it from the shell's environment (``--from-literal=API_TOKEN="$API_TOKEN"``),
    a credential says what to put in."""
    where = f" -n {namespace}" if namespace else ""
    commands = []
    for name, data in secret_data(spec, {}, standalone).items():
        literals = [f'--from-literal={key}="${key}"' if key in spec.secret_env else
                    f"--from-literal={key}={shlex.quote('<' + key.rpartition('.')[2] + '>')}"
                    for key in sorted(data)]
        commands.append(f"kubectl create secret generic {name}{where} " + " ".join(literals))
    return commands
