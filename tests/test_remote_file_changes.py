"""A filled placeholder follows the changes another open of the agent makes.

Covers: ``reference_agent.files.RemoteFileTable.changed`` and ``RemoteFile.follow``
over the real local driver, with a memfd of this process as the placeholder (what
``--cache cto`` hands the kernel for a small file opened read-only).

Scenario: one open reads a small file (filled), another writes and truncates it any
number of times, as a program writing beside a reader does. After each change the
placeholder must hold the file's bytes, and a change the agent describes (bytes at an
offset, a new length) must cost no read from the server: refetching the whole file at
every write makes a writer beside an open reader quadratic.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.local import LocalDriver
from reference_agent.files import Change, RemoteFile, RemoteFileTable, Truncated, Wrote
from reference_agent.read_cache import ReadBuffer


@dataclass
class Pair:
    """A reader whose placeholder is filled and a writer, both opens of ``name``."""

    driver: LocalDriver
    table: RemoteFileTable
    reader: RemoteFile
    writer: RemoteFile
    placeholder: int
    file: Path

    def reads_from_server(self) -> int:
        counters = self.driver.counters.snapshot()
        return counters["pread"].calls if "pread" in counters else 0

    def placeholder_bytes(self) -> bytes:
        size = os.fstat(self.placeholder).st_size
        return os.pread(self.placeholder, size, 0) if size else b""


def _open(driver: LocalDriver, name: str, flags: int, size: int | None) -> RemoteFile:
    return RemoteFile(
        driver, driver.open(name, flags), f"/mnt/{name}", name, flags, False, 0,
        reader=ReadBuffer(size),
    )  # fmt: skip


@pytest.fixture
def pair_factory(tmp_path: Path) -> Iterator[object]:
    made: list[Pair] = []

    def make(content: bytes) -> Pair:
        root = tmp_path / f"tree{len(made)}"
        root.mkdir()
        (root / "f").write_bytes(content)
        driver = LocalDriver(root)
        table = RemoteFileTable()
        reader = _open(driver, "f", os.O_RDONLY, len(content))
        writer = _open(driver, "f", os.O_RDWR, len(content))
        placeholder = os.memfd_create("placeholder", os.MFD_CLOEXEC)
        table.add(os.getpid(), placeholder, reader)
        assert table.fill(os.getpid(), placeholder, reader)
        pair = Pair(driver, table, reader, writer, placeholder, root / "f")
        made.append(pair)
        return pair

    yield make
    for pair in made:
        os.close(pair.placeholder)
        if pair.reader.fill_fd >= 0:
            os.close(pair.reader.fill_fd)
        pair.driver.close(pair.reader.handle)
        pair.driver.close(pair.writer.handle)


def apply(pair: Pair, change: Change) -> None:
    """Make ``change`` through the writer, and tell the table as the agent does."""
    if isinstance(change, Wrote):
        assert pair.writer.pwrite(change.data, change.offset) == len(change.data)
    elif isinstance(change, Truncated):
        pair.writer.ftruncate(change.length)
    pair.table.changed(pair.driver, "f", by=pair.writer, change=change)


def follows_without_reading(pair: Pair, changes: list[Change]) -> None:
    reads_before = pair.reads_from_server()
    for change in changes:
        apply(pair, change)
        assert pair.placeholder_bytes() == pair.file.read_bytes(), change
    assert pair.reads_from_server() == reads_before, "a described change read the file again"


changes = st.lists(
    st.one_of(
        st.builds(Wrote, st.integers(0, 3000), st.binary(min_size=1, max_size=600)),
        st.builds(Truncated, st.integers(0, 3000)),
    ),
    max_size=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(content=st.binary(max_size=2000), changes=changes)
def test_a_filled_placeholder_takes_each_change_without_a_read(
    pair_factory: object, content: bytes, changes: list[Change]
) -> None:
    follows_without_reading(pair_factory(content), changes)  # type: ignore[operator]


def test_seeded_a_placeholder_that_reads_the_file_again_at_every_change_is_caught(
    pair_factory: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RemoteFile, "follow", lambda self, change: self.copy_whole(self.fill_fd))
    pair: Pair = pair_factory(b"abcdef")  # type: ignore[operator]
    with pytest.raises(AssertionError, match="read the file again"):
        follows_without_reading(pair, [Wrote(1, b"zz")])


def test_seeded_a_patch_at_the_wrong_offset_is_caught(
    pair_factory: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    def off_by_one(self: RemoteFile, change: Change) -> None:
        assert isinstance(change, Wrote)
        os.pwrite(self.fill_fd, change.data, change.offset + 1)

    monkeypatch.setattr(RemoteFile, "follow", off_by_one)
    pair: Pair = pair_factory(b"abcdef")  # type: ignore[operator]
    with pytest.raises(AssertionError):
        follows_without_reading(pair, [Wrote(1, b"zz")])
