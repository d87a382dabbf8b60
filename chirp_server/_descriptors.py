"""One connection's open files, and whole reads and writes on kernel descriptors.

Open files are numbered per connection by ``OpenFiles``: the lowest free
number from 0, at most 1024 of them, EMFILE beyond (cctools'
CHIRP_FILESYSTEM_MAXFD). The helpers read and write until done, as cctools'
``full_pread``/``full_pwrite`` do: an error after some data ends the call with
that data, and a pipe is read or written at its current position.
"""

from __future__ import annotations

import errno
import os
from contextlib import suppress

__all__ = [
    "MAX_OPEN_FILES",
    "OpenFiles",
    "pread_full",
    "pread_full_into",
    "read_all",
    "write_all",
    "xattr_names",
]

#: Open files per connection (CHIRP_FILESYSTEM_MAXFD).
MAX_OPEN_FILES = 1024
_CHUNK = 65536


def _fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class OpenFiles:
    """One connection's open files: Chirp number -> (kernel descriptor, path at open)."""

    def __init__(self) -> None:
        self._slots: list[tuple[int, str] | None] = [None] * MAX_OPEN_FILES

    def reserve(self) -> int:
        """The number the next open will get (lowest free), or EMFILE."""
        for number, slot in enumerate(self._slots):
            if slot is None:
                return number
        raise _fail(errno.EMFILE)

    def add(self, number: int, os_fd: int, path: str) -> None:
        self._slots[number] = (os_fd, path)

    def get(self, number: int) -> int:
        """The kernel descriptor behind ``number``; EBADF if none."""
        return self._slot(number)[0]

    def path(self, number: int) -> str:
        """The path the file was opened by (what cctools' fstatfs looks at)."""
        return self._slot(number)[1]

    def close(self, number: int) -> None:
        os_fd = self._slot(number)[0]
        os.close(os_fd)
        self._slots[number] = None

    def close_all(self) -> None:
        for number, slot in enumerate(self._slots):
            if slot is not None:
                self._slots[number] = None
                with suppress(OSError):
                    os.close(slot[0])

    def _slot(self, number: int) -> tuple[int, str]:
        slot = self._slots[number] if 0 <= number < MAX_OPEN_FILES else None
        if slot is None:
            raise _fail(errno.EBADF)
        return slot


def read_all(fd: int) -> bytes:
    parts: list[bytes] = []
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        parts.append(chunk)
        offset += len(chunk)
    return b"".join(parts)


def pread_full(fd: int, length: int, offset: int) -> bytes:
    """Read until ``length`` bytes or end of file; a pipe gives what is available.

    An error after some data ends the read with that data (cctools' full_pread).
    """
    parts: list[bytes] = []
    got = 0
    try:
        while got < length:
            chunk = os.pread(fd, length - got, offset + got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
    except OSError as exc:
        if got:
            return b"".join(parts)
        if exc.errno != errno.ESPIPE:
            raise
        return os.read(fd, length)
    return b"".join(parts)


def pread_full_into(fd: int, buffer: memoryview, offset: int) -> int:
    """:func:`pread_full` into ``buffer`` (its whole length): the count read.

    The reply's bytes then go out from ``buffer`` without another allocation or copy.
    """
    got = 0
    try:
        while got < len(buffer):
            count = os.preadv(fd, [buffer[got:]], offset + got)
            if not count:
                break
            got += count
    except OSError as exc:
        if got:
            return got
        if exc.errno != errno.ESPIPE:
            raise
        return os.readv(fd, [buffer])
    return got


def write_all(fd: int, data: bytes | memoryview, offset: int, partial: bool = True) -> int:
    """Write everything at ``offset`` (or at the end of a pipe); returns the count.

    With ``partial``, an error after some data ends the write with that count (cctools'
    full_pwrite); without, every error is raised.
    """
    view = memoryview(data)
    done = 0
    try:
        while done < len(view):
            done += os.pwrite(fd, view[done:], offset + done)
    except OSError as exc:
        if done and partial:
            return done
        if done:
            raise
        if exc.errno != errno.ESPIPE:
            raise
        try:
            while done < len(view):
                done += os.write(fd, view[done:])
        except OSError:
            if not done or not partial:
                raise
    return done


def xattr_names(names: list[str]) -> bytes:
    """The kernel's listxattr format: each name followed by a NUL."""
    return b"".join(os.fsencode(n) + b"\0" for n in names)
