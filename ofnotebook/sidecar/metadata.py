"""Component metadata as daprd reads it, before any driver sees it.

daprd is lenient where a strict reader would refuse working manifests, so the stand-in is too:

* **Keys match case-insensitively** (dapr/kit's ``DecodeMetadata`` decodes with mapstructure,
  which matches field names with ``strings.EqualFold``): ``redishost`` is ``redisHost``. The
  key is renamed to its documented spelling, so the drivers find it.
* **Legacy keys are upgraded** the way components-contrib does: Kafka's ``authRequired``
  becomes ``authType`` (``"false"`` -> ``none``; ``"true"`` -> ``password`` when a
  ``saslPassword`` is given, else ``mtls``; ``common/component/kafka/metadata.go``
  ``upgradeMetadata``), with daprd's deprecation warning.
* **Unknown keys are kept and warned about**, never refused: daprd ignores a key no component
  field takes. The warning names the closest known key, since a typo is the usual cause.

:func:`read_metadata` returns the metadata to start the driver with and those warnings; the
registry prints them in the stand-in's log and returns them in the registration's answer,
which the local and container targets show as deploy warnings (``backends/standin_warnings``).
"""

from __future__ import annotations

import difflib
from dataclasses import replace
from typing import Mapping

from .drivers import ComponentConfig, ComponentError
from .golang import parse_bool
from .metadata_keys import SCHEMA_KEYS

#: Keys of components-contrib's built-in authentication profiles
#: (``.build-tools/builtin-authentication-profiles.yaml``).
BUILTIN_PROFILE_KEYS: Mapping[str, frozenset[str]] = {
    "aws": frozenset({"region", "awsRegion", "accessKey", "secretKey", "sessionToken",
                      "assumeRoleArn", "sessionName", "trustAnchorArn", "trustProfileArn"}),
    "azuread": frozenset({"azureClientId", "azureEnvironment", "azureTenantId",
                          "azureClientSecret", "azureCertificate", "azureCertificateFile",
                          "azureCertificatePassword"}),
    "gcp": frozenset({"privateKeyID", "privateKey", "type", "projectID", "clientEmail",
                      "clientID", "authURI", "tokenURI", "authProviderX509CertURL",
                      "clientX509CertURL"}),
}

#: Keys daprd itself reads on every component of a kind, whatever its type.
RUNTIME_KEYS: Mapping[str, frozenset[str]] = {
    "pubsub": frozenset({"consumerID", "allowedTopics", "publishingScopes",
                         "subscriptionScopes", "protectedTopics"}),
    "state": frozenset({"keyPrefix", "actorStateStore", "outboxPublishPubsub",
                        "outboxPublishTopic", "outboxPubsub", "outboxDiscardWhenMissingState"}),
    "bindings": frozenset({"direction", "route"}),
    "secretstores": frozenset(),
}

#: Keys the stand-in's drivers read besides daprd's own (``bus`` of the in-memory components,
#: the dead-letter topic of a pub/sub input, names daprd's code accepts as aliases).
STANDIN_KEYS: Mapping[str, frozenset[str]] = {
    "pubsub.in-memory": frozenset({"bus"}),
    "state.in-memory": frozenset({"bus"}),
    "bindings.in-memory": frozenset({"bus", "topic"}),
    "bindings.rabbitmq": frozenset({"connectionString"}),
    "bindings.postgres": frozenset({"url"}),
    "bindings.kafka": frozenset({"consumerID"}),
}
#: A pub/sub input may name its dead-letter topic in its metadata (``delivery.py``).
DEAD_LETTER_KEY = "deadLetterTopic"

