"""The OCI Distribution client (ofnotebook.registry) against real registries: every call, every
auth source, TLS, and one clear message for each bad input."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import logging
import os
import stat
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ofnotebook import registry as reg
from ofnotebook.errors import BuildError
from ofnotebook.registry.client import _with_digest
from ofnotebook.registry.credentials import ENV_SOURCE
from ofnotebook.registry.reference import (ACCEPT, CONFIG_DOCKER, CONFIG_OCI, INDEX_OCI,
                                           LAYER_DOCKER, LIST_DOCKER, MANIFEST_DOCKER, MANIFEST_OCI,
                                           is_insecure, is_loopback, sha256_digest)
from tests.helpers import free_port
from tests.registry.conftest import (IDENTITY_TOKEN, PASSWORD, READER, READER_PASSWORD, USER,
                                     Registry, login, push_fake_base)


def unique(prefix: str = "t") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


def blob(size: int = 1000) -> tuple[bytes, str]:
    data = os.urandom(size)
    return data, sha256_digest(data)


def opener(data: bytes) -> Callable[[], Any]:
    import io

    return lambda: io.BytesIO(data)


# --------------------------------------------------------------------------------------------
# References


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:5000/library/python:3.11-slim", ("127.0.0.1:5000", "library/python", "3.11-slim", "")),
    ("python:3.11-slim", ("docker.io", "library/python", "3.11-slim", "")),
    ("python", ("docker.io", "library/python", "", "")),
    ("index.docker.io/team/app:v1", ("docker.io", "team/app", "v1", "")),
    ("localhost/app", ("localhost", "app", "", "")),
    ("ghcr.io/org/a/b:t@sha256:" + "a" * 64, ("ghcr.io", "org/a/b", "t", "sha256:" + "a" * 64)),
    ("team/app@sha256:" + "b" * 64, ("docker.io", "team/app", "", "sha256:" + "b" * 64)),
    ("[::1]:5000/x:1", ("[::1]:5000", "x", "1", "")),
])
def test_references_are_normalised_as_docker_does(text: str, expected: tuple[str, ...]) -> None:
    ref = reg.Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected
    assert ref.api_host == ("registry-1.docker.io" if expected[0] == "docker.io" else expected[0])
    assert ref.ref == (expected[3] or expected[2] or "latest")


@pytest.mark.parametrize("text", ["Python:3", "x@sha256:123", "a//b", "app:bad tag"])
def test_a_bad_reference_is_refused(text: str) -> None:
    with pytest.raises(reg.RegistryError, match="not a valid image reference"):
        reg.Reference.parse(text)


def test_loopback_and_insecure_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1:5000", "127.3.2.1", "localhost:1",
                                        "[::1]:5000", "::1"))
    assert not any(is_loopback(h) for h in ("10.0.0.1:5000", "registry.local", "ghcr.io"))
    monkeypatch.setenv("OFNOTEBOOK_INSECURE_REGISTRIES", "reg.ns.svc:5000, other.example")
    assert is_insecure("reg.ns.svc:5000") and is_insecure("other.example:443")
    assert not is_insecure("reg.ns.svc:5001") and not is_insecure("ghcr.io")


def test_the_upload_location_is_used_verbatim_with_the_digest_appended() -> None:
    digest = "sha256:" + "c" * 64
    assert _with_digest("http://r/v2/a/blobs/uploads/u?_state=x%3D", digest) == \
        f"http://r/v2/a/blobs/uploads/u?_state=x%3D&digest=sha256%3A{'c' * 64}"
    assert _with_digest("http://r/v2/a/blobs/uploads/u", digest) == \
        f"http://r/v2/a/blobs/uploads/u?digest=sha256%3A{'c' * 64}"


# --------------------------------------------------------------------------------------------
# Manifests


def test_manifest_get_by_tag_and_digest_in_the_base_family(plain: Registry,
                                                           fake_bases: dict[str, str]) -> None:
    with reg.RegistryClient(plain.host) as client:
        docker = client.get_manifest("base/python", "docker")
        assert docker.media_type == MANIFEST_DOCKER
        assert docker.digest == sha256_digest(docker.body)
        assert client.get_manifest("base/python", docker.digest).body == docker.body
        oci = client.get_manifest("base/python", "oci")
        assert oci.media_type == MANIFEST_OCI and oci.data["config"]["mediaType"] == \
            CONFIG_OCI
        assert client.manifest_digest("base/python", "docker") == docker.digest
        assert client.manifest_digest("base/python", "no-such-tag") is None
        with pytest.raises(reg.RegistryError, match="MANIFEST_UNKNOWN") as caught:
            client.get_manifest("base/python", "no-such-tag")
        assert caught.value.status == 404
        assert client.session.trust_env is False  # loopback: no proxy


def test_an_index_is_resolved_to_the_platform(plain: Registry,
                                              fake_bases: dict[str, str]) -> None:
    with reg.RegistryClient(plain.host) as client:
        amd64 = client.get_manifest("base/python", "oci")
        arm64_digest = push_fake_base(client, "base/python", "oci-arm64", family=MANIFEST_OCI,
                                      arch="arm64")
        arm64 = client.get_manifest("base/python", arm64_digest)
        index = json.dumps({"schemaVersion": 2, "mediaType": INDEX_OCI, "manifests": [
            {"mediaType": MANIFEST_OCI, "digest": amd64.digest, "size": len(amd64.body),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": MANIFEST_OCI, "digest": arm64.digest, "size": len(arm64.body),
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": MANIFEST_OCI, "digest": amd64.digest, "size": len(amd64.body),
             "platform": {"os": "unknown", "architecture": "unknown"}}]}).encode()
        client.put_manifest("base/python", "index", index)
        assert client.get_manifest("base/python", "index").digest == amd64.digest
        assert client.get_manifest("base/python", "index", platform="linux/arm64").digest == \
            arm64.digest
        assert client.get_manifest("base/python", "index",
                                   platform="linux/arm64/v8").digest == arm64.digest
        raw = client.get_manifest("base/python", "index", platform=None)
        assert raw.is_index and raw.media_type == INDEX_OCI
        with pytest.raises(reg.RegistryError, match=r"no image for linux/s390x \(it offers "
                                                     r"linux/amd64, linux/arm64/v8\)"):
            client.get_manifest("base/python", "index", platform="linux/s390x")


def test_manifest_put_answers_its_digest_and_a_rejected_manifest_is_quoted(
        plain: Registry) -> None:
    repo = unique()
    with reg.RegistryClient(plain.host) as client:
        cfg = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
        client.upload(repo, sha256_digest(cfg), len(cfg), opener(cfg))
        missing = "sha256:" + hashlib.sha256(b"never uploaded").hexdigest()
        manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_DOCKER,
                               "config": {"mediaType": CONFIG_DOCKER,
                                          "digest": sha256_digest(cfg), "size": len(cfg)},
                               "layers": [{"mediaType": LAYER_DOCKER, "digest": missing,
                                           "size": 14}]}).encode()
        with pytest.raises(reg.RegistryError) as caught:
            client.put_manifest(repo, "half", manifest)
        assert caught.value.code == "MANIFEST_BLOB_UNKNOWN" and isinstance(caught.value,
                                                                           BuildError)
        assert "MANIFEST_BLOB_UNKNOWN" in str(caught.value) and missing in str(caught.value)
        assert client.manifest_digest(repo, "half") is None  # nothing tagged
        with pytest.raises(reg.RegistryError, match=r"HTTP 400 MANIFEST_INVALID: manifest "
                                                     r"invalid\. The registry does not accept"):
            client.put_manifest(repo, "bad", b'{"schemaVersion": 1}', MANIFEST_DOCKER)
        good = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_DOCKER,
                           "config": {"mediaType": CONFIG_DOCKER,
                                      "digest": sha256_digest(cfg), "size": len(cfg)},
                           "layers": []}).encode()
        mark = plain.mark()
        assert client.put_manifest(repo, "good", good) == sha256_digest(good)
        put = [c for c in plain.calls(mark) if c.method == "PUT"]
        assert [(c.path, c.status) for c in put] == [(f"/v2/{repo}/manifests/good", 201)]
        assert client.get_manifest(repo, "good").body == good  # the exact bytes are stored


# --------------------------------------------------------------------------------------------
# Blobs


def test_blob_head_get_monolithic_and_chunked_uploads(plain: Registry) -> None:
    repo = unique()
    with reg.RegistryClient(plain.host) as client:
        data, digest = blob(5000)
        assert not client.blob_exists(repo, digest)
        mark = plain.mark()
        client.upload(repo, digest, len(data), opener(data))
        assert [(c.method, c.status) for c in plain.calls(mark)] == [("POST", 202),
                                                                     ("PUT", 201)]
        assert client.blob_exists(repo, digest) and client.get_blob(repo, digest) == data

    with reg.RegistryClient(plain.host, monolithic_max=1000, chunk_size=700) as chunked:
        data, digest = blob(2500)
        mark = plain.mark()
        chunked.upload(repo, digest, len(data), opener(data))
        calls = [(c.method, c.status) for c in plain.calls(mark)]
        assert calls == [("GET", 200), ("POST", 202)] + [("PATCH", 202)] * 4 + [("PUT", 201)]
        assert plain.calls(mark)[0].path == "/v2/"  # the API check of a new client
        assert chunked.get_blob(repo, digest) == data
        assert chunked.stats["bytes_sent"] == 2500

        with pytest.raises(reg.RegistryError, match="DIGEST_INVALID"):
            wrong = sha256_digest(b"something else")
            chunked.upload(repo, wrong, 600, opener(os.urandom(600)))


def test_cross_repository_mount_and_its_fallback_to_an_upload(plain: Registry) -> None:
    source, target, other = unique(), unique(), unique()
    with reg.RegistryClient(plain.host) as client:
        data, digest = blob()
        client.upload(source, digest, len(data), opener(data))
        mark = plain.mark()
        assert client.push_blob(target, digest, len(data), opener(data),
                                mount_from=source) == "mounted"
        posts = [c for c in plain.calls(mark) if c.method == "POST"]
        assert len(posts) == 1 and posts[0].status == 201
        assert posts[0].query == {"mount": [digest], "from": [source]}
        assert client.push_blob(target, digest, len(data), opener(data)) == "exists"
        # not in the source: the registry opens an upload (202) and the same session is used
        fresh, fresh_digest = blob()
        mark = plain.mark()
        assert client.push_blob(other, fresh_digest, len(fresh), opener(fresh),
                                mount_from=source) == "uploaded"
        calls = [(c.method, c.status) for c in plain.calls(mark)]
        assert calls == [("HEAD", 404), ("POST", 202), ("PUT", 201)], calls
        assert client.get_blob(other, fresh_digest) == fresh


# --------------------------------------------------------------------------------------------
# A scripted registry, for what a real one never does


class Scripted:
    """A tiny HTTP server on 127.0.0.1 answering from a table of path -> (status, headers,
    body)."""

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes]]) -> None:
        self.routes, self.seen = routes, []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def answer(self) -> None:
                owner.seen.append((self.command, self.path, dict(self.headers)))
                status, headers, body = owner.routes.get(self.path.split("?")[0],
                                                         (404, {}, b""))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = answer

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., Scripted]]:
    made: list[Scripted] = []

    def make(routes: dict[str, tuple[int, dict[str, str], bytes]]) -> Scripted:
        made.append(Scripted(routes))
        return made[-1]

    yield make
    for server in made:
        server.close()


def test_a_401_without_a_realm_is_one_clear_message(scripted: Callable[..., Scripted]) -> None:
    server = scripted({"/v2/": (401, {"WWW-Authenticate": 'Bearer service="reg"'}, b"")})
    with reg.RegistryClient(server.host) as client:
        with pytest.raises(reg.RegistryError, match="names no realm") as caught:
            client.get_manifest("app", "v1")
    assert caught.value.status == 401 and server.host in str(caught.value)
    bare = scripted({"/v2/": (200, {}, b"{}"), "/v2/app/manifests/v1": (401, {}, b"")})
    with reg.RegistryClient(bare.host) as client:
        with pytest.raises(reg.RegistryError, match="without a usable WWW-Authenticate"):
            client.get_manifest("app", "v1")


def test_a_manifest_or_blob_that_does_not_match_its_digest_is_refused(
        scripted: Callable[..., Scripted]) -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_DOCKER,
                       "config": {}, "layers": []}).encode()
    other = "sha256:" + "0" * 64
    server = scripted({
        "/v2/": (200, {}, b"{}"),
        "/v2/app/manifests/v1": (200, {"Content-Type": MANIFEST_DOCKER,
                                       "Docker-Content-Digest": other}, body),
        f"/v2/app/manifests/{other}": (200, {"Content-Type": MANIFEST_DOCKER}, body),
        "/v2/app/manifests/typed": (200, {"Content-Type": MANIFEST_OCI}, body),
        f"/v2/app/blobs/{other}": (200, {}, b"not what the digest says"),
    })
    with reg.RegistryClient(server.host) as client:
        for ref in ("v1", other):
            with pytest.raises(reg.RegistryError, match="does not match its digest"):
                client.get_manifest("app", ref)
        with pytest.raises(reg.RegistryError, match="but was served as"):
            client.get_manifest("app", "typed")
        with pytest.raises(reg.RegistryError, match="arrived with digest") as caught:
            client.get_blob("app", other)
        assert caught.value.code == "DIGEST_INVALID"
    accept = [h.get("Accept", "") for m, p, h in server.seen if "/manifests/" in p]
    assert accept and all(a == ACCEPT for a in accept)
    assert all(t in ACCEPT for t in (MANIFEST_OCI, MANIFEST_DOCKER, INDEX_OCI, LIST_DOCKER))


def test_registry_error_codes_are_quoted(scripted: Callable[..., Scripted]) -> None:
    errors = {"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down",
                          "detail": {"limit": 100}}]}
    server = scripted({"/v2/": (200, {}, b"{}"),
                       "/v2/app/manifests/v1": (429, {"Content-Type": "application/json"},
                                                json.dumps(errors).encode()),
                       "/v2/app/manifests/v2": (403, {}, json.dumps({"errors": [
                           {"code": "DENIED", "message": "requested access to the resource "
                            "is denied"}]}).encode())})
    with reg.RegistryClient(server.host) as client:
        with pytest.raises(reg.RegistryError, match=r"HTTP 429 TOOMANYREQUESTS: slow down "
                                                     r"\(\{\"limit\":100\}\)\. .*rate-limits"):
            client.get_manifest("app", "v1")
        with pytest.raises(reg.RegistryError, match=r"HTTP 403 DENIED: .* Credentials in use: "
                                                     r"the credentials from anonymous"):
            client.get_manifest("app", "v2")


def test_an_unreachable_registry_names_the_host_and_what_to_check() -> None:
    port = free_port()  # nothing listens there
    with reg.RegistryClient(f"127.0.0.1:{port}") as client:
        with pytest.raises(reg.RegistryError) as caught:
            client.blob_exists("app", "sha256:" + "1" * 64)
    message = str(caught.value)
    assert f"Cannot reach the registry 127.0.0.1:{port}" in message
    assert "Check that it runs, the host name and port" in message


# --------------------------------------------------------------------------------------------
# Auth


def test_basic_auth_from_the_environment(basic: Registry, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    repo = unique()
    data, digest = blob()
    with reg.RegistryClient(basic.host) as anonymous:
        with pytest.raises(reg.RegistryError, match=f"The registry {basic.host} wants "
                                                     f"credentials .* OFNOTEBOOK_REGISTRY_USER"):
            anonymous.blob_exists(repo, digest)
    login(monkeypatch)
    with reg.RegistryClient(basic.host) as client:
        assert client.credentials.source == ENV_SOURCE
        client.upload(repo, digest, len(data), opener(data))
        assert client.get_blob(repo, digest) == data
    # the env credentials are for the target only: a source registry never gets them
    assert reg.credentials_for(basic.host, use_env=False).anonymous


def test_a_wrong_password_names_its_source_and_never_the_password(
        basic: Registry, token: Registry, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = f"wrong-{uuid.uuid4().hex}"
    login(monkeypatch, USER, wrong)
    seen = []
    for server in (basic, token):
        with reg.RegistryClient(server.host) as client:
            seen += [repr(client), repr(client.credentials), str(client.credentials)]
            with pytest.raises(reg.RegistryError) as caught:
                client.blob_exists(unique(), "sha256:" + "2" * 64)
        message = str(caught.value)
        seen.append(message)
        assert "OFNOTEBOOK_REGISTRY_USER/OFNOTEBOOK_REGISTRY_PASSWORD" in message, message
        assert f"user '{USER}'" in message and "wrong user name or password" in message
    seen.append(caplog.text)
    assert not any(wrong in text for text in seen)
    assert not any(base64.b64encode(f"{USER}:{wrong}".encode()).decode() in t for t in seen)


def test_docker_config_auths_and_a_mounted_dockerconfigjson(
        basic: Registry, registry_env: Path, tmp_path: Path) -> None:
    entry = {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
    (registry_env / "config.json").write_text(json.dumps({"auths": {
        f"https://{basic.host}": entry, "other.example": {"auth": "eDp5"}}}))
    creds = reg.credentials_for(basic.host)
    assert creds.username == USER and "config.json (auths 'https://" in creds.source
    assert PASSWORD not in repr(creds)
    data, digest = blob()
    repo = unique()
    with reg.RegistryClient(basic.host) as client:
        client.upload(repo, digest, len(data), opener(data))
    # a kubernetes.io/dockerconfigjson Secret mounted as a directory (DOCKER_CONFIG points there)
    (registry_env / "config.json").unlink()
    (registry_env / ".dockerconfigjson").write_text(json.dumps({"auths": {basic.host: entry}}))
    with reg.RegistryClient(basic.host) as client:
        assert ".dockerconfigjson" in client.credentials.source
        assert client.get_blob(repo, digest) == data


def _helper(bin_dir: Path, store: dict[str, dict[str, str]]) -> Path:
    """A real ``docker-credential-test`` on PATH: the protocol of docker-credential-helpers."""
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "store.json").write_text(json.dumps(store))
    script = bin_dir / "docker-credential-test"
    script.write_text(f"""#!{sys.executable}
