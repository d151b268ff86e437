"""``--secret-env NAME`` on the container target, on each real engine (issue 12 item 9): the
function reads the value from its environment; the image (its layers and config) and the
package on disk never hold it."""

from __future__ import annotations

import io
import tarfile
from typing import Any, Iterator

import pytest

import ofnotebook
from ofnotebook.backends.container import ContainerBackend
from tests.helpers import make_function, uid

pytestmark = pytest.mark.container


@pytest.fixture
def backend(client: Any) -> Iterator[ContainerBackend]:
    made = ContainerBackend(start_timeout=60)
    try:
        yield made
    finally:
        made.close()


def test_a_secret_reaches_the_container_but_not_its_image(backend: ContainerBackend,
                                                         client: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    value = f"s3cr3t-{uid()}"
    monkeypatch.setenv("OFN_TEST_API_TOKEN", value)
    fn = make_function("import os\n"
                       "def token(request):\n"
                       "    return os.environ.get('OFN_TEST_API_TOKEN', 'unset')\n", name="token")
    handle = ofnotebook.deploy(fn, f"secret-{uid()}", target=backend,
                               secret_env=["OFN_TEST_API_TOKEN"])
    try:
        assert handle.invoke().text == value
        image = client.images.get(handle.deployment.image.tag)
        assert value not in str(image.attrs["Config"])  # no ENV, label or command holds it
        layers = io.BytesIO(b"".join(image.save()))
        with tarfile.open(fileobj=layers) as saved:  # every layer's files, the config too
            for member in saved.getmembers():
                data = saved.extractfile(member)
                if data is not None:
                    assert value.encode() not in data.read(), member.name
        for path in handle.package.path.rglob("*"):
            if path.is_file():
                assert value.encode() not in path.read_bytes(), path
    finally:
        handle.stop()
