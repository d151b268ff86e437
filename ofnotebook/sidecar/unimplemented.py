"""What the stand-in does not serve, and what to use instead: one message per Dapr call.

The generated ``DaprServicer`` answers every call a servicer does not override with
UNIMPLEMENTED "Method not implemented!", which names neither the call nor a way out. The
stand-in answers each of those gRPC methods, and each Dapr HTTP path it does not route, with
UNIMPLEMENTED / 501 and the message :func:`grpc_message` / :func:`http_message` gives here.
``docs/dapr-api.md`` lists the same table for readers.
"""

from __future__ import annotations

import re

_CLUSTER = "deploy to the kubernetes target, where daprd serves it"

#: (what the call belongs to, what to use instead), by a pattern of the gRPC method name.
_GROUPS: tuple[tuple[str, str, str], ...] = (
    (r".*Actor.*", "actors (they need Dapr's placement and scheduler services)",
     f"keep the state in a state store (save_state/get_state) and call functions with "
     f"invoke_method locally, or {_CLUSTER}"),
    (r".*Workflow.*", "workflows (they need daprd's workflow engine)", _CLUSTER),
    (r".*Configuration.*", "the configuration API",
     "read settings from a state store (get_state) or from the function's environment (--env)"),
    (r"TryLock.*|Unlock.*", "distributed locks",
     "use a state transaction with etags (execute_state_transaction) as a lock"),
    (r".*(Encrypt|Decrypt|Subtle).*", "the cryptography API",
     "read keys from a local secret store (get_secret) and use Python's cryptography package"),
    (r".*Job.*", "the jobs API (it needs Dapr's scheduler)",
     "trigger the function with a bindings.cron input (--input tick=cron://...)"),
    (r"Converse.*", "the conversation (LLM) API", "call the model's API from the function"),
    (r".*(Collection|Index|Document|Vector|Search|BinaryFile).*",
     "this alpha storage API", "call the store's own client from the function"),
    (r"QueryStateAlpha1", "state queries", "read known keys with get_bulk_state, or query the "
     "store with its own client (a postgresql binding's query operation)"),
    (r"SubscribeTopicEventsAlpha1", "streaming subscriptions (DaprClient.subscribe)",
     "declare the topic as an --input of an async function, or serve it with dapr.ext.grpc's "
     "@app.subscribe in an app registered with the stand-in"),
    (r"SetMetadata", "setting sidecar metadata",
     "pass what the function needs in its environment (--env)"),
    (r"Shutdown", "shutting the sidecar down",
     "stop the function with its handle (handle.stop()); the kernel's stand-in serves others"),
)

#: (method pattern or "", path pattern, the gRPC method it corresponds to) for HTTP paths.
_PATHS: tuple[tuple[str, str, str], ...] = (
    ("", r"/v1\.0/actors/.*", "InvokeActor"),
    ("", r"/v1\.0(-alpha1|-beta1)?/workflows(/.*)?", "StartWorkflowBeta1"),
    ("", r"/v1\.0(-alpha1)?/configuration(/.*)?", "GetConfiguration"),
    ("", r"/v1\.0-alpha1/(lock|unlock)(/.*)?", "TryLockAlpha1"),
    ("", r"/v1\.0-alpha1/crypto(/.*)?", "EncryptAlpha1"),
    ("", r"/v1\.0(-alpha1)?/jobs(/.*)?", "ScheduleJob"),
    ("", r"/v1\.0-alpha\d/conversation(/.*)?", "ConverseAlpha1"),
    ("", r"/v1\.0(-alpha1)?/state/[^/]+/query", "QueryStateAlpha1"),
    ("", r"/v1\.0/shutdown", "Shutdown"),
    ("PUT", r"/v1\.0/metadata/.*", "SetMetadata"),
)


def _advice(method: str) -> tuple[str, str]:
    for pattern, what, instead in _GROUPS:
        if re.fullmatch(pattern, method):
            return what, instead
    return "this call", "see docs/dapr-api.md for what the local stand-in serves"


def grpc_message(method: str) -> str:
    """The UNIMPLEMENTED message of the gRPC method ``method`` (``InvokeActor``)."""
    what, instead = _advice(method)
    return (f"Dapr API {method} ({what}) is not served by ofnotebook's local Dapr stand-in; "
            f"{instead}")


def http_message(method: str, path: str) -> str:
    """The 501 message of the Dapr HTTP call ``method path`` the stand-in does not route."""
    for verb, pattern, grpc_method in _PATHS:
        if (not verb or verb == method) and re.fullmatch(pattern, path):
            what, instead = _advice(grpc_method)
            return (f"Dapr API {method} {path} ({what}) is not served by ofnotebook's local "
                    f"Dapr stand-in; {instead}")
    return (f"Dapr API {method} {path} is not served by ofnotebook's local Dapr stand-in; see "
            "docs/dapr-api.md for what it serves")
