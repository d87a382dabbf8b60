"""The XRootD driver: POSIX calls through the ``XRootD`` Python bindings.

URL: ``root://host:port//path`` (or ``xroot://``; port 1094 by default); the
agent's prefix is ``/xrootd/HOST:PORT/path``, because ``/root`` is the home
directory. Login is anonymous (whatever the server's security config allows).
The POSIX calls are here; one request and its errno in ``drivers._xrootd_requests``,
the table of open handles in ``drivers._xrootd_handles``.

Every call passes a timeout to the bindings (whole seconds, rounded up), so
nothing waits forever; an expired request is ETIMEDOUT. Reconnecting is the
bindings' own: after a broken connection XrdCl reconnects and resends path
requests by itself, out of the driver's sight, so the connection counter does
not show the reconnect; the driver sets how often and how long it tries, and
reopens open files itself, checking the file's id
(``drivers._xrootd_recovery``). The bindings keep one
pooled connection per server for the whole process; the driver counts one
connection when it first uses its server. They expose no socket counters, so
bytes are counted from the protocol's framing: a 24-byte request header plus
the path and payload sent, an 8-byte response header plus the body received.

Errors. The server answers ``[kXR code] Unable to <verb> <path>; <strerror>``.
kXR_FSError (3005) alone stands for ENOTDIR, ENOTEMPTY, ELOOP and more, so the
driver reads the server's strerror text (a Linux server's own words) and only
falls back to the kXR code table, then to an interview, when the text is not
one it knows.

What XRootD cannot do, or does differently (measured against xrootd 5.5.3):

- symlinks are invisible: the server follows them everywhere (stat, open,
  listings), so lstat is stat, ``symlink``/``link``/``readlink`` fail with
  ENOTSUP, ``O_NOFOLLOW`` cannot be honoured (ignored: there is no way to ask),
  and a dangling symlink is ENOENT; a listing with stat information omits
  dangling symlinks, so readdir lists names without stat (one round trip) and
  types with stat (a second), and names only the first knows are UNKNOWN;
- ``mkdir`` of an existing directory, ``rmdir`` of a missing one and ``rm``
  of an empty directory succeed on the server, and create and rename make missing parent directories: the
  driver stats first (the path, or the parent) and answers EEXIST, ENOENT,
  ENOTDIR or EISDIR as Linux would (one more round trip each, not atomic);
- the server lets one handle at a time have a file open for writing and then
  refuses any other open of it (kXR_FileLocked): the driver's own handles on
  one path share one server handle (reads and writes at explicit offsets, so
  sharing is safe), but another client, or a new file under a name an open
  file had before a rename or unlink, gets EBUSY (a reader of it, if missing: ENOENT);
- directory listings are newline-separated text: a name holding a newline
  breaks the listing (EIO); they cut a 255-byte name to 254 bytes, which name
  nothing: no name over 254 bytes is made (ENAMETOOLONG), and a listing with a
  cut name (made behind the server) is EIO, never a name that is not there;
- ``utimens`` fails with ENOTSUP (the protocol cannot set times); chmod
  carries the nine rwx bits only: setuid/setgid/sticky fail with ENOTSUP;
- open has no "create if missing, keep if present": ``O_CREAT`` without
  ``O_EXCL`` or ``O_TRUNC`` stats first (not atomic); ``O_TRUNC`` alone is an
  open and a truncate; ``O_APPEND`` writes at the size fstat reports just
  before (two round trips, not atomic against other writers); the server
  refuses to open a directory, so a read-only open of one gives a handle
  that only fstat and close accept (pread: EISDIR), as Linux would;
- stat has whole-second times; ``st_nlink``, ``st_blksize`` and ``st_blocks``
  are made up (named in ``synthesized``), as are uid/gid when the server's
  owner names are unknown here; ino and dev come from the server's id;
- statfs comes from the ``space`` query: block counts in 4 KiB units, inode
  counts unknown (0).
"""

from __future__ import annotations

import errno
import os
import posixpath
from contextlib import suppress
from typing import Any, Self

from drivers import _xrootd_recovery as recovery
from drivers._interface import (
    Capabilities,
    DirEntry,
    FileType,
    Handle,
    StatFS,
    StatResult,
    raise_errno,
)
from drivers._network import BROKEN_CONNECTION, recovery_budget
from drivers._url import Location
from drivers._xrootd_handles import XRootDHandles
from drivers._xrootd_recovery import OpenFile, SharedFile
from drivers._xrootd_replies import (
    BLOCK,
    IS_READABLE,
    IS_WRITABLE,
    LISTED_NAME_MAX,
    X_BIT_SET,
    errno_for_status,
    kind_of,
    stat_from_info,
)
from drivers._xrootd_requests import bindings

