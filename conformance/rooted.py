"""A driver seen through a subdirectory: every test works in a fresh tree of its own.

``Rooted(driver, "/run-17")`` turns ``stat("/a")`` into ``driver.stat("/run-17/a")``,
so probes and the state machine always name paths from ``/`` whatever the
server holds, and two tests never see each other's files.
"""

from __future__ import annotations

from typing import Self

from drivers import DirEntry, Driver, Handle, Location, StatFS, StatResult

__all__ = ["Rooted"]


class Rooted(Driver):
    """Every path operation of ``inner``, below ``root``."""

    name = "rooted"
    url_schemes = ()

    def __init__(self, inner: Driver, root: str) -> None:
        super().__init__()
        self.inner = inner
        self.root = "/" + root.strip("/")
        self.counters = inner.counters  # the counters are the inner driver's

    @classmethod
    def from_location(cls, location: Location, *, timeout: float = 30.0) -> Self:
        raise TypeError("Rooted wraps a driver; it is not made from a URL")

    def describe(self) -> str:
        return f"{self.inner.describe()}{self.root}"

    def _p(self, path: str) -> str:
        return self.root if path in ("", "/") else self.root + "/" + path.lstrip("/")

    def close_driver(self) -> None:
        self.inner.close_driver()

    def stat(self, path: str) -> StatResult:
        return self.inner.stat(self._p(path))

    def lstat(self, path: str) -> StatResult:
        return self.inner.lstat(self._p(path))

    def fstat(self, handle: Handle) -> StatResult:
        return self.inner.fstat(handle)

    def access(self, path: str, mode: int) -> None:
        self.inner.access(self._p(path), mode)

    def statfs(self, path: str) -> StatFS:
        return self.inner.statfs(self._p(path))

    def chmod(self, path: str, mode: int) -> None:
        self.inner.chmod(self._p(path), mode)

    def utimens(self, path: str, times_ns: tuple[int, int] | None = None) -> None:
        self.inner.utimens(self._p(path), times_ns)

    def open(self, path: str, flags: int, mode: int = 0o666) -> Handle:
        return self.inner.open(self._p(path), flags, mode)

    def close(self, handle: Handle) -> None:
        self.inner.close(handle)

    def pread(self, handle: Handle, size: int, offset: int) -> bytes:
        return self.inner.pread(handle, size, offset)

    def pwrite(self, handle: Handle, data: bytes, offset: int) -> int:
        return self.inner.pwrite(handle, data, offset)

    def fsync(self, handle: Handle) -> None:
        self.inner.fsync(handle)

    def ftruncate(self, handle: Handle, length: int) -> None:
        self.inner.ftruncate(handle, length)

    def truncate(self, path: str, length: int) -> None:
        self.inner.truncate(self._p(path), length)

    def readdir(self, path: str) -> list[DirEntry]:
        return self.inner.readdir(self._p(path))

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        self.inner.mkdir(self._p(path), mode)

    def rmdir(self, path: str) -> None:
        self.inner.rmdir(self._p(path))

    def unlink(self, path: str) -> None:
        self.inner.unlink(self._p(path))

    def rename(self, old: str, new: str) -> None:
        self.inner.rename(self._p(old), self._p(new))

    def link(self, old: str, new: str) -> None:
        self.inner.link(self._p(old), self._p(new))

    def symlink(self, target: str, linkpath: str) -> None:
        self.inner.symlink(target, self._p(linkpath))

    def readlink(self, path: str) -> str:
        return self.inner.readlink(self._p(path))

    def read_file(self, path: str, chunk: int = 1 << 20) -> bytes:
        return self.inner.read_file(self._p(path), chunk)

    def write_file(self, path: str, data: bytes, mode: int = 0o666, chunk: int = 1 << 20) -> None:
        self.inner.write_file(self._p(path), data, mode, chunk)
