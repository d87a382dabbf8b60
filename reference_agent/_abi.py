"""The x86_64 Linux ABI the agent writes into tracee memory: stat, statx, dirent64.

Layouts are those of the kernel's uapi headers (asm/stat.h, linux/stat.h,
linux/dirent.h) for x86_64; a struct the agent fills must be byte-exact,
since the tracee's libc reads it without checking.
"""

from __future__ import annotations

import stat as stat_module
import struct
from typing import Final

from drivers import FileType, StatResult

__all__ = [
    "AT_EMPTY_PATH",
    "AT_FDCWD",
    "AT_REMOVEDIR",
    "AT_SYMLINK_NOFOLLOW",
    "EXECUTE_BITS",
    "STATX_BASIC_STATS",
    "pack_dirent64",
    "pack_stat",
    "pack_statx",
]

AT_FDCWD: Final = -100
#: Mode bits any of which makes a file executable to exec (and to the agent's local
#: copy of a remote program).
EXECUTE_BITS: Final = 0o111
AT_SYMLINK_NOFOLLOW: Final = 0x100
AT_REMOVEDIR: Final = 0x200
AT_SYMLINK_FOLLOW: Final = 0x400
AT_EMPTY_PATH: Final = 0x1000
STATX_BASIC_STATS: Final = 0x7FF
UTIME_NOW: Final = (1 << 30) - 1
UTIME_OMIT: Final = (1 << 30) - 2

# struct stat: dev ino nlink mode uid gid pad rdev size blksize blocks atim mtim ctim unused[3]
_STAT: Final = struct.Struct("<QQQIIIiQqqqqqqqqq3q")
assert _STAT.size == 144
# struct statx up to stx_dio_offset_align, then the spare tail.
_STATX: Final = struct.Struct("<IIQIIIHHQQQQqIiqIiqIiqIiIIIIQII96x")
assert _STATX.size == 256
_DIRENT_HEAD: Final = struct.Struct("<QqHB")

_DT: Final = {
    FileType.UNKNOWN: 0,
    FileType.FIFO: 1,
    FileType.CHARDEV: 2,
    FileType.DIRECTORY: 4,
    FileType.BLOCKDEV: 6,
    FileType.REGULAR: 8,
    FileType.SYMLINK: 10,
    FileType.SOCKET: 12,
}
_NS: Final = 1_000_000_000


def _split_ns(ns: int) -> tuple[int, int]:
    return ns // _NS, ns % _NS


def pack_stat(st: StatResult, dev: int) -> bytes:
    """``struct stat`` for a remote file, with the agent's device number for it."""
    a, m, c = _split_ns(st.st_atime_ns), _split_ns(st.st_mtime_ns), _split_ns(st.st_ctime_ns)
    return _STAT.pack(
        dev,
        st.st_ino,
        st.st_nlink,
        st.st_mode,
        st.st_uid,
        st.st_gid,
        0,
        st.st_rdev,
        st.st_size,
        st.st_blksize,
        st.st_blocks,
        *a,
        *m,
        *c,
        0,
        0,
        0,
    )


def pack_statx(st: StatResult, dev: int) -> bytes:
    """``struct statx`` with the basic fields (no birth time: Chirp has none)."""
    a, m, c = _split_ns(st.st_atime_ns), _split_ns(st.st_mtime_ns), _split_ns(st.st_ctime_ns)
    return _STATX.pack(
        STATX_BASIC_STATS,
        st.st_blksize,
        0,
        st.st_nlink,
        st.st_uid,
        st.st_gid,
        st.st_mode & 0xFFFF,
        0,
        st.st_ino,
        st.st_size,
        st.st_blocks,
        0,
        a[0], a[1], 0,
        0, 0, 0,
        c[0], c[1], 0,
        m[0], m[1], 0,
        0,
        0,
        dev >> 8,
        dev & 0xFF,
        0,
        0,
        0,
    )  # fmt: skip


def pack_dirent64(ino: int, offset: int, kind: FileType, name: bytes) -> bytes:
    """One ``linux_dirent64`` record, NUL-terminated and padded to 8 bytes."""
    length = _DIRENT_HEAD.size + len(name) + 1
    length = (length + 7) & ~7
    head = _DIRENT_HEAD.pack(ino or 1, offset, length, _DT[kind])
    return head + name + b"\0" * (length - _DIRENT_HEAD.size - len(name))


def is_directory_mode(mode: int) -> bool:
    return stat_module.S_ISDIR(mode)
