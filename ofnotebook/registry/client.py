"""The registry calls an engine-less build makes, on :class:`~.transport.Transport`.

Manifests: GET with the full Accept list, the digest checked, an index resolved to one
platform; PUT with the body's own media type. Blobs: HEAD, GET verified as it streams,
cross-repository mount, monolithic POST+PUT and chunked PATCH upload.
"""

from __future__ import annotations

import hashlib
import io
import json
import urllib.parse
from typing import IO, Any, Callable

import requests

from .credentials import Credentials
from .reference import (ACCEPT, FAMILY, INDEX_OCI, INDEX_TYPES, MANIFEST_OCI, Manifest,
                        RegistryError, select_platform, sha256_digest)
from .transport import Transport


class _Body:
    """A re-openable request body with a known length (requests sends Content-Length)."""

    def __init__(self, stream: IO[bytes], length: int, count: Callable[[int], None]) -> None:
        self.stream, self.length, self.count = stream, length, count

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        chunk = self.stream.read(size if size is not None and size >= 0 else self.length)
        self.count(len(chunk))
        return chunk


class BlobReader(io.RawIOBase):
    """A blob's GET response as a file; the sha256 is checked when the end is reached."""

    def __init__(self, response: requests.Response, digest: str, where: str) -> None:
        self.response, self.digest, self.where = response, digest, where
        self.hash = hashlib.sha256()
        self.done = False

    def readable(self) -> bool:
        """True, so the reader passes wherever a readable binary file is expected."""
        return True

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes as sent (no transfer decoding, so the digest is of the blob
        itself); at the end the digest is checked, so corrupted bytes never pass as read."""
        if self.done:
            return b""
        try:
            chunk = self.response.raw.read(size if size and size > 0 else None,
                                           decode_content=False) or b""
        except Exception as exc:
            raise RegistryError(f"Reading the blob {self.digest[:19]} from {self.where} broke "
                                f"off: {type(exc).__name__}.") from None
        self.hash.update(chunk)
        if not chunk or (size is None or size < 0):
            self.done = True
            got = "sha256:" + self.hash.hexdigest()
            if got != self.digest:
                raise RegistryError(f"The blob {self.digest} from {self.where} arrived with "
                                    f"digest {got}: corrupted in transit or by the registry.",
                                    code="DIGEST_INVALID")
        return chunk

    def readinto(self, buffer: Any) -> int:
        """``read`` into ``buffer``, for readers that wrap this one (io.BufferedReader)."""
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        """Release the connection to the pool even when the blob was not read to the end."""
        self.response.close()
        super().close()


def _with_digest(location: str, digest: str) -> str:
    return location + ("&" if urllib.parse.urlsplit(location).query else "?") + \
        urllib.parse.urlencode({"digest": digest})


class RegistryClient(Transport):
    """One registry (``host[:port]``; ``docker.io`` means Docker Hub).

    ``credentials`` default to :func:`~.credentials.credentials_for` the host. Uploads above
    ``monolithic_max`` bytes go in ``chunk_size`` PATCH chunks. ``stats`` counts the requests
    and the body bytes sent (``bytes_sent``), for figures and tests.
    """

    def __init__(self, registry: str, *, credentials: Credentials | None = None,
                 use_env_credentials: bool = True, timeout: float = 300.0,
                 chunk_size: int = 16 << 20, monolithic_max: int = 32 << 20) -> None:
        super().__init__(registry, credentials=credentials,
                         use_env_credentials=use_env_credentials, timeout=timeout)
        self.chunk_size, self.monolithic_max = chunk_size, monolithic_max

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- manifests ---------------------------------------------------------------------------

    @staticmethod
    def _pull(repo: str) -> tuple[str]:
        return (f"repository:{repo}:pull",)

    @staticmethod
    def _push(repo: str) -> tuple[str]:
        return (f"repository:{repo}:pull,push",)

    def get_manifest(self, repository: str, ref: str, *, platform: str | None = "linux/amd64"
                     ) -> Manifest:
        """The manifest of ``repository:ref`` (tag or digest), its digest checked; an index or
        manifest list is resolved to ``platform`` (``None``: return the index itself)."""
        what = f"give the manifest {repository}:{ref}" if not ref.startswith("sha256:") else \
            f"give the manifest {repository}@{ref}"
        response = self.request("GET", f"/v2/{repository}/manifests/{ref}",
                                scopes=self._pull(repository), what=what,
                                headers={"Accept": ACCEPT})
        body = response.content
        digest = sha256_digest(body)
        said = response.headers.get("Docker-Content-Digest", "")
        if (ref.startswith("sha256:") and digest != ref) or (said and said != digest):
            raise RegistryError(f"The manifest {repository}@{ref} from {self.host} does not "
                                f"match its digest ({digest}).", code="DIGEST_INVALID")
        try:
            data = json.loads(body)
        except ValueError:
            raise RegistryError(f"The manifest {repository}:{ref} from {self.host} is not "
                                f"JSON.", code="MANIFEST_INVALID") from None
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        media_type = str(data.get("mediaType") or content_type)
        if data.get("mediaType") and content_type and content_type != data["mediaType"] \
                and content_type in FAMILY.keys() | set(INDEX_TYPES):
            raise RegistryError(f"The manifest {repository}:{ref} from {self.host} says "
                                f"{data['mediaType']} but was served as {content_type}.",
                                code="MANIFEST_INVALID")
        if media_type not in FAMILY and media_type not in INDEX_TYPES:
            if "manifests" in data:
                media_type = INDEX_OCI
            elif data.get("schemaVersion") == 2 and "config" in data:
                media_type = MANIFEST_OCI
            else:
                raise RegistryError(f"The manifest {repository}:{ref} from {self.host} has "
                                    f"type {media_type or 'unknown'}; only OCI and Docker "
                                    f"schema 2 images are supported.", code="MANIFEST_INVALID")
        manifest = Manifest(media_type, body, digest)
        if manifest.is_index and platform:
            return self.get_manifest(repository, select_platform(manifest, platform,
                                                                 f"{self.host}/{repository}:{ref}"),
                                     platform=None)
        return manifest

    def manifest_digest(self, repository: str, ref: str) -> str | None:
        """HEAD: the digest the registry serves for ``ref``, or None when it has none."""
        response = self.request("HEAD", f"/v2/{repository}/manifests/{ref}",
                                scopes=self._pull(repository), ok=(200, 404),
                                what=f"check the manifest {repository}:{ref}",
                                headers={"Accept": ACCEPT})
        if response.status_code == 404:
            return None
        return response.headers.get("Docker-Content-Digest") or None

    def put_manifest(self, repository: str, ref: str, body: bytes,
                     media_type: str | None = None) -> str:
        """PUT a manifest (Content-Type = its ``mediaType``); return the registry's digest."""
        media_type = media_type or str(json.loads(body).get("mediaType") or "")
        if not media_type:
            raise RegistryError("A manifest without mediaType cannot be pushed.")
        response = self.request("PUT", f"/v2/{repository}/manifests/{ref}",
                                scopes=self._push(repository), ok=(200, 201),
                                what=f"store the manifest {repository}:{ref}", body=body,
                                headers={"Content-Type": media_type})
        digest = sha256_digest(body)
        said = response.headers.get("Docker-Content-Digest", "")
        if said and said != digest:
            raise RegistryError(f"The registry {self.host} stored the manifest "
                                f"{repository}:{ref} under {said}, not its own digest "
                                f"{digest}: it rewrote the manifest.", code="DIGEST_INVALID")
        return digest

    # -- blobs -------------------------------------------------------------------------------

    def blob_exists(self, repository: str, digest: str) -> bool:
        """Whether ``repository`` has the blob (a HEAD): a layer the registry has is never
        uploaded again."""
        response = self.request("HEAD", f"/v2/{repository}/blobs/{digest}",
                                scopes=self._pull(repository), ok=(200, 404),
                                what=f"check the blob {digest[:19]} in {repository}")
        return response.status_code == 200

    def open_blob(self, repository: str, digest: str) -> BlobReader:
        """The blob as a stream (redirects followed); its digest is checked at the end."""
        response = self.request("GET", f"/v2/{repository}/blobs/{digest}", stream=True,
                                scopes=self._pull(repository),
                                what=f"give the blob {digest[:19]} of {repository}")
        return BlobReader(response, digest, f"{self.host}/{repository}")

    def get_blob(self, repository: str, digest: str) -> bytes:
        """The whole blob, digest checked: for small ones (an image's config)."""
        with self.open_blob(repository, digest) as reader:
            return reader.read()

    def mount(self, repository: str, digest: str, source: str) -> str | None:
        """Cross-repository mount of ``digest`` from ``source`` into ``repository``: None when
        mounted (201), else the upload session's Location the registry opened instead."""
        query = urllib.parse.urlencode({"mount": digest, "from": source})
        response = self.request("POST", f"/v2/{repository}/blobs/uploads/?{query}",
                                scopes=self._push(repository) + self._pull(source),
                                ok=(201, 202), what=f"mount {digest[:19]} into {repository}",
                                headers={"Content-Length": "0"})
        if response.status_code == 201:
            return None
        return self._location(response)

    def _location(self, response: requests.Response) -> str:
        location = response.headers.get("Location", "")
        if not location:
            raise RegistryError(f"The registry {self.host} started an upload but sent no "
                                f"Location.", status=response.status_code)
        return urllib.parse.urljoin(response.url, location)

    def upload(self, repository: str, digest: str, size: int, opener: Callable[[], IO[bytes]],
               *, location: str | None = None,
               progress: Callable[[int], None] = lambda sent: None) -> None:
        """Upload a blob: POST+PUT, or PATCH chunks above ``monolithic_max``. ``opener``
        gives a fresh stream of the blob each time it is called (a retry re-reads it)."""
        scopes = self._push(repository)
        what = f"upload the blob {digest[:19]} to {repository}"
        if location is None:
            location = self._location(self.request(
                "POST", f"/v2/{repository}/blobs/uploads/", scopes=scopes, ok=(202,), what=what,
                headers={"Content-Length": "0"}))
        sent = [0]

        def count(n: int) -> None:  # a streamed body: counted here, bytes bodies in _raw
            sent[0] += n
            self.stats["bytes_sent"] += n
            progress(sent[0])

        octet = {"Content-Type": "application/octet-stream"}
        if size <= self.monolithic_max:
            opened: list[IO[bytes]] = []

            def whole() -> _Body:  # called again for a retry: a fresh stream
                sent[0] = 0
                while opened:
                    opened.pop().close()
                opened.append(opener())
                return _Body(opened[-1], size, count)

            try:
                response = self.request("PUT", _with_digest(location, digest), scopes=scopes,
                                        ok=(201,), what=what, body=whole,
                                        headers={**octet, "Content-Length": str(size)})
            finally:
                while opened:
                    opened.pop().close()
        else:
            stream = opener()
            try:
                start = 0
                while start < size:
                    chunk = stream.read(min(self.chunk_size, size - start))
                    if not chunk:
                        raise RegistryError(f"The blob {digest[:19]} ended at {start} of "
                                            f"{size} bytes.")
                    end = start + len(chunk) - 1
                    response = self.request(
                        "PATCH", location, scopes=scopes, ok=(202,), what=what, body=chunk,
                        headers={**octet, "Content-Range": f"{start}-{end}",
                                 "Content-Length": str(len(chunk))})
                    sent[0] += len(chunk)
                    progress(sent[0])
                    location = self._location(response)
                    start = end + 1
                if stream.read(1):
                    raise RegistryError(f"The blob {digest[:19]} is longer than {size} bytes.")
            finally:
                stream.close()
            response = self.request("PUT", _with_digest(location, digest), scopes=scopes,
                                    ok=(201,), what=what, headers={"Content-Length": "0"})
        said = response.headers.get("Docker-Content-Digest", "")
        if said and said != digest:
            raise RegistryError(f"The registry {self.host} stored the blob as {said}, not "
                                f"{digest}.", code="DIGEST_INVALID")

    def push_blob(self, repository: str, digest: str, size: int,
                  opener: Callable[[], IO[bytes]], *, mount_from: str | None = None,
                  progress: Callable[[int], None] = lambda sent: None,
                  on_upload: Callable[[], None] = lambda: None) -> str:
        """Make ``digest`` present in ``repository``: ``"exists"``, ``"mounted"`` (from
        ``mount_from`` in this registry) or ``"uploaded"``. ``on_upload`` is called when
        neither is so, just before the upload starts (to say so, and time it)."""
        if self.blob_exists(repository, digest):
            return "exists"
        location = None
        if mount_from and mount_from != repository:
            try:
                location = self.mount(repository, digest, mount_from)
            except RegistryError as exc:
                if exc.status is None:
                    raise  # the registry did not answer: an upload would not either
                # refused (no pull right on a source repository that is gone or not ours
                # any more, a registry without mounts): a plain upload needs push only
                location = None
            else:
                if location is None:
                    return "mounted"
        on_upload()
        self.upload(repository, digest, size, opener, location=location, progress=progress)
        return "uploaded"

