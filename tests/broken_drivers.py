"""Deliberately broken drivers: the conformance suite must catch each one, by name.

Each is the local driver with one fault of a kind real drivers have had.
"""

from __future__ import annotations

import dataclasses
import errno
import os

from drivers import DirEntry, Handle, StatResult
from drivers.local import LocalDriver


class StatSizeZero(LocalDriver):
    """stat reports size 0, as a listing-based FTP stat might."""

    name = "stat-size-zero"

    def stat(self, path: str) -> StatResult:
        return dataclasses.replace(super().stat(path), st_size=0)


class ReaddirDropsDotfiles(LocalDriver):
    """readdir hides names starting with '.', as nginx's autoindex does."""

    name = "readdir-drops-dotfiles"

    def readdir(self, path: str) -> list[DirEntry]:
        return [e for e in super().readdir(path) if not e.name.startswith(".")]


class RenameCopies(LocalDriver):
    """rename copies the file then deletes the old name: open handles keep the old object."""

    name = "rename-copies"

    def rename(self, old: str, new: str) -> None:
        if self.lstat(old).is_reg():
            self.write_file(new, self.read_file(old))
            self.unlink(old)
        else:
            super().rename(old, new)


class PwriteIgnoresOffset(LocalDriver):
    """pwrite appends at the end whatever the offset."""

    name = "pwrite-ignores-offset"

    def pwrite(self, handle: Handle, data: bytes, offset: int) -> int:
        return super().pwrite(handle, data, self.fstat(handle).st_size)


class WrongErrno(LocalDriver):
    """A missing file is reported as permission denied (a bare FTP 550, uninterviewed)."""

    name = "wrong-errno"

    def stat(self, path: str) -> StatResult:
        try:
            return super().stat(path)
        except FileNotFoundError:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), path) from None


class NotADriver:
    """Not a driver at all: the suite refuses it with a usage error."""


class PreadOffByOne(LocalDriver):
    """pread at a non-zero offset starts one byte early (an off-by-one in a seek)."""

    name = "pread-off-by-one"

    def pread(self, handle: Handle, size: int, offset: int) -> bytes:
        return super().pread(handle, size, max(offset - 1, 0))


class AppendIgnored(LocalDriver):
    """O_APPEND is dropped at open: appends overwrite at the offset asked."""

    name = "append-ignored"

    def open(self, path: str, flags: int, mode: int = 0o666) -> Handle:
        return super().open(path, flags & ~os.O_APPEND, mode)


class ReadPastEndFails(LocalDriver):
    """pread past the end of the file fails (an HTTP 416 taken for an error)."""

    name = "read-past-end-fails"

    def pread(self, handle: Handle, size: int, offset: int) -> bytes:
        if offset > self.fstat(handle).st_size:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return super().pread(handle, size, offset)


class CreateModeIgnored(LocalDriver):
    """The mode asked at create is not sent: files 0644, directories 0755."""

    name = "create-mode-ignored"

    def open(self, path: str, flags: int, mode: int = 0o666) -> Handle:
        return super().open(path, flags, 0o644)

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        super().mkdir(path, 0o755)


class MissingParentWrongErrno(LocalDriver):
    """Creating in a missing directory says EACCES (a bare 550), not ENOENT."""

    name = "missing-parent-wrong-errno"

    def open(self, path: str, flags: int, mode: int = 0o666) -> Handle:
        try:
            return super().open(path, flags, mode)
        except FileNotFoundError:
            if flags & os.O_CREAT:
                raise OSError(errno.EACCES, os.strerror(errno.EACCES), path) from None
            raise


class ListingDropsLongNames(LocalDriver):
    """readdir leaves out names longer than 200 bytes (a fixed-size listing buffer)."""

    name = "listing-drops-long-names"

    def readdir(self, path: str) -> list[DirEntry]:
        return [e for e in super().readdir(path) if len(os.fsencode(e.name)) <= 200]


class RenameIntoFileWrongErrno(LocalDriver):
    """rename onto a path below a file says ENOENT (a server that reports only "not
    found"), where Linux says ENOTDIR."""

    name = "rename-into-file-wrong-errno"

    def rename(self, old: str, new: str) -> None:
        try:
            super().rename(old, new)
        except NotADirectoryError:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), new) from None


class CloseStampsTheClock(LocalDriver):
    """Closing a handle that wrote gives the file the time of the close, as an upload at
    close does: times set while it was open are lost."""

    name = "close-stamps-the-clock"

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        super().__init__(root)
        self._written: dict[int, str] = {}

    def open(self, path: str, flags: int, mode: int = 0o666) -> Handle:
        handle = super().open(path, flags, mode)
        if flags & os.O_ACCMODE != os.O_RDONLY:
            self._written[int(handle)] = path
        return handle

    def close(self, handle: Handle) -> None:
        path = self._written.pop(int(handle), None)
        super().close(handle)
        if path is not None:
            self.utimens(path)
