"""Tracee memory: whole buffers and C strings, each in one process_vm_readv/writev call.

Parrot needed an "I/O channel" and word-by-word peek/poke; the kernel now copies
between address spaces in one syscall, so every transfer here is a single call.
``process_vm_writev`` honours page protections (it will not write read-only
text, unlike ``/proc/PID/mem``), which is what an agent writing syscall results
wants.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
from collections.abc import Sized
from typing import Final

from reference_agent._ptrace import vm_read, vm_write

__all__ = ["PATH_MAX", "read_bytes", "read_c_string", "write_bytes", "write_scattered"]

#: Longest path the kernel accepts, terminating NUL included (linux/limits.h).
PATH_MAX: Final = 4096
_PAGE_SIZE: Final = mmap.PAGESIZE


def _fault(address: int) -> OSError:
    return OSError(errno.EFAULT, f"{os.strerror(errno.EFAULT)} at {address:#x}")


def read_bytes(pid: int, address: int, length: int) -> bytes:
    """Exactly ``length`` bytes of ``pid``'s memory at ``address``.

    Raises:
        OSError: EFAULT if any of it is not mapped readable (as the syscall would fail).
    """
    if length == 0:
        return b""
    data = vm_read(pid, [(address, length)])
    if len(data) != length:
        raise _fault(address + len(data))
    return data


def write_bytes(pid: int, address: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` into ``pid``'s memory at ``address``.

    Raises:
        OSError: EFAULT if any of it is not mapped writable.
    """
    if data:
        where, _keeper = _address(data)
        if vm_write(pid, [(where, len(data))], [(address, len(data))]) != len(data):
            raise _fault(address)


#: Pieces smaller than this are copied into a ctypes buffer (cheaper than lending them).
_LEND_FROM = 64 * 1024


def _address(piece: bytes | memoryview) -> tuple[int, Sized]:
    """Where ``piece``'s bytes are in our memory, and what keeps them there (as long as the
    piece). A large piece is lent, not copied (a bytes object its storage, a view its buffer)."""
    if len(piece) < _LEND_FROM or (isinstance(piece, memoryview) and piece.readonly):
        copy = ctypes.create_string_buffer(bytes(piece), len(piece))
        return ctypes.addressof(copy), copy
    if isinstance(piece, bytes):
        pointer = ctypes.c_char_p(piece)
        return ctypes.cast(pointer, ctypes.c_void_p).value or 0, piece
    window = (ctypes.c_char * piece.nbytes).from_buffer(memoryview(piece))
    return ctypes.addressof(window), window


def write_scattered(
    pid: int, pieces: list[bytes | memoryview], ranges: list[tuple[int, int]]
) -> None:
    """Write ``pieces`` (in order, as one stream) over ``ranges`` of ``pid``'s memory, in one
    call; a large piece is not copied first. The ranges hold exactly the pieces' bytes.

    Raises:
        OSError: EFAULT if any of it is not mapped writable.
    """
    held = [_address(piece) for piece in pieces if len(piece)]
    if not held:
        return
    local = [(address, len(keeper)) for address, keeper in held]
    total = sum(length for _, length in local)
    written = vm_write(pid, local, ranges)
    del held  # the ctypes windows go before their buffers may be resized
    if written != total:
        raise _fault(ranges[0][0])


def _page_split(address: int, length: int) -> list[tuple[int, int]]:
    """(address, length) pieces of the range, none crossing a page boundary."""
    pieces = []
    end = address + length
    while address < end:
        page_end = (address // _PAGE_SIZE + 1) * _PAGE_SIZE
        piece_end = min(page_end, end)
        pieces.append((address, piece_end - address))
        address = piece_end
    return pieces


def read_c_string(pid: int, address: int, limit: int = PATH_MAX) -> bytes:
    """The NUL-terminated string at ``address``, without its NUL.

    The whole window of ``limit`` bytes is asked for in one call, split at page
    boundaries: the kernel then copies page by page and stops at the first page
    that is not mapped, so a short string just before an unmapped page reads
    fine, and only a string that really runs into one fails.

    Args:
        pid: a stopped tracee (or any process we may trace).
        address: where the string starts.
        limit: most bytes to look at, NUL included (PATH_MAX for paths).

    Raises:
        OSError: EFAULT if the string starts in or runs into unmapped memory;
            ENAMETOOLONG if no NUL comes within ``limit`` bytes.
    """
    if limit <= 0:
        raise ValueError(f"limit must be positive, not {limit}")
    if address == 0:
        raise _fault(address)
    try:
        data = vm_read(pid, _page_split(address, limit))
    except OSError as exc:
        if exc.errno == errno.EFAULT:
            raise _fault(address) from None
        raise
    end = data.find(0)
    if end >= 0:
        return data[:end]
    if len(data) < limit:
        raise _fault(address + len(data))
    raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