__all__ = ["XROOTD_PORT", "XRootDDriver", "errno_for_status"]

XROOTD_PORT = 1094
MAX_WRITE = 8 << 20  # bytes per kXR_write request
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)


def _process_umask() -> int:
    """This process's umask, read without changing it (the server applies none)."""
    with suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


#: Seconds of reconnecting after a connection broke (overridden by the environment).
DEFAULT_RECOVERY = 60.0
RECOVERY_ENV = "AVIARY_XROOTD_RECOVERY"


class XRootDDriver(XRootDHandles):
    """A client of the XRootD protocol through the ``XRootD`` bindings (PyPI ``xrootd``).

    Args:
        host: server address.
        port: server port (1094 by default).
        timeout: seconds to wait for any one request (rounded up to whole seconds).
        recovery: seconds spent reconnecting after a connection broke (None:
            ``$AVIARY_XROOTD_RECOVERY``, else 60; 0: fail at once). Open files are
            reopened and kept when the path still names the same file, else ESTALE.
    """

    name = "xrootd"
    url_schemes = ("root", "xroot")
    capabilities = Capabilities(
        symlinks=False,
        hard_links=False,
        utimens=False,
        time_resolution_ns=1_000_000_000,
        link_counts=False,
        name_max=LISTED_NAME_MAX,
        busy_names=True,
    )
    service = "xrootd"
    default_port = XROOTD_PORT

    def __init__(
        self,
        host: str,
        port: int = XROOTD_PORT,
        *,
        timeout: float = 30.0,
        recovery: float | None = None,
    ) -> None:
        budget = recovery_budget(recovery, RECOVERY_ENV, DEFAULT_RECOVERY)
        super().__init__(host, port, timeout=timeout, recovery=budget)
        self._files: dict[int, OpenFile] = {}
        self._shared: dict[str, SharedFile] = {}
        self._next_handle = 3
        self._umask = _process_umask()

    @classmethod
    def from_location(cls, location: Location, *, timeout: float = 30.0) -> Self:
        if not location.host:
            raise ValueError(f"xrootd URL needs a host: {location}")
        return cls(location.host, location.port or XROOTD_PORT, timeout=timeout)

    # -- metadata ----------------------------------------------------------------------------------

    def stat(self, path: str) -> StatResult:
        with self._op("stat"):
            return self._stat(path)

    def lstat(self, path: str) -> StatResult:
        """The server follows symlinks: this is stat (see the module docstring)."""
        with self._op("lstat"):
            return self._stat(path)

    def fstat(self, handle: Handle) -> StatResult:
        with self._op("fstat"):
            entry = self._entry(handle)
            if entry.shared is None:
                return self._stat(entry.path)
            return stat_from_info(self._call(entry.shared.file.stat, True, path=entry.path))

    def access(self, path: str, mode: int) -> None:
        with self._op("access"):
            info = self._checked(self._filesystem().stat, path, path=path, why="stat")
            flags = int(info.flags)
            wanted = {os.R_OK: IS_READABLE, os.W_OK: IS_WRITABLE, os.X_OK: X_BIT_SET}
            if any(mode & bit and not flags & flag for bit, flag in wanted.items()):
                raise_errno(errno.EACCES, path)

    def statfs(self, path: str) -> StatFS:
        with self._op("statfs"):
            from XRootD.client.flags import QueryCode

            reply = self._call(self._filesystem().query, QueryCode.SPACE, path, path=path)
            text = reply.decode("ascii", "replace").rstrip("\0") if reply else ""
            fields = dict(part.split("=", 1) for part in text.split("&") if "=" in part)
            space = int(fields.get("oss.space", "0"))
            free = int(fields.get("oss.free", "0"))
            return StatFS(0, BLOCK, space // BLOCK, free // BLOCK, free // BLOCK, 0, 0)

    def chmod(self, path: str, mode: int) -> None:
        with self._op("chmod"):
            if mode & 0o7000:
                raise OSError(errno.ENOTSUP, "xrootd chmod carries rwx bits only", path)
            self._checked(self._filesystem().chmod, path, mode & 0o777, path=path, why="chmod")

    def utimens(self, path: str, times_ns: tuple[int, int] | None = None) -> None:
        with self._op("utimens"):
            raise OSError(errno.ENOTSUP, "the XRootD protocol cannot set file times", path)

    # -- open files ------------------------------------------------------------------------------------

    def open(self, path: str, flags: int, mode: int = 0o666) -> Handle:
        with self._op("open"):
            if flags & os.O_PATH or (_O_TMPFILE and flags & _O_TMPFILE == _O_TMPFILE):
                raise OSError(errno.EINVAL, "xrootd cannot open with O_PATH or O_TMPFILE", path)
            writing = flags & os.O_ACCMODE != os.O_RDONLY
            if flags & os.O_DIRECTORY:
                if not self._stat(path).is_dir():
                    raise_errno(errno.ENOTDIR, path)
                if writing:
                    raise_errno(errno.EISDIR, path)
                return self._remember(path, flags, None)
            shared = self._shared.get(path)
            updating = writing or bool(flags & (os.O_CREAT | os.O_TRUNC))
            if shared is not None and updating and not shared.writable:
                # Readers hold it: the server would refuse a writer, so reopen for update.
                self._call(shared.file.close, path=path)
                shared.file = self._open_file(path, flags & ~os.O_EXCL, 0o600, True)
                shared.writable, shared.identity = True, recovery.file_id(shared.file)
                shared.refs += 1
                return self._remember(path, flags, shared)
            if shared is not None:
                if flags & os.O_CREAT and flags & os.O_EXCL:
                    raise_errno(errno.EEXIST, path)
                if flags & os.O_TRUNC:
                    self._call(shared.file.truncate, 0, path=path)
                shared.refs += 1
                return self._remember(path, flags, shared)
            file = self._open_file(path, flags, mode & ~self._umask & 0o777, writing)
            if file is None:
                return self._remember(path, flags, None)
            shared = self._shared[path] = SharedFile(
                file, path, updating, 1, recovery.file_id(file)
            )
            return self._remember(path, flags, shared)

    def _open_file(self, path: str, flags: int, mode: int, writing: bool) -> Any:
        from XRootD.client.flags import OpenFlags

        base = OpenFlags.UPDATE if writing or flags & (os.O_CREAT | os.O_TRUNC) else OpenFlags.READ
        create = bool(flags & os.O_CREAT)
        if create:  # the server makes missing parent directories on create: POSIX does not
            self._parent_must_be_directory(path)
            self._must_list_whole(path)
        if create and flags & os.O_EXCL:
            base |= OpenFlags.NEW
        elif create and flags & os.O_TRUNC:
            base |= OpenFlags.DELETE
        elif create:  # no "create if missing" flag: ask first, then create or open
            try:
                self._checked(self._filesystem().stat, path, path=path, why="stat")
            except FileNotFoundError:
                base |= OpenFlags.NEW
        self._filesystem()
        file = recovery.without_own_recovery(bindings().File())
        try:
            self._call(file.open, self._url(path), base, mode, path=path)
        except IsADirectoryError:
            if writing or flags & (os.O_CREAT | os.O_TRUNC):
                raise
            return None  # Linux opens a directory read-only; so do we, for fstat
        except OSError as exc:  # busy: an unlinked file open for writing may hold the name
            if exc.errno == errno.EBUSY and not create:
                self._stat(path)  # ENOENT when there is no file to open
            raise
        if flags & os.O_TRUNC and not base & OpenFlags.DELETE:
            self._call(file.truncate, 0, path=path)
        return file

    def close(self, handle: Handle) -> None:
        with self._op("close"):
            entry = self._entry(handle)
            del self._files[int(handle)]
            shared = entry.shared
            if shared is not None:
                shared.refs -= 1
                if shared.refs > 0:
                    return  # another handle still uses the server's handle
                if self._shared.get(shared.path) is shared:
                    del self._shared[shared.path]
                try:
                    self._call(shared.file.close, path=entry.path)
                except OSError as exc:
                    # Each write was acknowledged when it returned: a close that cannot
                    # reach the server leaves nothing unsent.
                    if not self.recovery or exc.errno not in BROKEN_CONNECTION:
                        raise

    def pread(self, handle: Handle, size: int, offset: int) -> bytes:
        with self._op("pread"):
            if size < 0 or offset < 0:
                raise_errno(errno.EINVAL)
            entry, _ = self._file_of(handle)
            if entry.flags & os.O_ACCMODE == os.O_WRONLY:
                raise_errno(errno.EBADF)

            def attempt(entry: OpenFile, file: Any) -> bytes:
                data: bytes = self._call(file.read, offset, size, path=entry.path) or b""
                return data

            return self._on_file("pread", handle, attempt)

    def pwrite(self, handle: Handle, data: bytes, offset: int) -> int:
        with self._op("pwrite"):
            if offset < 0:
                raise_errno(errno.EINVAL)
            entry, _ = self._file_of(handle)
            if entry.flags & os.O_ACCMODE == os.O_RDONLY:
                raise_errno(errno.EBADF)
            appending = bool(entry.flags & os.O_APPEND)

            def attempt(entry: OpenFile, file: Any) -> int:
                at = offset
                if appending:  # no append mode in the protocol: write at the end
                    at = int(self._call(file.stat, True, path=entry.path).size)
                view = memoryview(data)
                total = 0
                while True:  # a zero-byte write still asks the server
                    piece = bytes(view[total : total + MAX_WRITE])
                    self._call(file.write, piece, at + total, path=entry.path, sent=len(piece))
                    total += len(piece)
                    if total >= len(data):
                        return total

            # An append in flight is not sent again: its first copy may have landed.
            return self._on_file("pwrite", handle, attempt, replay=not appending)

    def fsync(self, handle: Handle) -> None:
        with self._op("fsync"):
            self._on_file(
                "fsync", handle, lambda entry, file: self._call(file.sync, path=entry.path)
            )

    def ftruncate(self, handle: Handle, length: int) -> None:
        with self._op("ftruncate"):
            if length < 0:
                raise_errno(errno.EINVAL)
            self._on_file(
                "ftruncate", handle,
                lambda entry, file: self._call(file.truncate, length, path=entry.path),
            )  # fmt: skip

    def truncate(self, path: str, length: int) -> None:
        with self._op("truncate"):
            if length < 0:
                raise_errno(errno.EINVAL, path)
            self._checked(self._filesystem().truncate, path, length, path=path, why="truncate")

    # -- the namespace --------------------------------------------------------------------------------

    def readdir(self, path: str) -> list[DirEntry]:
        with self._op("readdir"):
            from XRootD.client.flags import DirListFlags

            fs = self._filesystem()
            names = self._checked(fs.dirlist, path, DirListFlags.NONE, path=path, why="readdir")
            # A listing with stat omits dangling symlinks; the plain one keeps them.
            typed = self._checked(fs.dirlist, path, DirListFlags.STAT, path=path, why="readdir")
            kinds = {e.name: kind_of(e.statinfo) for e in (typed.dirlist if typed else [])}
            # A name cut to 254 bytes (a dangling symlink is not in ``kinds``) names nothing.
            for name in (n for n in kinds if len(os.fsencode(n)) == LISTED_NAME_MAX):
                try:
                    self._stat(posixpath.join(path, name))
                except FileNotFoundError:
                    raise OSError(errno.EIO, "the listing cut a long name", path) from None
            return [
                DirEntry(e.name, kinds.get(e.name, FileType.UNKNOWN))
                for e in (names.dirlist if names else [])
                if e.name not in (".", "..")
            ]

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        with self._op("mkdir"):
            from XRootD.client.flags import MkDirFlags

            # The server says yes to mkdir of an existing directory: ask first.
            try:
                self._checked(self._filesystem().stat, path, path=path, why="stat")
            except FileNotFoundError:
                pass
            else:
                raise_errno(errno.EEXIST, path)
            self._must_list_whole(path)
            perms = mode & ~self._umask & 0o777
            self._checked(
                self._filesystem().mkdir, path, MkDirFlags.NONE, perms, path=path, why="mkdir"
            )

    def rmdir(self, path: str) -> None:
        with self._op("rmdir"):
            # The server says yes to rmdir of a missing directory: ask first.
            if not self._stat(path).is_dir():
                raise_errno(errno.ENOTDIR, path)
            self._checked(self._filesystem().rmdir, path, path=path, why="rmdir")

    def unlink(self, path: str) -> None:
        with self._op("unlink"):
            # The server's rm removes an empty directory: ask first, as unlink(2) must not.
            if self._stat(path).is_dir():
                raise_errno(errno.EISDIR, path)
            self._checked(self._filesystem().rm, path, path=path, why="unlink")
            self._forget_name(path)

    def rename(self, old: str, new: str) -> None:
        with self._op("rename"):
            # The server makes the new name's missing parents; POSIX says ENOENT.
            try:
                self._parent_must_be_directory(new)
            except OSError:
                self._parent_must_be_directory(old)  # Linux walks to both parents first
                raise
            self._must_list_whole(new)
            self._checked(self._filesystem().mv, old, new, path=old, why="rename")
            self._move_names(old, new)

    def link(self, old: str, new: str) -> None:
        with self._op("link"):
            raise OSError(errno.ENOTSUP, "the XRootD protocol has no hard links", old)

    def symlink(self, target: str, linkpath: str) -> None:
        with self._op("symlink"):
            raise OSError(errno.ENOTSUP, "the XRootD protocol cannot make symlinks", linkpath)

    def readlink(self, path: str) -> str:
        with self._op("readlink"):
            raise OSError(
                errno.ENOTSUP, "the XRootD server follows symlinks: none is visible", path
            )