#: Types with no schema of their own here: their keys (components-contrib metadata.yaml).
OTHER_KEYS: Mapping[str, frozenset[str]] = {
    "bindings.in-memory": frozenset(),
    "secretstores.local.env": frozenset({"prefix"}),
    "secretstores.local.file": frozenset({"secretsFile", "nestedSeparator", "multiValued"}),
}
#: Types daprd registers under another name too (``bindings.postgresql`` is ``postgres``).
ALIASES: Mapping[str, str] = {"bindings.mqtt": "bindings.mqtt3", "pubsub.mqtt": "pubsub.mqtt3",
                              "bindings.postgresql": "bindings.postgres"}
#: Types whose legacy ``authRequired`` is upgraded to ``authType``.
_KAFKA = ("bindings.kafka", "pubsub.kafka")


def known_keys(component_type: str) -> frozenset[str] | None:
    """Every key daprd (or the stand-in) reads for ``component_type``; None when unknown."""
    kind_type = ALIASES.get(component_type.lower(), component_type.lower())
    kind = kind_type.split(".", 1)[0]
    if kind_type in SCHEMA_KEYS:
        profiles, keys = SCHEMA_KEYS[kind_type]
        for profile in profiles:
            keys = keys | BUILTIN_PROFILE_KEYS.get(profile, frozenset())
    elif kind_type in OTHER_KEYS:
        keys = OTHER_KEYS[kind_type]
    else:
        return None
    keys = keys | RUNTIME_KEYS.get(kind, frozenset()) | STANDIN_KEYS.get(kind_type, frozenset())
    if kind == "pubsub":
        keys = keys | {DEAD_LETTER_KEY}
    if kind_type in _KAFKA:
        keys = keys | {"authRequired"}
    return keys


def describe(component: ComponentConfig, label: str = "") -> str:
    """How a warning names a component: the use the user wrote and the Dapr component, since
    the user knows the one and daprd's logs (and the cluster) the other. ``label`` is the
    use, with its role (``input 'kafka'``) or as the name alone (``'kafka'``); without one,
    or when the use has the Dapr name, the component is named alone."""
    if not label or label in (repr(component.name), f"component {component.name!r}"):
        return f"component {component.name!r} ({component.type})"
    return f"{label} (Dapr component {component.name!r}, {component.type})"


def read_metadata(component: ComponentConfig, label: str = "") -> tuple[ComponentConfig,
                                                                          list[str]]:
    """``component`` with its metadata read as daprd reads it, and one warning line per key
    that daprd would ignore or that is deprecated. ``label`` names the use of the component
    (:func:`describe`). Raises ``ComponentError`` where daprd's init fails."""
    where = describe(component, label)
    known = known_keys(component.type)
    metadata = dict(component.metadata)
    warnings: list[str] = []
    if known is not None:
        by_fold = {key.lower(): key for key in known}
        for key in list(metadata):
            canonical = by_fold.get(key.lower())
            if key not in known and canonical is not None and canonical not in metadata:
                metadata[canonical] = metadata.pop(key)
    if component.type.lower() in _KAFKA:
        warnings += _upgrade_kafka(metadata, where)
    if known is not None:
        for key in metadata:
            if key in known:
                continue
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            warnings.append(f"{where}: metadata {key!r} is not a key daprd reads for "
                            f"{component.type}; kept, and ignored{hint}")
    return replace(component, metadata=metadata), warnings


def _upgrade_kafka(metadata: dict[str, str], where: str) -> list[str]:
    """components-contrib's ``upgradeMetadata``: ``authType`` from the legacy
    ``authRequired`` when no ``authType`` is given."""
    required = metadata.get("authRequired", "")
    if metadata.get("authType") or not required:
        return []
    try:
        value = parse_bool(required)
    except ValueError:
        raise ComponentError(f"{where}: kafka error: invalid value for 'authRequired' attribute "
                             f"({required!r}); use authType (none, password, mtls, oidc...) "
                             "instead") from None
    if not value:
        metadata["authType"] = "none"
    else:
        metadata["authType"] = "password" if metadata.get("saslPassword") else "mtls"
    return [f"{where}: authRequired is deprecated, use authType instead (read as authType: "
            f"{metadata['authType']})"]
