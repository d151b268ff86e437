"""One registry's HTTP API: the scheme, the auth, and what its errors mean.

https always; plain HTTP only for loopback registries and the hosts in
``OFNOTEBOOK_INSECURE_REGISTRIES``. Auth is what registries use: anonymous, Basic, and the
Bearer token flow of ``WWW-Authenticate`` (a token per set of scopes, fetched again when a
401 asks for a scope we lacked or the token expired). An error is turned into a
:class:`RegistryError` that says what the registry refused and whose credentials were used,
never the secret itself. The calls and their quirks are in
``shared/reference/engine-less-builds.md`` A.1.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import requests

from .credentials import ENV_SOURCE, Credentials, credentials_for, tls_verify
from .reference import RegistryError, api_host, is_insecure, is_loopback, split_registry

log = logging.getLogger("ofnotebook.registry")  # one name for the whole package

USER_AGENT = "ofnotebook-registry/0.1"
_HINTS = {
    "MANIFEST_BLOB_UNKNOWN": " A blob the manifest names is not in the repository: its layers "
                             "and config must be pushed (or mounted) there first.",
    "MANIFEST_INVALID": " The registry does not accept this manifest's format.",
    "DIGEST_INVALID": " The uploaded content does not match its digest.",
    "DENIED": " The credentials in use may not do this on this repository.",
    "UNAUTHORIZED": " The credentials in use are not accepted for this repository.",
    "NAME_UNKNOWN": " The repository does not exist on this registry.",
    "MANIFEST_UNKNOWN": " No manifest under this tag or digest.",
    "TOOMANYREQUESTS": " The registry rate-limits this client: wait, or log in to get a higher "
                       "limit.",
    "UNSUPPORTED": " The registry does not support this operation.",
}


@dataclass
class _Challenge:
    scheme: str  # "basic" | "bearer"
    realm: str = ""
    service: str = ""
    scope: str = ""


def parse_challenge(header: str) -> _Challenge | None:
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() not in ("basic", "bearer"):
        return None
    params = dict((k.lower(), v) for k, v in re.findall(r'(\w+)="([^"]*)"', rest))
    return _Challenge(scheme.lower(), params.get("realm", ""), params.get("service", ""),
                      params.get("scope", ""))


def _norm_scope(scope: str) -> str:
    """``repository:name:push,pull`` -> ``repository:name:pull,push`` (comparable)."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if not (kind and name and actions):
        return scope
    return f"{kind}:{name}:{','.join(sorted(set(actions.split(','))))}"


#: the scheme each API host answered on last, tried first by the next client of that host
_SCHEMES: dict[str, str] = {}


