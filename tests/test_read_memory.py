"""Memory that remote reads land in: page-aligned, handed from a closed open to the next, and
never a way for one file's bytes to reach another's reader.

Covers: ``reference_agent.read_memory`` (``aligned``, ``Scratch``, ``SpareBlocks``), the read
buffer's use of it (``ReadBuffer.set_aside``), and the agent giving a block back at close
(``--cache cto`` on a real Chirp server, a real program with two descriptors of one open).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reference_agent.read_cache import FIRST_BLOCK, MAX_BLOCK, ReadBuffer
from reference_agent.read_memory import Memory, Scratch, SpareBlocks, aligned
from servers import RunningServer
from tests.helpers import ROOT, served
from tests.test_read_cache import FileAt, pattern

PAGE = os.sysconf("SC_PAGE_SIZE")


def address(memory: Memory | memoryview) -> int:
    """Where ``memory``'s first byte is."""
    view = memoryview(memory)
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def test_aligned_memory_starts_on_a_page_and_is_zero() -> None:
    for size in (1, 4096, 100_000, MAX_BLOCK):
        memory = aligned(size)
        assert len(memory) == size
        assert address(memory) % PAGE == 0
        assert memory[:size] == bytes(size)
    assert len(aligned(0)) == 0
    # The check itself: a bytearray, what reads landed in before, is not page-aligned.
    assert address(bytearray(100_000)) % PAGE != 0


def test_Scratch_and_read_buffer_blocks_are_page_aligned() -> None:
    scratch = Scratch()
    for size in (10, 8192, 3 * 1024 * 1024, Scratch.KEEP + 1):
        assert address(scratch.view(size)) % PAGE == 0
    file = FileAt(pattern(3 * FIRST_BLOCK))
    for spares in (None, SpareBlocks(keep=4, largest=MAX_BLOCK)):
        buffer = ReadBuffer(size=len(file.data), spares=spares)
        assert buffer.read(file.fetch, 10, 5) == file.data[5:15]
        assert address(buffer.memory) % PAGE == 0


def test_SpareBlocks_keep_a_bounded_number_of_blocks_no_larger_than_the_bound() -> None:
    spares = SpareBlocks(keep=2, largest=1000)
    first, second, third = aligned(1000), aligned(500), aligned(1000)
    spares.give(aligned(1001))  # too large: let go
    spares.give(bytearray())  # nothing
    assert len(spares) == 0
    for block in (first, second, third):
        spares.give(block)
    assert len(spares) == 2
    assert spares.take(600) is first  # the first large enough
    assert spares.take(600) is not second  # too small: new memory
    assert spares.take(10) is second


def test_a_block_set_aside_serves_the_next_open_and_its_reader_fetches_again() -> None:
    """Two opens of two files share one spare block in turn: each reads its own file's bytes,
    and the first, read again after its block went to the second, fetches anew."""
    spares = SpareBlocks(keep=4, largest=MAX_BLOCK)
    one, two = FileAt(pattern(2 * FIRST_BLOCK)), FileAt(bytes(reversed(pattern(2 * FIRST_BLOCK))))
    first = ReadBuffer(size=len(one.data), spares=spares)
    assert first.read(one.fetch, 100, 0) == one.data[:100]
    block = first.memory
    first.set_aside()
    second = ReadBuffer(size=len(two.data), spares=spares)
    assert second.read(two.fetch, 100, 0) == two.data[:100]
    assert second.memory is block  # no new memory: the pages are faulted in already
    fetches = first.fetches
    assert first.read(one.fetch, 100, 50) == one.data[50:150]
    assert first.fetches == fetches + 1


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with served("chirp/aviary") as running:
        # Larger than FILL_MAX: read through the agent's buffer, never handed to the kernel.
        (running.data_dir / "a").write_bytes(pattern(3 * MAX_BLOCK + 12345))
        (running.data_dir / "b").write_bytes(bytes(reversed(pattern(3 * MAX_BLOCK))))
        yield running


#: Reads the start of a through a descriptor (its first block, 64 KiB, holds more), closes
#: it, reads b in 64 KiB pieces (b's buffer takes a's block), then the rest of a through a
#: dup made before the close (its first bytes were in a's block), in 64 KiB pieces too (a
#: read of 1 MiB or more goes past the buffer, to the server): prints both digests.
_TWO_DESCRIPTORS = """
import hashlib, os, sys
a, b = sys.argv[1:]
fd = os.open(a, os.O_RDONLY)
dup = os.dup(fd)
head = os.read(fd, 50_000)
os.close(fd)
other_fd = os.open(b, os.O_RDONLY)
other = b"".join(iter(lambda: os.read(other_fd, 65536), b""))
rest = b"".join(iter(lambda: os.read(dup, 65536), b""))
print(hashlib.sha256(head + rest).hexdigest(), hashlib.sha256(other).hexdigest())
"""

#: ``aviary run`` with a seeded regression: "stale" gives a closed open's block away but keeps
#: answering reads from it.
_CLI = """
import sys
from reference_agent.read_cache import ReadBuffer
if sys.argv.pop(1) == "stale":
    def set_aside(self):
        if self.spares is not None:
            self.spares.give(self.memory)
    ReadBuffer.set_aside = set_aside
from harness.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _digests(server: RunningServer, tmp_path: Path, seeded: str) -> list[str]:
    program = tmp_path / "two.py"
    program.write_text(_TWO_DESCRIPTORS)
    mount_point = tmp_path / "mnt"
    done = subprocess.run(
        [sys.executable, "-c", _CLI, seeded, "run", "--cache", "cto",
         "-M", f"{mount_point}=chirp://127.0.0.1:{server.port}/", "--",
         sys.executable, str(program), str(mount_point / "a"), str(mount_point / "b")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_a_descriptor_left_open_reads_its_file_after_the_block_went_to_another_open(
    server: RunningServer, tmp_path: Path
) -> None:
    """The close of one of two descriptors of an open gives its block to the next open; the
    other descriptor still reads its own file (seeded: the block given away but still
    answered from, and the rest of a is b's bytes)."""
    expected = [hashlib.sha256((server.data_dir / name).read_bytes()).hexdigest() for name in "ab"]
    assert _digests(server, tmp_path, "none") == expected
    assert _digests(server, tmp_path, "stale")[0] != expected[0]
