"""The few POSIX calls the Chirp server needs and Python's ``os`` module lacks.

cctools' server answers with what libc gives it, and three of those answers are
out of ``os``'s reach:

- ``readdir`` order with ``.`` and ``..`` where the filesystem puts them
  (``os.scandir`` drops both, and ext4 returns them in hash order, not first);
- ``fstatfs``'s ``f_type`` (``os.statvfs`` has no filesystem type);
- ``faccessat``'s errno (``os.access`` only says yes or no).

Each is called through ``ctypes`` on Linux with glibc's 64-bit layouts, and each
has a pure-``os`` fallback that gives the same answer minus the missing detail
(``.``/``..`` first, ``f_type`` 0, the errno of an lstat or EACCES).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys

__all__ = ["faccessat", "fstatfs", "list_names", "process_umask"]


class _Dirent(ctypes.Structure):
    # struct dirent on 64-bit glibc (identical to struct dirent64).
    _fields_ = (
        ("d_ino", ctypes.c_uint64),
        ("d_off", ctypes.c_int64),
        ("d_reclen", ctypes.c_ushort),
        ("d_type", ctypes.c_ubyte),
        ("d_name", ctypes.c_char * 256),
    )


class _StatFS(ctypes.Structure):
    # struct statfs on 64-bit Linux: every field is one 8-byte word.
    _fields_ = (
        ("f_type", ctypes.c_long),
        ("f_bsize", ctypes.c_long),
        ("f_blocks", ctypes.c_ulong),
        ("f_bfree", ctypes.c_ulong),
        ("f_bavail", ctypes.c_ulong),
        ("f_files", ctypes.c_ulong),
        ("f_ffree", ctypes.c_ulong),
        ("f_fsid", ctypes.c_int * 2),
        ("f_namelen", ctypes.c_long),
        ("f_frsize", ctypes.c_long),
        ("f_flags", ctypes.c_long),
        ("f_spare", ctypes.c_long * 4),
    )


def _load_libc() -> ctypes.CDLL | None:
    if sys.platform != "linux" or ctypes.sizeof(ctypes.c_long) != 8:
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.fdopendir.restype = ctypes.c_void_p
        libc.fdopendir.argtypes = (ctypes.c_int,)
        libc.readdir.restype = ctypes.POINTER(_Dirent)
        libc.readdir.argtypes = (ctypes.c_void_p,)
        libc.closedir.restype = ctypes.c_int
        libc.closedir.argtypes = (ctypes.c_void_p,)
        libc.fstatfs.restype = ctypes.c_int
        libc.fstatfs.argtypes = (ctypes.c_int, ctypes.POINTER(_StatFS))
        libc.faccessat.restype = ctypes.c_int
        libc.faccessat.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_int)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _load_libc()


def _raise_errno() -> None:
    code = ctypes.get_errno()
    raise OSError(code, os.strerror(code))


def list_names(dirfd: int) -> list[str]:
    """Every name in the directory open on ``dirfd``, in readdir order, ``.`` and ``..`` included.

    ``dirfd`` stays open and its position is not used (the listing works on a duplicate).
    """
    if _LIBC is None:
        return [".", "..", *os.listdir(dirfd)]
    dup = os.dup(dirfd)
    handle = _LIBC.fdopendir(dup)
    if not handle:
        os.close(dup)
        _raise_errno()
    try:
        names: list[str] = []
        while True:
            entry = _LIBC.readdir(handle)
            if not entry:
                return names
            names.append(os.fsdecode(entry.contents.d_name))
    finally:
        _LIBC.closedir(handle)


def fstatfs(fd: int) -> tuple[int, int, int, int, int, int, int]:
    """``(f_type, f_bsize, f_blocks, f_bfree, f_bavail, f_files, f_ffree)`` of ``fd``'s filesystem."""
    if _LIBC is not None:
        buf = _StatFS()
        if _LIBC.fstatfs(fd, ctypes.byref(buf)) != 0:
            _raise_errno()
        return (
            buf.f_type,
            buf.f_bsize,
            buf.f_blocks,
            buf.f_bfree,
            buf.f_bavail,
            buf.f_files,
            buf.f_ffree,
        )
    sv = os.fstatvfs(fd)
    return (0, sv.f_bsize, sv.f_blocks, sv.f_bfree, sv.f_bavail, sv.f_files, sv.f_ffree)


def faccessat(dirfd: int, name: str, mode: int) -> None:
    """``faccessat(dirfd, name, mode, 0)``: nothing, or the kernel's error."""
    mode = ctypes.c_int(mode).value  # the C server passes its 64-bit integer as an int
    if _LIBC is not None:
        if _LIBC.faccessat(dirfd, os.fsencode(name), mode, 0) != 0:
            _raise_errno()
        return
    if mode & ~0o7:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    if not os.access(name, mode, dir_fd=dirfd):
        os.stat(name, dir_fd=dirfd)  # raises ENOENT, ENOTDIR, ... if that is the reason
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))


def process_umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)  # racy with other threads, hence only the fallback
    os.umask(current)
    return current
