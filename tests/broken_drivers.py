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
