"""The interview: turn SFTP's coarse status codes into the errno POSIX would give.

Strategy: an SFTP v3 server has nine status codes for the hundred-odd errno
values, and OpenSSH's ``errno_to_portable()`` decides the folding:

    ENOENT, ENOTDIR, EBADF, ELOOP      -> NO_SUCH_FILE (2)
    EPERM, EACCES, EFAULT              -> PERMISSION_DENIED (3)
    ENAMETOOLONG, EINVAL               -> BAD_MESSAGE (5)
    ENOSYS                             -> OP_UNSUPPORTED (8)
    everything else (EEXIST, EISDIR,
    ENOTEMPTY, EXDEV, ENOSPC, ...)     -> FAILURE (4)

So a NO_SUCH_FILE or a FAILURE is a question, not an answer. The interviewer
asks the server what Linux would have checked (does the name exist, is it a
directory, is its parent one, is a symlink chain a loop, is the directory
empty) and answers with the errno the kernel would have chosen. Every follow-up
request is a real round trip, counted against the operation that needed it,
and none of them changes anything on the server. When the answers do not
explain the failure (the server changed under us, or a reason SFTP cannot
show such as ENOSPC), the answer is EIO, never a guess dressed as precise.
"""

from __future__ import annotations

import errno
import os
import posixpath
from typing import Protocol

from drivers._interface import StatResult
from drivers.sftp._shell import (
    ERRNO_BY_STATUS,
    SFTP_BAD_MESSAGE,
    SFTP_FAILURE,
    SFTP_NO_SUCH_FILE,
    SFTP_PERMISSION_DENIED,
    SftpStatus,
)


class Witness(Protocol):
    """What the interviewer may ask the server: plain questions that are never interviewed."""

    def try_lstat(self, path: str) -> StatResult | None: ...

    def try_stat(self, path: str) -> StatResult | None: ...

    def try_readlink(self, path: str) -> str | None: ...

    def is_empty_dir(self, path: str) -> bool: ...

    def parent_of(self, path: str) -> str: ...


__all__ = ["Interviewer", "Witness"]

#: Linux gives up resolving after this many symlinks (MAXSYMLINKS).
MAX_SYMLINKS = 40
NAME_MAX = 255
PATH_MAX = 4096
#: Requests that follow a final symlink, as the syscall behind them does.
_FOLLOWING = frozenset({"stat", "open", "opendir", "setstat", "truncate", "read", "write"})
#: Requests that need the final name to be a directory.
_NEED_DIRECTORY = frozenset({"opendir", "rmdir"})


