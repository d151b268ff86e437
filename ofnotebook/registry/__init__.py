"""A small client of the OCI Distribution API (registry v2), on ``requests``: only what an
engine-less build needs (:mod:`ofnotebook.layers`).

Layered, each module importing only those above it in this list:

* :mod:`.reference`: media types, image references, digests, platforms, which hosts may be
  spoken to over plain HTTP, and :class:`RegistryError`;
* :mod:`.credentials`: docker's config, credential helpers, the OFNOTEBOOK_REGISTRY_*
  variables, the CA bundle to verify TLS with;
* :mod:`.transport`: one registry's API: scheme, Basic/Bearer auth, error messages;
* :mod:`.client`: :class:`RegistryClient`: manifests and blobs.

The names below are what users of the package need; the rest is imported from its module.
"""

from .client import RegistryClient
from .credentials import Credentials, credentials_for
from .reference import Reference, RegistryError

__all__ = ["Credentials", "Reference", "RegistryClient", "RegistryError", "credentials_for"]
