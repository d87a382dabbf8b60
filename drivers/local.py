"""local: the passthrough driver, and the POSIX oracle of the conformance suite.

Paths are taken relative to a root directory (``/`` for ``file:///x``, a
temporary directory for the oracle) and handed to the kernel unchanged, so
every result and errno is exactly what Linux says. Symlinks are followed by
the kernel as usual, so an absolute symlink target points outside the root:
the oracle's trees should use relative targets where that matters.

Counters: no round trips and no connections; ``bytes_sent`` and
``bytes_received`` count the data written and read.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Self

from drivers._interface import DirEntry, Driver, FileType, Handle, StatFS, StatResult
from drivers._url import Location, normalize_path

__all__ = ["LocalDriver"]


class LocalDriver(Driver):
    """The local filesystem below ``root``."""

    name = "local"
    url_schemes = ("file", "local")

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        super().__init__()
        self.root = os.path.realpath(os.fspath(root))
        if not os.path.isdir(self.root):
            raise ValueError(f"local driver root is not a directory: {self.root}")
        self._handles: set[int] = set()

    @classmethod
    def from_location(cls, location: Location, *, timeout: float = 30.0) -> Self:
        if location.host not in ("", "localhost"):
            raise ValueError(f"file URLs name this machine only, not {location.host!r}")
        return cls("/")

    def describe(self) -> str:
        return f"local:{self.root}"

    def close_driver(self) -> None:
        for fd in list(self._handles):
            self._handles.discard(fd)
            with contextlib.suppress(OSError):
                os.close(fd)

    def _real(self, path: str) -> str:
        inner = normalize_path(path)
        return self.root if inner == "/" else self.root.rstrip("/") + inner

    # -- metadata -------------------------------------------------------------------

    def stat(self, path: str) -> StatResult:
        with self.counters.operation("stat"):
            return StatResult.from_os(os.stat(self._real(path)))

    def lstat(self, path: str) -> StatResult:
        with self.counters.operation("lstat"):
            return StatResult.from_os(os.lstat(self._real(path)))

    def fstat(self, handle: Handle) -> StatResult:
        with self.counters.operation("fstat"):
            return StatResult.from_os(os.fstat(self._fd(handle)))

    def access(self, path: str, mode: int) -> None:
        with self.counters.operation("access"):
            # os.access answers a bool; ask the kernel for the errno instead.
            fd = os.open(self._real(path), os.O_PATH)
            try:
                if not os.access(f"/proc/self/fd/{fd}", mode):
                    raise PermissionError(13, os.strerror(13), path)
            finally:
                os.close(fd)

    def statfs(self, path: str) -> StatFS:
        with self.counters.operation("statfs"):
            sv = os.statvfs(self._real(path))
            return StatFS(
                f_type=0,
                f_bsize=sv.f_frsize,
                f_blocks=sv.f_blocks,
                f_bfree=sv.f_bfree,
                f_bavail=sv.f_bavail,
                f_files=sv.f_files,
                f_ffree=sv.f_ffree,
            )

    def chmod(self, path: str, mode: int) -> None:
        with self.counters.operation("chmod"):
            os.chmod(self._real(path), mode)

    def utimens(self, path: str, times_ns: tuple[int, int] | None = None) -> None:
        with self.counters.operation("utimens"):
            if times_ns is None:
                os.utime(self._real(path))
            else:
                os.utime(self._real(path), ns=times_ns)

    # -- open files -----------------------------------------------------------------

    def _fd(self, handle: Handle) -> int:
        if handle not in self._handles:
            raise OSError(9, os.strerror(9))
        return int(handle)

    def open(self, path: str, flags: int, mode: int = 0o666) -> Handle:
        with self.counters.operation("open"):
            fd = os.open(self._real(path), flags | os.O_CLOEXEC, mode)
            self._handles.add(fd)
            return Handle(fd)

    def close(self, handle: Handle) -> None:
        with self.counters.operation("close"):
            fd = self._fd(handle)
            self._handles.discard(fd)
            os.close(fd)

    def pread(self, handle: Handle, size: int, offset: int) -> bytes:
        with self.counters.operation("pread"):
            data = os.pread(self._fd(handle), size, offset)
            self.counters.received(len(data))
            return data

    def pwrite(self, handle: Handle, data: bytes, offset: int) -> int:
        with self.counters.operation("pwrite"):
            fd = self._fd(handle)
            # pwrite(2) on Linux ignores the offset for O_APPEND files; keep that.
            written = os.pwrite(fd, data, offset)
            self.counters.sent(written)
            return written

    def fsync(self, handle: Handle) -> None:
        with self.counters.operation("fsync"):
            os.fsync(self._fd(handle))

    def ftruncate(self, handle: Handle, length: int) -> None:
        with self.counters.operation("ftruncate"):
            os.ftruncate(self._fd(handle), length)

    def truncate(self, path: str, length: int) -> None:
        with self.counters.operation("truncate"):
            os.truncate(self._real(path), length)

    # -- the namespace ----------------------------------------------------------------

    def readdir(self, path: str) -> list[DirEntry]:
        with self.counters.operation("readdir"):
            entries: list[DirEntry] = []
            with os.scandir(self._real(path)) as it:
                for entry in it:
                    try:
                        kind = FileType.from_mode(entry.stat(follow_symlinks=False).st_mode)
                    except OSError:
                        kind = FileType.UNKNOWN
                    entries.append(DirEntry(entry.name, kind, entry.inode()))
            return entries

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        with self.counters.operation("mkdir"):
            os.mkdir(self._real(path), mode)

    def rmdir(self, path: str) -> None:
        with self.counters.operation("rmdir"):
            os.rmdir(self._real(path))

    def unlink(self, path: str) -> None:
        with self.counters.operation("unlink"):
            os.unlink(self._real(path))

    def rename(self, old: str, new: str) -> None:
        with self.counters.operation("rename"):
            os.rename(self._real(old), self._real(new))

    def link(self, old: str, new: str) -> None:
        with self.counters.operation("link"):
            os.link(self._real(old), self._real(new), follow_symlinks=False)

    def symlink(self, target: str, linkpath: str) -> None:
        with self.counters.operation("symlink"):
            os.symlink(target, self._real(linkpath))

    def readlink(self, path: str) -> str:
        with self.counters.operation("readlink"):
            return os.readlink(self._real(path))


def tree_root(path: str | os.PathLike[str]) -> LocalDriver:
    """A local driver rooted at ``path`` (created if missing): the oracle's shape."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return LocalDriver(path)
