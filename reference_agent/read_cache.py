"""``--cache cto``: a read buffer per open file, with close-to-open consistency.

Theory of operation
-------------------
Each remote open file description (:class:`~reference_agent.files.RemoteFile`)
gets one :class:`ReadBuffer` when it is opened. A read the buffer cannot answer
fetches one block from the server, at least as large as the read: 64 KiB, doubled
by each read that continues where the last one stopped (up to 1 MiB), back to
64 KiB after a seek. Later reads inside the block cost no round trip. The block is
received straight into the buffer's own memory (the driver's ``pread_into``) and
reads are answered with views of it, so the bytes are copied once more only, into
the program. Why 1 MiB: a block the server sends whole is copied from the socket
and then into the program while it is still in the processor's cache (2 MiB per
core here); 4 MiB blocks measured 587 MB/s where 1 MiB blocks gave 680, in paired
runs on aviary's Chirp server, and held 90 MiB more at the peak. The memory is
page-aligned and a closed open's block goes to the next open
(:mod:`reference_agent.read_memory`).

What the program may see is what NFS promises (close-to-open):

- an open sees every change closed before it: the buffer starts empty at open, and
  the file's size comes from the open's own fstat;
- a read at or past that size is end of file without asking the server;
- the program's own changes are seen at once: a write or truncate through one open
  is copied into that open's block (and, where the block holds the file up to its
  known end, extends it: a file created or truncated by its open and then written,
  as an assembler writes an object and reads it back, is read without a round
  trip), and its size is updated; a change through any other descriptor of this
  agent drops the buffers of every other open of that remote file (known by the
  server's inode number, whatever name opened it; by name where the protocol has no
  inode numbers). Writes reach
  the driver at once (written through, as with ``--cache off``);
- a change by someone else while the file is open may stay unseen until it is
  reopened: the buffer and the known size are dropped at close, never reused.

Every write goes to the server at once, so nothing is lost at a crash that
``--cache off`` would have kept. Two kinds of open leave their reads to the kernel
instead of this buffer, with the same promises: a small file opened read-only, whose
placeholder is filled at the first read (``RemoteFile.fill``), and a file opened
read-write while empty, whose placeholder mirrors every write (``RemoteFile.mirror``).
The conformance suite checks these promises against its close-to-open model
(``--agent-cache cto``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from reference_agent.read_memory import Memory, SpareBlocks, aligned

__all__ = ["FILL_MAX", "FIRST_BLOCK", "MAX_BLOCK", "MIRROR_MAX", "FetchInto", "ReadBuffer"]

#: Bytes of a file opened read-only that the agent hands to the kernel whole at its first
#: read (``RemoteFile.fill``): later reads and seeks on it cost no stop in Python.
FILL_MAX = 1024 * 1024
#: Bytes a file written from empty may grow to while its placeholder mirrors it
#: (``RemoteFile.mirror``): past this the agent answers its reads itself again, so a large
#: output does not sit in memory twice. Objects and executables of a build stay below it.
MIRROR_MAX = 16 * 1024 * 1024
FIRST_BLOCK = 64 * 1024  # bytes fetched by a read the buffer cannot answer (at least)
MAX_BLOCK = 1024 * 1024  # bytes: the largest block sequential reads grow to

#: Fetch into a buffer from ``offset`` of the file: how many bytes came, 0 at end of file
#: (a driver's pread_into on one handle).
FetchInto = Callable[[memoryview, int], int]


@dataclass(slots=True)
class ReadBuffer:
    """One open file's read buffer: a block of the file, and its size as this open knows it."""

    #: The file's size as far as this open knows (the open's fstat, its own writes, an end of
    #: file met); None: unknown, ask the server.
    size: int | None
    start: int = 0  # the file offset of the block
    length: int = 0  # bytes of the block held (0: none)
    block: int = FIRST_BLOCK  # bytes the next fetch asks for, at least
    resume: int = -1  # where the last block fetched ends: a miss there is sequential
    fetches: int = 0  # round trips this buffer made (for tests and the summary)
    memory: Memory = field(default_factory=bytearray, repr=False)  # the block's storage
    #: Where the block's memory comes from and goes back to (None: its own, let go).
    spares: SpareBlocks | None = field(default=None, repr=False)

    def read_views(self, fetch: FetchInto, size: int, offset: int) -> list[memoryview]:
        """Up to ``size`` bytes at ``offset``, as views of the block (valid until the next call).

        Args:
            fetch: the driver's pread_into on this open's handle.
            size: bytes asked for (the agent bounds it).
            offset: where, in the file (not negative).

        Returns:
            The bytes in order, in one or more pieces; fewer than ``size`` only at end of file.

        Raises:
            OSError: from ``fetch``; the block is dropped (it may be half overwritten).
        """
        end = offset + size
        if self.size is not None:
            end = min(end, self.size)
            if end <= offset:  # at or past the end: the hit test below would slice backwards
                return []
        if self.start <= offset and end <= self.start + self.length:  # a hit: most reads
            return [memoryview(self.memory)[offset - self.start : end - self.start]]
        pieces: list[memoryview] = []
        position = offset
        while position < end:
            if self.start <= position < self.start + self.length:
                stop = min(end, self.start + self.length)
                pieces.append(memoryview(self.memory)[position - self.start : stop - self.start])
                position = stop
                continue
            if position == self.resume:
                self.block = min(self.block * 2, MAX_BLOCK)
            else:
                self.block = FIRST_BLOCK
            want = max(end - position, self.block)
            if self.size is not None:
                want = min(want, self.size - position)
            # The block is refilled in place: what this read took of it is kept as a copy.
            pieces = [memoryview(piece.tobytes()) for piece in pieces]
            if len(self.memory) < want:
                self._replace_memory(want)
            self.length = 0
            count = fetch(memoryview(self.memory)[:want], position)
            self.fetches += 1
            if not count:
                self.size = position  # end of file, as the server says now
                break
            self.start, self.length = position, count
            self.resume = position + count
        return pieces

    def read(self, fetch: FetchInto, size: int, offset: int) -> bytes:
        """:meth:`read_views`, joined into bytes."""
        pieces = self.read_views(fetch, size, offset)
        return pieces[0].tobytes() if len(pieces) == 1 else b"".join(pieces)

    def _replace_memory(self, size: int) -> None:
        """New memory of at least ``size`` bytes for the block; the old goes back."""
        if self.spares is None:
            self.memory = aligned(size)
            return
        old, self.memory = self.memory, self.spares.take(size)
        self.spares.give(old)

    def set_aside(self) -> None:
        """Drop the block and give its memory back (a descriptor of the open was closed,
        or the placeholder holds the bytes now). What the open knows of the size stays; a
        later read through a descriptor still open fetches again."""
        self.length = 0
        if self.spares is not None:
            self.spares.give(self.memory)
        self.memory = bytearray()

    def _holds_the_end(self) -> bool:
        """Whether the block reaches the file's known end (an empty block: the file is empty)."""
        return self.size is not None and self.start + self.length == self.size

    def _grow(self, length: int) -> bool:
        """Make the block ``length`` bytes long, the new bytes zero (a hole); False when that
        is more than a block may hold, and the block is dropped instead."""
        if length > MAX_BLOCK:
            self.length = 0
            return False
        if len(self.memory) < length:
            # A new object, not a resize: a view handed out by the last read may be alive.
            grown = aligned(max(length, min(2 * len(self.memory), MAX_BLOCK)))
            grown[: self.length] = self.memory[: self.length]
            self.memory = grown
        else:
            self.memory[self.length : length] = bytes(max(0, length - self.length))
        self.length = length
        return True

    def wrote(self, offset: int, data: bytes | memoryview) -> None:
        """This open wrote ``data`` (what the server took of it) at ``offset``: the block
        takes the bytes it covers, and grows with the file where it holds its end."""
        count = len(data)
        if not count:
            return
        end = offset + count
        if not self.length:
            self.start = 0  # an empty block sits at 0: it holds the end of an empty file
        holds_end = self._holds_the_end()
        if self.size is not None:
            self.size = max(self.size, end)
        grows = holds_end and offset >= self.start and end > self.start + self.length
        if grows and not self._grow(end - self.start):
            return
        low, high = max(offset, self.start), min(end, self.start + self.length)
        if low < high:
            self.memory[low - self.start : high - self.start] = data[low - offset : high - offset]

    def truncated(self, length: int) -> None:
        """This open truncated the file to ``length``."""
        if not self.length:
            self.start = 0
        if self._holds_the_end() and length > self.start + self.length:
            self._grow(length - self.start)
        elif length < self.start + self.length:
            self.length = max(0, length - self.start)
        self.size = length

    def forget(self) -> None:
        """Another open of this agent changed the file: ask the server again."""
        self.length = 0
        self.size = None