class Interviewer:
    """Follow-up questions for one driver; see the module docstring."""

    def __init__(self, driver: Witness) -> None:
        self.driver = driver

    def explain(
        self, why: str, path: str, status: SftpStatus, *, other: str | None = None, flags: int = 0
    ) -> int:
        """The errno for ``status``, answered by request kind ``why`` on ``path``."""
        if status.code == SFTP_PERMISSION_DENIED and why == "link":
            # EPERM and EACCES share PERMISSION_DENIED; link(2) of a directory is EPERM.
            source = self._quietly_lstat(path)
            return errno.EPERM if source is not None and source.is_dir() else errno.EACCES
        if status.code not in (SFTP_NO_SUCH_FILE, SFTP_FAILURE, SFTP_BAD_MESSAGE):
            return ERRNO_BY_STATUS.get(status.code, errno.EIO)
        try:
            if status.code == SFTP_BAD_MESSAGE:
                return self._bad_message(why, path, other)
            if why == "rename" and other is not None:
                return self._rename(path, other)
            if why in ("link", "symlink"):
                return self._make_name(why, path, other, status)
            if status.code == SFTP_NO_SUCH_FILE:
                return self._missing(why, path)
            return self._failure(why, path, flags)
        except SftpStatus as inner:  # the follow-up itself was refused: that is the answer
            return ERRNO_BY_STATUS.get(inner.code, errno.EIO)

    def _quietly_lstat(self, path: str) -> StatResult | None:
        try:
            return self.driver.try_lstat(path)
        except SftpStatus:
            return None

    # -- NO_SUCH_FILE: ENOENT, ENOTDIR or ELOOP ---------------------------------------------

    def _missing(self, why: str, path: str) -> int:
        if why in _NEED_DIRECTORY:
            found = self.driver.try_lstat(path) if why == "rmdir" else self.driver.try_stat(path)
            if found is not None and not found.is_dir():
                return errno.ENOTDIR
        return self.why_missing(path, follow=why in _FOLLOWING)

    def why_missing(self, path: str, *, follow: bool, hops: int = 0) -> int:
        """Why ``path`` cannot be found: ENOENT, ENOTDIR (a component is a file) or ELOOP.

        ``hops`` counts the symlinks followed so far: like the kernel, the interview gives up
        with ELOOP after MAX_SYMLINKS of them, wherever in the path they are.
        """
        if path in ("", "/"):
            return errno.ENOENT
        if hops > MAX_SYMLINKS:
            return errno.ELOOP
        found = self.driver.try_lstat(path)
        if found is not None:
            if follow and found.is_lnk():
                return self._chain(path, hops)
            return errno.ENOENT  # it exists after all: it changed, or is hidden from us
        parent = self.driver.parent_of(path)
        above = self.driver.try_stat(parent)
        if above is None:
            return self.why_missing(parent, follow=True, hops=hops)
        return errno.ENOENT if above.is_dir() else errno.ENOTDIR

    def _chain(self, path: str, hops: int) -> int:
        """Follow a symlink chain that the server could not: ELOOP or a dangling end."""
        seen = {path}
        current = path
        while hops <= MAX_SYMLINKS:
            hops += 1
            text = self.driver.try_readlink(current)
            if text is None:
                return errno.ENOENT
            current = posixpath.normpath(posixpath.join(posixpath.dirname(current), text))
            if current in seen:
                return errno.ELOOP
            seen.add(current)
            found = self.driver.try_lstat(current)
            if found is None:
                return self.why_missing(current, follow=True, hops=hops)
            if not found.is_lnk():
                return errno.ENOENT
        return errno.ELOOP

    # -- FAILURE: EEXIST, EISDIR, ENOTEMPTY, ... ------------------------------------------------

    def _failure(self, why: str, path: str, flags: int) -> int:
        found = self.driver.try_lstat(path)
        if why == "mkdir":
            return errno.EEXIST if found is not None else errno.EIO
        if why == "unlink":
            return errno.EISDIR if found is not None and found.is_dir() else errno.EIO
        if why == "rmdir":
            return self._rmdir(path, found)
        if why == "open":
            return self._open(path, found, flags)
        if why in ("read", "write", "truncate", "setstat"):
            target = self.driver.try_stat(path) if found is not None else None
            if target is not None and target.is_dir() and why in ("read", "write", "truncate"):
                return errno.EISDIR
        return errno.EIO

    def _rmdir(self, path: str, found: StatResult | None) -> int:
        if found is None:
            return self.why_missing(path, follow=False)
        if not found.is_dir():
            return errno.ENOTDIR
        if path.rstrip("/") in ("", "/."):
            return errno.EBUSY
        return errno.EIO if self.driver.is_empty_dir(path) else errno.ENOTEMPTY

    def _open(self, path: str, found: StatResult | None, flags: int) -> int:
        if found is not None and flags & os.O_CREAT and flags & os.O_EXCL:
            return errno.EEXIST
        target = self.driver.try_stat(path) if found is not None else None
        writes = flags & os.O_ACCMODE != os.O_RDONLY or flags & (os.O_CREAT | os.O_TRUNC)
        if target is not None and target.is_dir() and writes:
            return errno.EISDIR  # Linux refuses O_CREAT on a directory even for reading
        if found is None:
            return self.why_missing(path, follow=True)
        return errno.EIO

    # -- two names: rename, link, symlink ----------------------------------------------------------

    def _rename(self, old: str, new: str) -> int:
        source = self.driver.try_lstat(old)
        if source is None:
            # Linux resolves both names' directories before it looks the old name up.
            for name in (old, new):
                problem = self._parent_problem(name)
                if problem is not None:
                    return problem
            return errno.ENOENT
        target = self.driver.try_lstat(new)
        if target is None:
            parent = self.driver.parent_of(new)
            above = self.driver.try_stat(parent)
            if above is None:
                return self.why_missing(parent, follow=True)
            if not above.is_dir():
                return errno.ENOTDIR
            if source.is_dir() and (new + "/").startswith(old.rstrip("/") + "/"):
                return errno.EINVAL
            return errno.EIO
        if source.is_dir():
            if (new + "/").startswith(old.rstrip("/") + "/"):
                return errno.EINVAL
            if not target.is_dir():
                return errno.ENOTDIR
            return errno.EIO if self.driver.is_empty_dir(new) else errno.ENOTEMPTY
        if target.is_dir():
            return errno.EISDIR
        return errno.EEXIST  # plain RENAME (no posix-rename) refuses an existing target

    def _make_name(self, why: str, path: str, other: str | None, status: SftpStatus) -> int:
        """link(old=path, new=other) or symlink(target, linkpath=path)."""
        if why == "link":
            assert other is not None
            old, new = path, other
            source = self.driver.try_lstat(old)
            if source is None:
                return self.why_missing(old, follow=False)
            if self.driver.try_lstat(new) is not None:
                return errno.EEXIST
            # Linux resolves the new name's directory before it refuses a directory.
            answer = self._missing_parent(new, status)
            return errno.EPERM if source.is_dir() and answer == errno.EIO else answer
        if self.driver.try_lstat(path) is not None:
            return errno.EEXIST
        return self._missing_parent(path, status)

    def _parent_problem(self, path: str) -> int | None:
        """ENOENT or ENOTDIR when ``path``'s directory cannot be reached, else None."""
        parent = self.driver.parent_of(path)
        if parent in ("", "/"):
            return None
        above = self.driver.try_stat(parent)
        if above is None:
            return self.why_missing(parent, follow=True)
        return None if above.is_dir() else errno.ENOTDIR

    def _missing_parent(self, path: str, status: SftpStatus) -> int:
        parent = self.driver.parent_of(path)
        above = self.driver.try_stat(parent)
        if above is None:
            return self.why_missing(parent, follow=True)
        if not above.is_dir():
            return errno.ENOTDIR
        return errno.EIO  # the parent is a directory: the cause is elsewhere

    # -- BAD_MESSAGE: EINVAL or ENAMETOOLONG -------------------------------------------------------

    @staticmethod
    def _bad_message(why: str, path: str, other: str | None) -> int:
        for name in (path, other or ""):
            encoded = os.fsencode(name)
            if len(encoded) >= PATH_MAX or any(len(p) > NAME_MAX for p in encoded.split(b"/")):
                return errno.ENAMETOOLONG
        return errno.EINVAL