import json, sys
from pathlib import Path
here = Path(__file__).parent
server = sys.stdin.read().strip()
with open(here / "calls.log", "a") as log:
    log.write(" ".join(sys.argv[1:]) + " " + server + "\\n")
if sys.argv[1:] != ["get"]:
    sys.exit(2)
store = json.loads((here / "store.json").read_text())
if server not in store:
    print("credentials not found in native keychain")
    sys.exit(1)
print(json.dumps(dict(store[server], ServerURL=server)))
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir / "calls.log"


def test_credential_helpers_from_credhelpers_and_credsstore(
        basic: Registry, token: Registry, registry_env: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _helper(tmp_path / "bin", {
        basic.host: {"Username": USER, "Secret": PASSWORD},
        token.host: {"Username": "<token>", "Secret": IDENTITY_TOKEN}})
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    config = registry_env / "config.json"
    data, digest = blob()

    # credHelpers: per host, and it wins over the auths entry (which holds a wrong password)
    config.write_text(json.dumps({
        "auths": {basic.host: {"auth": base64.b64encode(b"ada:nope").decode()}},
        "credHelpers": {basic.host: "test"}}))
    with reg.RegistryClient(basic.host) as client:
        assert client.credentials.source.startswith("docker-credential-test, credHelpers")
        client.upload(unique(), digest, len(data), opener(data))
    assert calls.read_text().splitlines() == [f"get {basic.host}"]

    # credsStore: one helper for every host; <token> means an identity token (OAuth2 refresh)
    config.write_text(json.dumps({"credsStore": "test"}))
    issuer = token.issuer  # type: ignore[attr-defined]
    before = len(issuer.requests)
    with reg.RegistryClient(token.host) as client:
        assert client.credentials.identity_token and client.credentials.username == "<token>"
        client.upload(unique(), digest, len(data), opener(data))
    posts = [r for r in issuer.requests[before:] if r["method"] == "POST"]
    assert posts and all(r["user"] == USER for r in posts)
    assert f"get {token.host}" in calls.read_text().splitlines()
    # a host the store does not know: anonymous, no error
    assert reg.credentials_for("127.0.0.1:1").anonymous

    # a helper that is not installed is named
    config.write_text(json.dumps({"credHelpers": {basic.host: "missing-helper"}}))
    with pytest.raises(reg.RegistryError, match="docker-credential-missing-helper .* not on "
                                                "PATH"):
        reg.credentials_for(basic.host)


def test_token_flow_scopes_cache_and_a_rescope_on_401(token: Registry,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    issuer = token.issuer  # type: ignore[attr-defined]
    login(monkeypatch)
    source, target = unique("src"), unique("dst")
    data, digest = blob()
    before = len(issuer.requests)
    with reg.RegistryClient(token.host) as client:
        client.upload(source, digest, len(data), opener(data))
        assert client.blob_exists(source, digest)
        assert client.push_blob(target, digest, len(data), opener(data),
                                mount_from=source) == "mounted"
        again, again_digest = blob()
        client.upload(target, again_digest, len(again), opener(again))
        count = len(issuer.requests)
        more, more_digest = blob()
        client.upload(target, more_digest, len(more), opener(more))
        assert len(issuer.requests) == count  # the token for these scopes is cached
        scopes = [r["scopes"] for r in issuer.requests[before:]]
        assert scopes == [[f"repository:{source}:pull,push"], [f"repository:{source}:pull"],
                          [f"repository:{target}:pull"],
                          [f"repository:{target}:pull,push", f"repository:{source}:pull"],
                          [f"repository:{target}:pull,push"]], scopes
        assert all(r["user"] == USER for r in issuer.requests[before:])
        # a call made with no scope: the 401 names the scope, the client asks for it and retries
        count = len(issuer.requests)
        response = client.request("GET", f"/v2/{target}/tags/list", scopes=(), what="list",
                                  ok=(200, 404))
        assert response.status_code in (200, 404)  # authorized: NAME_UNKNOWN, no tags yet
        assert [r["scopes"] for r in issuer.requests[count:]] == [
            [], [f"repository:{target}:pull"]]


def test_a_mount_refused_for_the_source_falls_back_to_an_upload(
        token: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """A remembered mount source the user may no longer read (deleted, access revoked)
    must not fail every later build: the blob is uploaded with push rights only."""
    issuer = token.issuer  # type: ignore[attr-defined]
    login(monkeypatch)
    source, target = unique("gone"), unique("dst")
    data, digest = blob()
    with reg.RegistryClient(token.host) as client:
        client.upload(source, digest, len(data), opener(data))
        issuer.denied.add(source)
        try:
            assert client.push_blob(target, digest, len(data), opener(data),
                                    mount_from=source) == "uploaded"
            assert client.get_blob(target, digest) == data
        finally:
            issuer.denied.discard(source)


def test_a_user_without_push_gets_one_message(token: Registry,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    login(monkeypatch, READER, READER_PASSWORD)
    data, digest = blob()
    with reg.RegistryClient(token.host) as client:
        assert not client.blob_exists(unique(), digest)  # pull is granted
        with pytest.raises(reg.RegistryError, match=r"refused the credentials from "
                                                     r"OFNOTEBOOK_REGISTRY_USER/"
                                                     r"OFNOTEBOOK_REGISTRY_PASSWORD \(user "
                                                     r"'reader'\) .* no pull,push access"):
            client.upload(unique(), digest, len(data), opener(data))
    monkeypatch.delenv("OFNOTEBOOK_REGISTRY_USER")
    monkeypatch.delenv("OFNOTEBOOK_REGISTRY_PASSWORD")
    with reg.RegistryClient(token.host) as anonymous:
        with pytest.raises(reg.RegistryError, match="wants credentials"):
            anonymous.blob_exists(unique(), digest)
    monkeypatch.setenv("OFNOTEBOOK_REGISTRY_USER", USER)
    with pytest.raises(reg.RegistryError, match="Set both"):
        reg.credentials_for(token.host)


# --------------------------------------------------------------------------------------------
# TLS and plain HTTP


def test_tls_is_verified_with_the_system_bundle_plus_the_registry_ca(
        tls: Registry, tls_ca: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with reg.RegistryClient(tls.host) as client:
        with pytest.raises(reg.RegistryError) as caught:
            client.blob_exists("app", "sha256:" + "3" * 64)
    message = str(caught.value)
    assert f"TLS with the registry {tls.host} failed" in message
    assert "OFNOTEBOOK_REGISTRY_CA" in message and "OFNOTEBOOK_INSECURE_REGISTRIES" in message
    monkeypatch.setenv("OFNOTEBOOK_REGISTRY_CA", str(tls_ca.ca_pem))
    data, digest = blob()
    with reg.RegistryClient(tls.host) as client:
        client.upload(unique(), digest, len(data), opener(data))
        assert client.base == f"https://{tls.host}"
        bundle = Path(str(client.verify)).read_text()
        assert tls_ca.ca_pem.read_text().strip() in bundle
        assert bundle.count("BEGIN CERTIFICATE") > 1  # the system's CAs are kept
    monkeypatch.setenv("OFNOTEBOOK_REGISTRY_CA", str(tls.root / "missing.pem"))
    with pytest.raises(reg.RegistryError, match="OFNOTEBOOK_REGISTRY_CA=.* cannot be read"):
        reg.RegistryClient(tls.host)


def test_plain_http_only_for_loopback_or_listed_registries(
        lan: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    with reg.RegistryClient(lan.host) as client:
        assert client.session.trust_env  # not loopback: the proxy settings apply
        with pytest.raises(reg.RegistryError, match="TLS with the registry .* failed"):
            client.blob_exists("app", "sha256:" + "4" * 64)
        assert not client.base
    monkeypatch.setenv("OFNOTEBOOK_INSECURE_REGISTRIES", f"other:1,{lan.host}")
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(key, raising=False)
    data, digest = blob()
    with reg.RegistryClient(lan.host) as client:
        client.upload(unique(), digest, len(data), opener(data))
        assert client.base == f"http://{lan.host}"


def test_loopback_registries_bypass_the_proxy(plain: Registry,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(key, dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    data, digest = blob()
    with reg.RegistryClient(plain.host) as client:
        client.upload(unique(), digest, len(data), opener(data))
