"""How a function runs in a cluster: :class:`ClusterOptions`, from Python objects or from the
plain values the magic sends.

Every cluster setting comes through here, however it was spelled: ``--keda-trigger
kafka:topic=logs`` on the magic line, ``{"type": "kafka", "metadata": {...}}`` in
``target_options``, or a ``ClusterOptions`` built by hand. ``ClusterOptions.__post_init__`` is
the one coercion: each field is parsed and checked, or refused with one ``ConfigError`` that
names the option as the magic spells it, the bad value and what to write instead. The local
and container targets coerce the settings too, and then ignore them, so a cell written for the
cluster runs locally and a typo in it fails at once rather than on the day it meets a cluster.
docs/cluster-settings.md lists every setting and what it becomes in the manifest.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterable, Mapping

from .errors import ConfigError

DAPR_MODES = ("standalone", "sidecar")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
API_VERSIONS = ("v1beta2", "v1beta1")
#: the magic's flag for the settings whose flag is not the field name with dashes
FLAGS = {"keda_triggers": "--keda-trigger", "keda_cooldown_period": "--keda-cooldown",
         "secrets": "--secret-env", "labels": "--label"}
#: KEDA ``ScaleTriggers`` fields (the Function CRD's ``keda.triggers`` items)
TRIGGER_KEYS = ("type", "name", "metadata", "authenticationRef", "metricType",
                "useCachedMetrics")
BEHAVIOR_RULE_KEYS = ("stabilizationWindowSeconds", "selectPolicy", "policies")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
#: a Kubernetes resource quantity, as the CRD's pattern for ``resources.limits`` has it
_QUANTITY = re.compile(r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
                       r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")


def flag(key: str) -> str:
    """The magic's spelling of setting ``key`` (``keda_triggers`` -> ``--keda-trigger``)."""
    return FLAGS.get(key, "--" + key.replace("_", "-"))


def _bad(key: str, value: Any, why: str) -> ConfigError:
    return ConfigError(f"{flag(key)} {value!r} {why}", key=key)


# -- one coercion per kind of value --------------------------------------------------------

def _name(pattern: re.Pattern[str], what: str) -> Callable[[Any, str], str | None]:
    def coerce(value: Any, key: str) -> str | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str) or len(value) > 253 or not pattern.match(value):
            raise _bad(key, value, f"is not a valid {what}: use lowercase letters, digits "
                                   f"and '-' (e.g. 'push-secret').")
        return value
    return coerce


def _choice(choices: tuple[str, ...], default: str | None) -> Callable[[Any, str], str | None]:
    def coerce(value: Any, key: str) -> str | None:
        if value is None or value == "":
            return default
        if value not in choices:
            raise _bad(key, value, f"is not one of {', '.join(choices)}.")
        return str(value)
    return coerce


