"""The copy behind a shared writable mapping of a remote file, and what the mapping changed.

Strategy: a program's ``mmap(MAP_SHARED, PROT_WRITE)`` of a remote file maps its
placeholder, which then holds the whole file; the mapping's stores land there, where
no call of the agent sees them. At fsync and close the agent sends them to the server.
Sending the whole placeholder back would undo every change the server got meanwhile
by other ways (another descriptor's write or append, a truncate by name: bytes the
program was told are written). So the copy keeps a *base* beside the placeholder: the
bytes the server holds as far as this agent knows. Every write and truncate of the file
through the agent reaches both (the placeholder too, so that the mapping sees it, as a
shared page cache would); what differs between placeholder and base is then exactly what
the mapping stored, and only that goes back. A mapping never changes a file's size, so
the write-back never truncates or extends it.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["PAGE", "MappedCopy"]

PAGE = 4096  # bytes compared at a time: a page the mapping did not store to is skipped whole


class MappedCopy:
    """A shared-mapped placeholder (through the agent's own descriptor) and its base.

    Args:
        fd: the agent's descriptor of the placeholder (it takes ownership).
        filled: the kernel keeps the placeholder in step with writes (a mirrored file):
            changes then reach the base only.
    """

    def __init__(self, fd: int, *, filled: bool) -> None:
        self.fd = fd
        self.filled = filled
        self.base = bytearray(self._placeholder())

    def _placeholder(self) -> bytes:
        size = os.fstat(self.fd).st_size
        chunks: list[bytes] = []
        offset = 0
        while offset < size and (chunk := os.pread(self.fd, size - offset, offset)):
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)

    def read(self, size: int, offset: int) -> bytes:
        """What a read through the open that made the mapping sees: the placeholder."""
        return os.pread(self.fd, size, offset)

    def wrote(self, offset: int, data: bytes | memoryview) -> None:
        """``data`` reached the server at ``offset`` (through any descriptor of this agent)."""
        if not data:
            return
        if not self.filled:
            written = 0
            while written < len(data):
                written += os.pwrite(self.fd, memoryview(data)[written:], offset + written)
        end = offset + len(data)
        if len(self.base) < offset:
            self.base.extend(bytes(offset - len(self.base)))  # a hole reads as zeros
        self.base[offset:end] = data

    def truncated(self, length: int) -> None:
        """The file's length was set to ``length`` (through any descriptor, or by name)."""
        if not self.filled:
            os.ftruncate(self.fd, length)
        if length < len(self.base):
            del self.base[length:]
        else:
            self.base.extend(bytes(length - len(self.base)))

    def changes(self) -> list[tuple[int, bytes]]:
        """What the mapping stored since the last write-back: (offset, bytes) runs, in order.

        Per page that differs from the base, the span from its first to its last differing
        byte; bytes past the base's end (none, unless the placeholder grew behind the agent's
        back) are sent as they are. The base does not change: :meth:`sent` says what went.
        """
        current = self._placeholder()
        base = self.base
        runs: list[tuple[int, bytes]] = []
        common = min(len(base), len(current))
        for start in range(0, common, PAGE):
            end = min(start + PAGE, common)
            if base[start:end] == current[start:end]:
                continue
            first = start
            while base[first] == current[first]:
                first += 1
            last = end - 1
            while base[last] == current[last]:
                last -= 1
            if runs and runs[-1][0] + len(runs[-1][1]) == first:
                offset, data = runs.pop()
                runs.append((offset, data + current[first : last + 1]))
            else:
                runs.append((first, current[first : last + 1]))
        if len(current) > len(base):
            runs.append((len(base), current[len(base) :]))
        return runs

    def sent(self, offset: int, data: bytes) -> None:
        """``data`` of :meth:`changes` reached the server at ``offset``."""
        if len(self.base) < offset:
            self.base.extend(bytes(offset - len(self.base)))
        self.base[offset : offset + len(data)] = data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