class Transport:
    """Authenticated API calls to one registry (``host[:port]``; ``docker.io`` means Docker
    Hub), for :class:`~ofnotebook.registry.client.RegistryClient` to build on.

    ``credentials`` default to :func:`credentials_for` the host. ``stats`` counts the requests
    and the body bytes sent (``bytes_sent``), for figures and tests.
    """

    def __init__(self, registry: str, *, credentials: Credentials | None = None,
                 use_env_credentials: bool = True, timeout: float = 300.0) -> None:
        host, _ = split_registry(registry)
        self.host = host
        self.api_host = api_host(host)
        self.credentials = credentials if credentials is not None else credentials_for(
            host, use_env=use_env_credentials)
        self.timeout = timeout
        self.loopback = is_loopback(self.api_host)
        self.insecure = is_insecure(host) or is_insecure(self.api_host)
        self.session = requests.Session()
        self.session.trust_env = not self.loopback
        self.session.headers["User-Agent"] = USER_AGENT
        self.verify: str | bool = tls_verify()
        self.base = ""
        self._challenge: _Challenge | None = None
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self.stats: dict[str, int] = {"requests": 0, "bytes_sent": 0}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.host!r}, {self.credentials!r})"

    def close(self) -> None:
        self.session.close()

    # -- transport ---------------------------------------------------------------------------

    def _raw(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", (10, self.timeout))
        self.stats["requests"] += 1
        self.stats[method] = self.stats.get(method, 0) + 1
        data = kwargs.get("data")
        if isinstance(data, bytes):
            self.stats["bytes_sent"] += len(data)
        response = self.session.request(method, url, verify=self.verify, **kwargs)
        log.debug("%s %s -> %s", method, url.split("?", 1)[0], response.status_code)
        return response

    def _tls_error(self, exc: Exception) -> RegistryError:
        reason = str(getattr(exc, "__context__", None) or exc)
        found = re.search(r"certificate verify failed: ([^(\]]+)", str(exc))
        if found:
            reason = found.group(1).strip()
        return RegistryError(
            f"TLS with the registry {self.host} failed ({reason[:160]}). If it uses "
            f"a private CA, point OFNOTEBOOK_REGISTRY_CA at its CA certificate (PEM); if it "
            f"serves plain HTTP, list it in OFNOTEBOOK_INSECURE_REGISTRIES.")

    def _unreachable(self, url: str, exc: Exception) -> RegistryError:
        kind = type(exc).__name__
        inner = re.search(r"\[Errno -?\d+\] ([^')\"]+)", str(exc))
        detail = f"{kind}: {inner.group(1)}" if inner else kind
        proxy = "" if self.loopback else ", and the proxy settings (HTTPS_PROXY/NO_PROXY)"
        return RegistryError(
            f"Cannot reach the registry {self.host} at {url} ({detail}). Check that it runs, "
            f"the host name and port{proxy}.")

    def _connect(self) -> None:
        """Pick https or (loopback / insecure only) http, and learn the auth challenge."""
        if self.base:
            return
        schemes = ["https", "http"] if (self.loopback or self.insecure) else ["https"]
        known = _SCHEMES.get(self.api_host)
        if known in schemes:
            schemes = [known] + [s for s in schemes if s != known]
        first_error: Exception | None = None
        for scheme in schemes:
            url = f"{scheme}://{self.api_host}/v2/"
            try:
                response = self._raw("GET", url, timeout=(10, 30))
            except requests.exceptions.SSLError as exc:
                first_error = first_error or exc
                continue
            except requests.RequestException as exc:
                first_error = first_error or exc
                continue
            if scheme == "http" and response.status_code == 400 and "HTTPS" in response.text:
                continue  # a TLS port answering plain HTTP: the https error is the real one
            self.base = f"{scheme}://{self.api_host}"
            _SCHEMES[self.api_host] = scheme
            if response.status_code == 401:
                self._challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
            elif response.status_code == 404:
                raise RegistryError(f"{self.base} answers, but not as a registry (no /v2/ "
                                    f"API: HTTP 404). Check the registry host and port.",
                                    status=404)
            elif response.status_code >= 400:
                raise self._error(response, "answer the API check")
            return
        if isinstance(first_error, requests.exceptions.SSLError):
            raise self._tls_error(first_error)
        assert first_error is not None
        raise self._unreachable(" and ".join(f"{s}://{self.api_host}/v2/" for s in schemes),
                                first_error)

    # -- auth --------------------------------------------------------------------------------

    def _token(self, scopes: tuple[str, ...], challenge: _Challenge, fresh: bool) -> str:
        key = scopes
        cached = self._tokens.get(key)
        if cached and not fresh and cached[1] > time.monotonic():
            return cached[0]
        realm = challenge.realm
        if not realm:
            raise RegistryError(
                f"The registry {self.host} asks for a Bearer token but its WWW-Authenticate "
                f"challenge names no realm (token service), so no token can be requested. The "
                f"registry's auth configuration is incomplete.", status=401)
        parsed = urllib.parse.urlsplit(realm)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise RegistryError(f"The registry {self.host} names an invalid token realm "
                                f"{realm!r}.", status=401)
        creds = self.credentials
        if parsed.scheme == "http" and not creds.anonymous and not (
                is_loopback(parsed.netloc) or is_insecure(parsed.netloc)):
            raise RegistryError(f"The registry {self.host} sends its token requests to plain "
                                f"HTTP ({parsed.netloc}); credentials are not sent in clear "
                                f"text. List it in OFNOTEBOOK_INSECURE_REGISTRIES to allow it.")
        params: list[tuple[str, str]] = []
        if challenge.service:
            params.append(("service", challenge.service))
        params += [("scope", s) for s in scopes]
        try:
            response = None
            if creds.identity_token:  # OAuth2 refresh-token grant, GET with Basic as fallback
                form = dict(params, grant_type="refresh_token", client_id="ofnotebook",
                            refresh_token=creds.identity_token)
                form["scope"] = " ".join(scopes)
                response = self._raw("POST", realm, data=form, timeout=(10, 60))
                if response.status_code in (404, 405):
                    response = None
            if response is None:
                headers = {} if creds.anonymous else {"Authorization": creds.basic()}
                response = self._raw("GET", realm, params=params, headers=headers,
                                     timeout=(10, 60))
        except requests.exceptions.SSLError as exc:
            raise self._tls_error(exc) from None
        except requests.RequestException as exc:
            raise RegistryError(f"Cannot reach the token service {realm} of the registry "
                                f"{self.host} ({type(exc).__name__}).") from None
        if response.status_code in (401, 403):
            if creds.anonymous:
                raise RegistryError(
                    f"The token service of {self.host} refuses anonymous access to "
                    f"{', '.join(scopes)}. Set {ENV_SOURCE}, or docker login {self.host}.",
                    status=response.status_code)
            raise RegistryError(
                f"The token service of {self.host} refused {creds.describe()} "
                f"(HTTP {response.status_code}): wrong user name or password, or no access to "
                f"{', '.join(scopes)}.", status=response.status_code)
        if response.status_code != 200:
            raise self._error(response, f"issue a token for {', '.join(scopes)}")
        try:
            answer = response.json()
            token = str(answer.get("token") or answer.get("access_token") or "")
            expires = float(answer.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            token, expires = "", 0
        if not token:
            raise RegistryError(f"The token service {realm} of {self.host} answered without a "
                                f"token.")
        self._tokens[key] = (token, time.monotonic() + max(expires - 10, 5))
        return token

    def _authorization(self, scopes: tuple[str, ...], fresh: bool) -> str | None:
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return None if self.credentials.anonymous else self.credentials.basic()
        return "Bearer " + self._token(scopes, challenge, fresh)

    def request(self, method: str, path: str, *, scopes: Iterable[str], what: str,
                ok: Iterable[int] = (200,), body: Callable[[], Any] | bytes | None = None,
                headers: dict[str, str] | None = None, stream: bool = False,
                **kwargs: Any) -> requests.Response:
        """One API call with auth: retried once per new challenge (a scope we lacked, a
        token that expired); any status not in ``ok`` raises :class:`RegistryError`."""
        self._connect()
        url = path if path.startswith(("http://", "https://")) else self.base + path
        wanted = tuple(dict.fromkeys(map(_norm_scope, scopes)))
        fresh = False
        sent_basic = False
        for _attempt in range(4):
            sent = dict(headers or {})
            auth = self._authorization(wanted, fresh)
            if auth:
                sent["Authorization"] = auth
                sent_basic = sent_basic or auth.startswith("Basic ")
            data = body() if callable(body) else body
            try:
                response = self._raw(method, url, headers=sent, data=data, stream=stream,
                                     **kwargs)
            except requests.exceptions.SSLError as exc:
                raise self._tls_error(exc) from None
            except requests.RequestException as exc:
                raise self._unreachable(url.split("?", 1)[0], exc) from None
            if response.status_code != 401:
                break
            challenge = parse_challenge(response.headers.get("WWW-Authenticate", ""))
            response.close()
            if challenge is None:
                raise RegistryError(
                    f"The registry {self.host} answered 401 to {what} without a usable "
                    f"WWW-Authenticate challenge, so it cannot be authenticated against.",
                    status=401)
            before = self._challenge
            self._challenge = challenge
            if challenge.scheme == "bearer":
                if not challenge.realm:
                    self._token(wanted, challenge, True)  # raises: no realm
                extra = tuple(dict.fromkeys(s for s in map(_norm_scope, challenge.scope.split())
                                            if s not in wanted))
                if extra:
                    wanted, fresh = wanted + extra, True
                    continue
                if not fresh or before is None or before.scheme != "bearer":
                    fresh = True
                    continue
            elif not self.credentials.anonymous and not sent_basic:
                continue
            raise self._unauthorized(what, wanted)
        else:
            raise self._unauthorized(what, wanted)
        if response.status_code not in tuple(ok):
            raise self._error(response, what)
        return response

    def _unauthorized(self, what: str, scopes: tuple[str, ...]) -> RegistryError:
        if self.credentials.anonymous:
            return RegistryError(
                f"The registry {self.host} wants credentials to {what}. Set {ENV_SOURCE}, or "
                f"docker login {self.host} (~/.docker/config.json or DOCKER_CONFIG).",
                code="UNAUTHORIZED", status=401)
        return RegistryError(
            f"The registry {self.host} refused {self.credentials.describe()} to {what}: wrong "
            f"user name or password, or no {'/'.join(sorted({s.rsplit(':', 1)[-1] for s in scopes}))} "
            f"access.", code="UNAUTHORIZED", status=401)

    def _error(self, response: requests.Response, what: str) -> RegistryError:
        try:
            errors = response.json().get("errors") or []
        except (ValueError, AttributeError):
            errors = []
        parts = []
        for item in errors[:3]:
            if not isinstance(item, dict):
                continue
            text = f"{item.get('code', '?')}: {item.get('message', '')}".rstrip(": ")
            detail = item.get("detail")
            if detail:
                shown = detail if isinstance(detail, str) else json.dumps(detail,
                                                                           separators=(",", ":"))
                text += f" ({shown[:200]})"
            parts.append(text)
        code = str(errors[0].get("code", "")) if errors and isinstance(errors[0], dict) else ""
        if not parts:
            parts = [(response.text or response.reason or "").strip()[:200] or "no details"]
        hint = _HINTS.get(code, "")
        if code in ("DENIED", "UNAUTHORIZED"):
            hint += f" Credentials in use: {self.credentials.describe()}."
        return RegistryError(f"The registry {self.host} refused to {what}: HTTP "
                             f"{response.status_code} {'; '.join(parts)}.{hint}",
                             code=code, status=response.status_code)