def _count(value: Any, key: str) -> int | None:
    """A whole number of replicas, seconds or GPUs: ``3`` or ``"3"``, never ``True``."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(key, value, "needs a whole number, 0 or more.")
    return value


def _gpus(value: Any, key: str) -> int:
    return _count(value, key) or 0


def _quantity(value: Any, key: str) -> str | None:
    if value is None or value == "":
        return None
    text = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else value
    if not isinstance(text, str) or not _QUANTITY.match(text):
        example = "512Mi or 4Gi" if key == "memory" else "500m or 2"
        raise _bad(key, value, f"is not a Kubernetes quantity; write it as e.g. {example}.")
    return text


def _items(value: Any, key: str) -> list[Any]:
    """A list of values, from one value or any iterable (not a mapping)."""
    if value is None or value == "":
        return []
    if isinstance(value, (str, Mapping)):
        return [value]
    if isinstance(value, Iterable):
        return list(value)
    raise _bad(key, value, "needs a list.")


def _metadata_value(value: Any) -> str:
    """KEDA metadata is a map of strings: ``20`` -> ``"20"``, ``False`` -> ``"false"``."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _trigger(item: Any, key: str) -> dict[str, Any]:
    """``TYPE:KEY=VALUE,KEY=VALUE`` or a KEDA ``ScaleTriggers`` mapping. A part without ``=``
    continues the value before it, so ``bootstrapServers=a:9092,b:9092`` keeps its list."""
    if isinstance(item, str):
        kind, sep, rest = item.partition(":")
        metadata: dict[str, str] = {}
        last, bad = "", not sep
        for part in rest.split(",") if sep else []:
            name, eq, value = part.partition("=")
            if eq and name.strip():
                last = name.strip()
                metadata[last] = value.strip()
            elif not eq and last and part.strip():
                metadata[last] += "," + part.strip()
            elif part.strip():
                bad = True
        if bad or not _DNS_LABEL.match(kind.strip()) or not metadata:
            raise _bad(key, item, "needs TYPE:KEY=VALUE[,KEY=VALUE...], e.g. "
                                  "kafka:topic=logs,lagThreshold=20.")
        return {"type": kind.strip(), "metadata": metadata}
    if not isinstance(item, Mapping):
        raise _bad(key, item, "needs a 'TYPE:KEY=VALUE,...' string or a mapping with 'type' "
                              "and 'metadata'.")
    unknown = sorted(set(item) - set(TRIGGER_KEYS))
    if unknown:
        raise _bad(key, dict(item), f"has unknown field(s) {', '.join(unknown)}; a KEDA trigger "
                                    f"has {', '.join(TRIGGER_KEYS)}.")
    given = item.get("metadata")
    if not isinstance(item.get("type"), str) or not item["type"] or not isinstance(
            given, Mapping) or not given:
        raise _bad(key, dict(item), "needs a 'type' and a non-empty 'metadata' mapping, e.g. "
                                    "{'type': 'kafka', 'metadata': {'topic': 'logs'}}.")
    trigger = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in item.items()}
    trigger["metadata"] = {str(k): _metadata_value(v) for k, v in given.items()}
    return trigger


def _triggers(value: Any, key: str) -> tuple[dict[str, Any], ...]:
    return tuple(_trigger(item, key) for item in _items(value, key))


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _behavior(value: Any, key: str) -> dict[str, Any] | None:
    """The HPA ``behavior`` (``scaleUp``/``scaleDown`` rules) from YAML, JSON or a mapping,
    checked as autoscaling/v2 checks it, so a typo is named here, not by the HPA controller."""
    if value is None or value == "":
        return None
    given = value
    if isinstance(value, str):
        value = _load_yaml(value, key)
    if isinstance(value, Mapping) and set(value) == {"behavior"}:
        value = value["behavior"]  # pasted with its key
    example = "e.g. {scaleDown: {stabilizationWindowSeconds: 45}}"
    if not isinstance(value, Mapping) or not value or set(value) - {"scaleUp", "scaleDown"}:
        raise _bad(key, given, f"needs scaleUp and/or scaleDown rules, {example}.")
    for direction, rule in value.items():
        if not isinstance(rule, Mapping) or set(rule) - set(BEHAVIOR_RULE_KEYS):
            raise _bad(key, given, f"{direction} takes {', '.join(BEHAVIOR_RULE_KEYS)}.")
        window = rule.get("stabilizationWindowSeconds", 0)
        if not _whole(window, 0, 3600):
            raise _bad(key, given, f"{direction}.stabilizationWindowSeconds needs 0 to 3600.")
        if rule.get("selectPolicy", "Max") not in ("Max", "Min", "Disabled"):
            raise _bad(key, given, f"{direction}.selectPolicy is one of Max, Min, Disabled.")
        for policy in rule.get("policies") or ():
            if not (isinstance(policy, Mapping) and policy.get("type") in ("Pods", "Percent")
                    and _whole(policy.get("value"), 1, 2**31 - 1)
                    and _whole(policy.get("periodSeconds"), 1, 1800)
                    and not set(policy) - {"type", "value", "periodSeconds"}):
                raise _bad(key, given, f"{direction}.policies need type (Pods or Percent), "
                                       f"value (1 or more) and periodSeconds (1 to 1800).")
    return json.loads(json.dumps(value))  # plain dicts and lists, a copy


