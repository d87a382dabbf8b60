"""The read buffer of ``--cache cto``: what it fetches, and what it must never keep.

Covers: ``reference_agent.read_cache.ReadBuffer`` over a file held in memory
(the same fetch signature as a driver's pread on one handle).

Scenario: a program reads a file in small pieces, seeks, writes and truncates
through its own open; the test records every fetch. The answers must be the
file's bytes after every change, and the fetches as few as the block sizes say.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reference_agent.read_cache import FIRST_BLOCK, MAX_BLOCK, ReadBuffer
from reference_agent.read_memory import SpareBlocks


class FileAt:
    """A file's bytes, with the log of (size, offset) fetches a buffer made."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)
        self.log: list[tuple[int, int]] = []

    def fetch(self, buffer: memoryview, offset: int) -> int:
        """A driver's pread_into: the bytes land in ``buffer``; their count is returned."""
        self.log.append((len(buffer), offset))
        data = self.data[offset : offset + len(buffer)]
        buffer[: len(data)] = data
        return len(data)


def pattern(size: int) -> bytes:
    period = bytes(i * 7 % 251 for i in range(251))  # not a power of two: blocks differ
    return (period * (size // 251 + 1))[:size]


def test_ReadBuffer_small_reads_cost_one_fetch_per_block() -> None:
    file = FileAt(pattern(3 * FIRST_BLOCK))
    buffer = ReadBuffer(size=len(file.data))
    got = b"".join(buffer.read(file.fetch, 1000, offset) for offset in range(0, 20_000, 1000))
    assert got == file.data[:20_000]
    assert file.log == [(FIRST_BLOCK, 0)]


def test_ReadBuffer_sequential_blocks_grow_and_a_seek_starts_again() -> None:
    file = FileAt(pattern(8 * MAX_BLOCK))
    buffer = ReadBuffer(size=len(file.data))
    offset = 0
    while offset < 4 * MAX_BLOCK:
        assert buffer.read(file.fetch, 8192, offset) == file.data[offset : offset + 8192]
        offset += 8192
    sizes = [size for size, _ in file.log]
    doublings = (MAX_BLOCK // FIRST_BLOCK).bit_length()
    assert sizes[:doublings] == [FIRST_BLOCK << i for i in range(doublings)]
    assert sizes[doublings - 1] == MAX_BLOCK
    assert max(sizes) == MAX_BLOCK
    buffer.read(file.fetch, 10, 7 * MAX_BLOCK)
    assert file.log[-1] == (FIRST_BLOCK, 7 * MAX_BLOCK)


def test_ReadBuffer_end_of_file_costs_no_fetch_when_the_size_is_known() -> None:
    file = FileAt(b"hello\n")
    buffer = ReadBuffer(size=6)
    assert buffer.read(file.fetch, 4096, 0) == b"hello\n"
    assert buffer.read(file.fetch, 4096, 6) == b""
    assert buffer.read(file.fetch, 4096, 100) == b""
    assert file.log == [(6, 0)]


def test_ReadBuffer_an_unknown_size_is_learnt_from_an_empty_fetch() -> None:
    file = FileAt(b"abc")
    buffer = ReadBuffer(size=None)
    assert buffer.read(file.fetch, 10, 0) == b"abc"
    assert buffer.read(file.fetch, 10, 3) == b""
    assert buffer.size == 3
    assert buffer.read(file.fetch, 10, 3) == b""
    assert len(file.log) == 2


def test_ReadBuffer_a_read_larger_than_a_block_is_one_fetch() -> None:
    file = FileAt(pattern(3 * MAX_BLOCK))
    buffer = ReadBuffer(size=len(file.data))
    assert buffer.read(file.fetch, 2 * MAX_BLOCK, 5) == file.data[5 : 5 + 2 * MAX_BLOCK]
    assert file.log == [(2 * MAX_BLOCK, 5)]


def test_ReadBuffer_short_fetches_are_completed() -> None:
    # A server may answer less than asked (a message limit): the read is still whole.
    file = FileAt(pattern(1000))
    buffer = ReadBuffer(size=1000)

    def stingy(buffer: memoryview, offset: int) -> int:
        return file.fetch(buffer[:300], offset)

    assert buffer.read(stingy, 1000, 0) == file.data
    assert [offset for _, offset in file.log] == [0, 300, 600, 900]


@pytest.mark.parametrize("change", ["overwrite", "extend", "truncate", "forget"])
def test_ReadBuffer_sees_its_own_changes(change: str) -> None:
    file = FileAt(pattern(100))
    buffer = ReadBuffer(size=100)
    assert buffer.read(file.fetch, 100, 0) == file.data
    if change == "overwrite":
        file.data[10:20] = b"x" * 10
        buffer.wrote(10, b"x" * 10)
    elif change == "extend":
        file.data += b"y" * 50
        buffer.wrote(100, b"y" * 50)
    elif change == "truncate":
        del file.data[30:]
        buffer.truncated(30)
    else:  # another open of the same agent wrote: size and bytes are asked again
        file.data += b"z" * 5
        file.data[0:1] = b"!"
        buffer.forget()
    assert buffer.read(file.fetch, 1000, 0) == file.data


def test_ReadBuffer_a_failed_fetch_drops_the_block_it_may_have_half_overwritten() -> None:
    file = FileAt(pattern(FIRST_BLOCK * 2))
    buffer = ReadBuffer(size=len(file.data))
    buffer.read(file.fetch, 10, 0)

    def broken(buffer: memoryview, offset: int) -> int:
        buffer[:5] = b"XXXXX"  # some bytes landed before the connection broke
        raise ConnectionResetError(104, "reset")

    with pytest.raises(ConnectionResetError):
        buffer.read(broken, 10, FIRST_BLOCK + 5)
    assert buffer.read(file.fetch, 10, 0) == file.data[:10]
    assert file.log[-1] == (FIRST_BLOCK, 0)  # asked again, not answered from the broken block


def test_ReadBuffer_a_read_across_blocks_keeps_the_first_part_when_the_block_is_refilled() -> None:
    file = FileAt(pattern(4 * FIRST_BLOCK))
    buffer = ReadBuffer(size=len(file.data))
    buffer.read(file.fetch, 10, 0)  # block [0, FIRST_BLOCK)
    # The rest of this read comes from a second fetch into the same memory.
    views = buffer.read_views(file.fetch, 2 * FIRST_BLOCK, FIRST_BLOCK - 100)
    assert len(views) == 2
    assert b"".join(views) == file.data[FIRST_BLOCK - 100 : 3 * FIRST_BLOCK - 100]


def test_ReadBuffer_a_file_its_open_emptied_and_wrote_is_read_back_without_a_fetch() -> None:
    """The assembler's pattern: open with O_TRUNC, write past a hole, seek back, read it all."""
    file = FileAt(b"")
    buffer = ReadBuffer(size=0)
    for offset, data in ((280, b"h" * 16), (0, b"e" * 64), (64, b"s" * 63), (296, b"t" * 24)):
        file.data[len(file.data) :] = bytes(max(0, offset - len(file.data)))
        file.data[offset : offset + len(data)] = data
        buffer.wrote(offset, data)
        assert buffer.read(file.fetch, 4096, 0) == file.data
    assert file.log == []
    buffer.truncated(400)  # grown by ftruncate: zeros
    file.data += bytes(400 - len(file.data))
    assert buffer.read(file.fetch, 4096, 0) == file.data
    assert file.log == []


def test_ReadBuffer_a_write_inside_a_block_that_stops_short_of_the_end_is_copied_in() -> None:
    file = FileAt(pattern(3 * FIRST_BLOCK))
    buffer = ReadBuffer(size=len(file.data))
    buffer.read(file.fetch, 10, 0)  # the block [0, FIRST_BLOCK)
    file.data[FIRST_BLOCK - 5 : FIRST_BLOCK + 5] = b"w" * 10
    buffer.wrote(FIRST_BLOCK - 5, b"w" * 10)
    assert (
        buffer.read(file.fetch, 10, FIRST_BLOCK - 10) == file.data[FIRST_BLOCK - 10 : FIRST_BLOCK]
    )
    assert len(file.log) == 1
    assert (
        buffer.read(file.fetch, 20, FIRST_BLOCK - 10)
        == file.data[FIRST_BLOCK - 10 : FIRST_BLOCK + 10]
    )


def test_ReadBuffer_a_block_never_grows_past_its_largest_size() -> None:
    file = FileAt(b"")
    buffer = ReadBuffer(size=0)
    data = b"z" * (MAX_BLOCK + 1)
    file.data += data
    buffer.wrote(0, data)
    assert buffer.length == 0
    assert buffer.read(file.fetch, 10, MAX_BLOCK - 5) == data[MAX_BLOCK - 5 : MAX_BLOCK + 1]


_changes = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 3 * FIRST_BLOCK), st.integers(1, 3000)),
        st.tuples(st.just("read"), st.integers(0, 3 * FIRST_BLOCK), st.integers(1, 3000)),
        st.tuples(st.just("truncate"), st.integers(0, 3 * FIRST_BLOCK), st.just(0)),
        # A descriptor of the open closed: its block goes to another open, which fills it.
        st.tuples(st.just("close"), st.integers(0, 3 * FIRST_BLOCK), st.integers(1, 3000)),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(initial=st.integers(0, 2 * FIRST_BLOCK), changes=_changes)
# A hole written after a close: the block's new memory held another file's bytes.
@example(initial=0, changes=[("close", 0, 100), ("write", 1000, 10), ("read", 0, 1010)])
def test_ReadBuffer_reads_what_its_own_writes_and_truncates_left(
    initial: int, changes: list[tuple[str, int, int]]
) -> None:
    """Any mix of this open's writes, truncates, reads and closes of one of its descriptors
    (the block then serves another open, of a file of other bytes): every read is the
    file's bytes."""
    file = FileAt(pattern(initial))
    spares = SpareBlocks(keep=4, largest=MAX_BLOCK)
    buffer = ReadBuffer(size=initial, spares=spares)
    neighbour = FileAt(b"\xee" * 4 * FIRST_BLOCK)
    for step, (kind, offset, size) in enumerate(changes):
        if kind == "write":
            data = bytes([step % 250 + 1]) * size
            file.data[len(file.data) :] = bytes(max(0, offset - len(file.data)))
            file.data[offset : offset + size] = data
            buffer.wrote(offset, data)
        elif kind == "truncate":
            del file.data[offset:]
            file.data += bytes(offset - len(file.data))
            buffer.truncated(offset)
        elif kind == "close":
            buffer.set_aside()
            other = ReadBuffer(size=len(neighbour.data), spares=spares)
            assert (
                other.read(neighbour.fetch, size, offset) == neighbour.data[offset : offset + size]
            )
            other.set_aside()
        else:
            assert buffer.read(file.fetch, size, offset) == file.data[offset : offset + size]
