"""What a shared mapping's write-back sends, measured on its own, on a local driver.

Covers: :class:`reference_agent.mapped_copy.MappedCopy` (the spans that differ from the
base, nothing else, never a length change) and ``RemoteFile.send_mapped``, whose loop must
end when the server takes no bytes (a close would otherwise wait for ever).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from drivers import Handle
from drivers.local import LocalDriver
from reference_agent.files import RemoteFile
from reference_agent.mapped_copy import PAGE, MappedCopy

pytestmark = pytest.mark.unit


class TakesNothing(LocalDriver):
    """A server that answers every write with 0 bytes written."""

    def pwrite(self, handle: Handle, data: bytes, offset: int) -> int:
        return 0


def _mapped(tmp_path: Path, driver: LocalDriver, contents: bytes) -> tuple[RemoteFile, Path]:
    """A remote file (``f`` on ``driver``) whose placeholder (a local file) holds ``contents``
    and is mapped shared."""
    (tmp_path / "f").write_bytes(contents)
    placeholder = tmp_path / "placeholder"
    placeholder.write_bytes(contents)
    handle = driver.open("/f", os.O_RDWR)
    remote = RemoteFile(driver, handle, "/f", "/f", os.O_RDWR, False, 0)
    remote.mapping = MappedCopy(os.open(placeholder, os.O_RDWR), filled=False)
    return remote, placeholder


def test_only_the_stored_spans_go_back(tmp_path: Path) -> None:
    driver = LocalDriver(tmp_path)
    remote, placeholder = _mapped(tmp_path, driver, bytes(3 * PAGE))
    with open(placeholder, "r+b") as stores:  # what the mapping stored: two spans
        stores.seek(10)
        stores.write(b"ab")
        stores.seek(2 * PAGE + 5)
        stores.write(b"c")
    assert remote.mapping is not None
    assert remote.mapping.changes() == [(10, b"ab"), (2 * PAGE + 5, b"c")]
    (tmp_path / "f").write_bytes(bytes(3 * PAGE) + b"appended meanwhile")
    remote.send_mapped()
    held = (tmp_path / "f").read_bytes()
    assert held[10:12] == b"ab" and held[2 * PAGE + 5] == ord("c")
    assert held.endswith(b"appended meanwhile")  # never cut to the copy's length
    assert remote.mapping.changes() == []  # sent: the base has them now
    remote.mapping.close()
    driver.close(remote.handle)


def test_a_server_that_takes_nothing_ends_the_write_back(tmp_path: Path) -> None:
    driver = TakesNothing(tmp_path)
    remote, placeholder = _mapped(tmp_path, driver, bytes(100))
    with open(placeholder, "r+b") as stores:
        stores.write(b"stored")
    with pytest.raises(OSError) as failure:
        remote.send_mapped()
    assert failure.value.errno == errno.EIO
    assert remote.mapping is not None
    remote.mapping.close()
    driver.close(remote.handle)