def _load_yaml(text: str, key: str) -> Any:
    """JSON, else YAML (PyYAML comes with the kubernetes extra)."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        import yaml
    except ImportError:
        raise _bad(key, text, "is not JSON; write it as JSON, or pip install "
                              "'ofnotebook[kubernetes]' to write YAML.") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _bad(key, text, f"is neither JSON nor YAML ({str(exc).splitlines()[0]}).") \
            from None


def _pairs(value: Any, key: str, form: str) -> list[tuple[str, Any]]:
    """``{"K": V}`` or ``["K=V", ...]`` as ``(K, V)`` pairs."""
    if isinstance(value, Mapping):
        return [(str(k), v) for k, v in value.items()]
    pairs = []
    for item in _items(value, key):
        name, sep, rest = str(item).partition("=")
        if not sep or not name:
            raise _bad(key, item, f"is not {form}.")
        pairs.append((name, rest))
    return pairs


def _secrets(value: Any, key: str) -> dict[str, tuple[str, str]]:
    """``VAR=SECRET:KEY`` items, or ``{"VAR": ("secret", "key")}`` (or ``"secret:key"``)."""
    out = {}
    for var, ref in _pairs(value, key, "VAR=SECRET:KEY"):
        secret, item = (ref.partition(":")[::2] if isinstance(ref, str) else
                        tuple(ref) if isinstance(ref, (tuple, list)) and len(ref) == 2
                        else ("", ""))
        shown = f"{var}={ref}" if isinstance(ref, str) else {var: ref}
        if not _ENV_NAME.match(var):
            raise _bad(key, shown, f"names no valid environment variable ({var!r}).")
        if not (isinstance(secret, str) and _DNS_SUBDOMAIN.match(secret) and len(secret) < 254
                and isinstance(item, str) and _SECRET_KEY.match(item)):
            raise _bad(key, shown, "is not VAR=SECRET:KEY (a Kubernetes Secret's name and one "
                                   "of its keys), e.g. API_TOKEN=model-secrets:token.")
        out[var] = (secret, item)
    return out


def _labels(value: Any, key: str) -> dict[str, str]:
    out = {}
    for name, text in _pairs(value, key, "K=V"):
        prefix, _, base = name.rpartition("/")
        text = str(text)
        if not (base and len(base) <= 63 and _LABEL_NAME.match(base) and len(text) <= 63
                and _LABEL_NAME.match(text) and (not prefix or _DNS_SUBDOMAIN.match(prefix))):
            raise _bad(key, f"{name}={text}", "is not a valid Kubernetes label: up to 63 "
                                              "letters, digits, '-', '_' or '.' on each side, "
                                              "e.g. team=data.")
        out[name] = text
    return out


def _unquoted(value: Any) -> Any:
    """``value`` without the quotes around it, or around each of its strings: IPython's magic
    parser keeps them (``--hpa-behavior '{scaleUp: ...}'`` arrives quoted), and no setting's
    value is itself a quoted string."""
    if isinstance(value, str):
        return value[1:-1] if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"" \
            else value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return type(value)(_unquoted(v) for v in value)
    return value


_COERCE: dict[str, Callable[[Any, str], Any]] = {
    "namespace": _name(_DNS_LABEL, "namespace"),
    "image_credentials": _name(_DNS_SUBDOMAIN, "Secret name"),
    "pull_policy": _choice(PULL_POLICIES, "IfNotPresent"),
    "api_version": _choice(API_VERSIONS, "v1beta2"),
    "dapr_mode": _choice(DAPR_MODES, None),
    "min_replicas": _count, "max_replicas": _count,
    "keda_triggers": _triggers,
    "keda_polling_interval": _count, "keda_cooldown_period": _count,
    "hpa_behavior": _behavior,
    "secrets": _secrets,
    "cpu": _quantity, "memory": _quantity, "gpus": _gpus,
    "labels": _labels,
}


@dataclass(frozen=True, kw_only=True)
class ClusterOptions:
    """How the function runs in a cluster: everything the spec itself does not say.

    Each field takes the plain value the magic sends or a Python one (see the module
    docstring). ``namespace`` unset: the kubeconfig context's on the kubernetes target; the
    yaml target then writes none. ``dapr_mode`` unset: standalone (OpenFunction's default), which
    v1beta2 manifests still write explicitly and v1beta1 ones leave out. ``secrets`` maps an
    environment variable to ``(secret name, key)``: the manifest holds a ``secretKeyRef``,
    never the value. ``keda_triggers`` are KEDA ``ScaleTriggers`` (Kafka lag, for example): a
    ScaledObject exists only with them, so the polling interval, cooldown and ``hpa_behavior``
    (``scaleUp``/``scaleDown``) need one. ``api_version`` is what the yaml target and
    ``%function export`` write; the kubernetes target applies v1beta2, the version the
    cluster stores.
    """

    namespace: str | None = None
    image_credentials: str | None = None
    pull_policy: str = "IfNotPresent"
    api_version: str = "v1beta2"
    dapr_mode: str | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    keda_triggers: tuple[Mapping[str, Any], ...] = ()
    keda_polling_interval: int | None = None
    keda_cooldown_period: int | None = None
    hpa_behavior: Mapping[str, Any] | None = None
    secrets: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    cpu: str | None = None
    memory: str | None = None
    gpus: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for item in fields(self):
            value = _unquoted(getattr(self, item.name))
            object.__setattr__(self, item.name, _COERCE[item.name](value, item.name))
        if (self.min_replicas is not None and self.max_replicas is not None
                and self.min_replicas > self.max_replicas):
            raise ConfigError(f"--min-replicas {self.min_replicas} is above --max-replicas "
                              f"{self.max_replicas}.", key="min_replicas")
        if not self.keda_triggers:
            given = [k for k in ("keda_polling_interval", "keda_cooldown_period",
                                 "hpa_behavior") if getattr(self, k) is not None]
            if given:
                raise ConfigError(
                    f"{flag(given[0])} needs a --keda-trigger: OpenFunction creates the KEDA "
                    f"ScaledObject (and its HPA) only for a function with KEDA triggers, e.g. "
                    f"--keda-trigger kafka:topic=logs,lagThreshold=20.", key=given[0])

    def __hash__(self) -> int:
        return hash(tuple(hashable(getattr(self, item.name)) for item in fields(self)))


#: every setting ``ClusterOptions`` takes (``target_options`` keys)
SETTINGS = frozenset(item.name for item in fields(ClusterOptions))


def cluster_settings(options: Mapping[str, Any]) -> tuple[ClusterOptions | None, dict[str, Any]]:
    """Split ``target_options`` into one :class:`ClusterOptions` (``None`` when they hold no
    cluster setting) and the target's own options. ``options=ClusterOptions(...)`` is the
    base; plain settings beside it override its fields."""
    base = options.get("options")
    if base is not None and not isinstance(base, ClusterOptions):
        raise ConfigError(f"target_options['options'] must be an ofnotebook.manifests."
                          f"ClusterOptions, not {type(base).__name__}.", key="options")
    given = {k: v for k, v in options.items() if k in SETTINGS and v is not None}
    rest = {k: v for k, v in options.items() if k not in SETTINGS and k != "options"}
    if base is None and not given:
        return None, rest
    merged = {item.name: getattr(base, item.name) for item in fields(ClusterOptions)} \
        if base is not None else {}
    return ClusterOptions(**{**merged, **given}), rest


def hashable(value: Any) -> Any:
    """``value`` as something hashable, equal for equal values: mappings and lists become
    tuples (an instance cache keys on the options; a dict in them is unhashable)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), hashable(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [hashable(v) for v in value]
        return tuple(sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value
