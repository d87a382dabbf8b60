"""The SFTP driver: POSIX calls as SFTP v3 requests over one SSH connection.

URL: ``sftp://user@host:port/path`` (user defaults to the local login name,
port to 22). Paths are absolute on the server. Login is by public key only:
``$AVIARY_SFTP_IDENTITY`` names the private key, else ``~/.ssh/id_*`` and the
ssh agent are tried. The server's host key must already be in
``$AVIARY_SFTP_KNOWN_HOSTS`` (else ``~/.ssh/known_hosts``): an unknown or
changed key is refused with EACCES, never added silently.

Every call is one SFTP request (one round trip) unless it says otherwise;
files are read and written at explicit offsets (no read-ahead, no write-behind,
no cached position), so what the program sees is what the server has.

The interview. OpenSSH's ``errno_to_portable()`` folds ENOTDIR and ELOOP into
NO_SUCH_FILE and every errno it does not list (EEXIST, EISDIR, ENOTEMPTY,
EXDEV, ...) into FAILURE. Before answering, the driver asks follow-up
questions (lstat/stat of the path, its parent, the other name of a rename),
each counted as a round trip of the operation that needed it.

What SFTP v3 cannot do (each fails loudly or is listed in ``synthesized``):

- stat carries size, uid, gid, mode, atime and mtime in whole seconds only:
  st_ino, st_dev, st_nlink, st_ctime, st_blksize and st_blocks are made up
  (ino from a hash of the path, nlink 1, ctime = mtime, blocks from the size)
  and named in ``StatResult.synthesized``; hard links are therefore not
  recognisable as the same inode;
- utimens has whole-second resolution (the sub-second part is dropped);
- ``rename`` replaces its target only through ``posix-rename@openssh.com``;
  without the extension the plain RENAME refuses an existing target (EEXIST);
- ``link`` needs ``hardlink@openssh.com`` and ``statfs`` needs
  ``statvfs@openssh.com``, ``fsync`` needs ``fsync@openssh.com`` (else ENOTSUP);
- open follows symlinks on the server; ``O_NOFOLLOW`` and ``O_DIRECTORY`` are
  checked with an lstat/stat first (one more round trip, not atomic);
  ``O_PATH`` and ``O_TMPFILE`` fail with EINVAL;
- access() is judged by the mode bits of the server's answer plus a trial
  open for R_OK/W_OK on files; the server's real permission check is only
  made by the operation itself.
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
import time
from contextlib import suppress
from typing import Any

from paramiko.sftp import (
    CMD_CLOSE,
    CMD_DATA,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_FSETSTAT,
    CMD_FSTAT,
    CMD_HANDLE,
    CMD_LSTAT,
    CMD_MKDIR,
    CMD_NAME,
    CMD_OPEN,
    CMD_OPENDIR,
    CMD_READ,
    CMD_READLINK,
    CMD_REMOVE,
    CMD_RENAME,
    CMD_RMDIR,
    CMD_SETSTAT,
    CMD_STAT,
    CMD_SYMLINK,
    CMD_WRITE,
    int64,
)
from paramiko.sftp_attr import SFTPAttributes

from drivers._interface import (
    Capabilities,
    DirEntry,
    Handle,
    StatFS,
    StatResult,
    raise_errno,
)
from drivers._network import (
    BROKEN_CONNECTION,
    recoverable,
)
from drivers.sftp._recovery import WITNESS, witness_after_truncate
from drivers.sftp._replies import ReplyReader
from drivers.sftp._requests import (
    _FLAG_READ,
    _FLAG_WRITE,
    _O_TMPFILE,
    MAX_CHUNK,
    SFTP_PORT,
    SftpRequests,
    _OpenFile,
    _sftp_flags,
)
from drivers.sftp._shell import (
    SFTP_EOF,
    SftpStatus,
)

__all__ = ["SFTP_PORT", "SftpDriver"]


class SftpDriver(SftpRequests):
    """A client of SFTP v3 (OpenSSH's sftp-server and its extensions), via paramiko.

    Args:
        host: server address.
        port: SSH port (22 by default).
        user: login name (the local user by default).
        timeout: seconds to wait for any one network event.
        recovery: seconds spent reconnecting after a connection that worked broke
            (None: ``$AVIARY_SFTP_RECOVERY``, else 60; 0: fail at once). Path
            operations are sent again on the new connection (the non-idempotent
            ones treat the error their replay gets when the first copy did the
            work as success: ``drivers._network.APPLIED_IF_REPLAYED``); exclusive
            creates are not replayed. Open handles are reopened by path and kept
            only when the file still holds what they last read or wrote
            (``drivers.sftp._recovery``), else they answer ESTALE until closed;
            with recovery 0 they answer ESTALE after any reconnect.
    """

    name = "sftp"
    url_schemes = ("sftp",)
    capabilities = Capabilities(time_resolution_ns=1_000_000_000, link_counts=False)
    default_port = SFTP_PORT

    @recoverable
    def stat(self, path: str) -> StatResult:
        with self._op("stat"):
            return self._stat(CMD_STAT, path, "stat")

    @recoverable
    def lstat(self, path: str) -> StatResult:
        with self._op("lstat"):
            return self._stat(CMD_LSTAT, path, "lstat")

    def fstat(self, handle: Handle) -> StatResult:
        with self._op("fstat"):

            def attempt(entry: _OpenFile) -> StatResult:
                _, message = self._checked(
                    entry.path, CMD_FSTAT, entry.remote, why="fstat", handle_of=entry.generation
                )
                reader = ReplyReader(message, f"{self.describe()}: fstat {entry.path}")
                return self.to_stat(reader.attrs(), entry.path)

            return self._on_handle("fstat", handle, attempt)

    @recoverable
    def access(self, path: str, mode: int) -> None:
        with self._op("access"):
            st = self._stat(CMD_STAT, path, "stat")
            perms = stat_module.S_IMODE(st.st_mode)
            if mode & os.X_OK and not perms & 0o111:
                raise_errno(errno.EACCES, path)
            wanted = mode & (os.R_OK | os.W_OK)
            if not wanted:
                return
            if st.is_reg():  # a trial open is the server's own answer
                flags = {os.R_OK: _FLAG_READ, os.W_OK: _FLAG_WRITE}
                sftp_flags = sum(v for k, v in flags.items() if wanted & k)
                _, message = self._checked(
                    path, CMD_OPEN, self._wire(path), sftp_flags, SFTPAttributes(), why="open"
                )
                with suppress(SftpStatus):
                    self.call(CMD_CLOSE, ReplyReader(message, path).string())
            elif (wanted & os.R_OK and not perms & 0o444) or (
                wanted & os.W_OK and not perms & 0o222
            ):
                raise_errno(errno.EACCES, path)

    @recoverable
    def statfs(self, path: str) -> StatFS:
        with self._op("statfs"):
            if not self._connect().has_extension("statvfs@openssh.com"):
                raise OSError(errno.ENOTSUP, "server lacks statvfs@openssh.com", path)
            reply, message = self._checked(
                path, CMD_EXTENDED, "statvfs@openssh.com", self._wire(path), why="stat"
            )
            assert reply == CMD_EXTENDED_REPLY, reply
            bsize, frsize, blocks, bfree, bavail, files, ffree = (
                message.get_int64() for _ in range(7)
            )
            return StatFS(0, frsize or bsize, blocks, bfree, bavail, files, ffree)

    def _setstat(self, path: str, attrs: SFTPAttributes, why: str) -> None:
        self._checked(path, CMD_SETSTAT, self._wire(path), attrs, why=why)

    @recoverable
    def chmod(self, path: str, mode: int) -> None:
        with self._op("chmod"):
            attrs = SFTPAttributes()
            attrs.st_mode = mode & 0o7777
            self._setstat(path, attrs, "setstat")

    @recoverable
    def utimens(self, path: str, times_ns: tuple[int, int] | None = None) -> None:
        with self._op("utimens"):
            attrs = SFTPAttributes()
            if times_ns is None:
                attrs.st_atime = attrs.st_mtime = int(time.time())
            else:  # SFTP v3 carries whole seconds: the sub-second part is lost
                attrs.st_atime, attrs.st_mtime = (t // 1_000_000_000 for t in times_ns)
            self._setstat(path, attrs, "setstat")

    # -- open files ----------------------------------------------------------------------------

    def open(self, path: str, flags: int, mode: int = 0o666) -> Handle:
        if flags & os.O_CREAT and flags & os.O_EXCL:
            return self._open(path, flags, mode)  # a replay's EEXIST could be someone else's
        return self._recovering("open", lambda: self._open(path, flags, mode))

    def _open(self, path: str, flags: int, mode: int) -> Handle:
        with self._op("open"):
            if flags & os.O_PATH or (_O_TMPFILE and flags & _O_TMPFILE == _O_TMPFILE):
                raise OSError(errno.EINVAL, "sftp cannot open with O_PATH or O_TMPFILE", path)
            if flags & os.O_NOFOLLOW:
                with suppress(FileNotFoundError):
                    if self._stat(CMD_LSTAT, path, "lstat").is_lnk():
                        raise_errno(errno.ELOOP, path)
            if flags & os.O_DIRECTORY and not self._stat(CMD_STAT, path, "stat").is_dir():
                raise_errno(errno.ENOTDIR, path)
            attrs = SFTPAttributes()
            if flags & os.O_CREAT:
                attrs.st_mode = mode & 0o7777
            sftp_flags = _sftp_flags(flags)
            reply, message = self._checked(
                path, CMD_OPEN, self._wire(path), sftp_flags, attrs, why="open", flags=flags
            )
            assert reply == CMD_HANDLE, reply
            number = self._next_handle
            self._next_handle += 1
            remote = ReplyReader(message, f"{self.describe()}: open {path}").string()
            self._files[number] = _OpenFile(path, flags, remote, self._generation)
            return Handle(number)

    def close(self, handle: Handle) -> None:
        with self._op("close"):
            entry = self._files.get(int(handle))
            if entry is not None and entry.generation != self._generation:
                del self._files[int(handle)]  # stale: its server handle died with the connection
                if self.recovery:
                    return  # every write was acknowledged one by one: nothing is left to send
                raise OSError(errno.ESTALE, "the connection was lost under this handle", entry.path)
            entry = self._file(handle)
            del self._files[int(handle)]
            try:
                self._checked(
                    entry.path, CMD_CLOSE, entry.remote, why="close", handle_of=entry.generation
                )
            except OSError as exc:
                # The connection broke under the close: the server's handle is gone with it,
                # and every write was acknowledged one by one, so nothing is left to send.
                if not self.recovery or exc.errno not in BROKEN_CONNECTION:
                    raise

    def pread(self, handle: Handle, size: int, offset: int) -> bytes:
        with self._op("pread"):
            if size < 0 or offset < 0:
                raise_errno(errno.EINVAL)
            return self._on_handle("pread", handle, lambda entry: self._pread(entry, size, offset))

    def _pread(self, entry: _OpenFile, size: int, offset: int) -> bytes:
        if entry.flags & os.O_ACCMODE == os.O_WRONLY:
            raise_errno(errno.EBADF)  # before the size: a zero-byte read asks the server nothing
        # A server answers at most one chunk per request: a full chunk means more may
        # follow, and pread(2) of a regular file is short only at end of file.
        pieces: list[bytes] = []
        total = 0
        while total < size:
            piece = self._pread_chunk(entry, min(size - total, MAX_CHUNK), offset + total)
            pieces.append(piece)
            total += len(piece)
            if len(piece) < MAX_CHUNK:
                break
        return b"".join(pieces)

    def _pread_chunk(self, entry: _OpenFile, size: int, offset: int) -> bytes:
        if size == 0:
            return b""
        try:
            reply, message = self.call(
                CMD_READ, entry.remote, int64(offset), min(size, MAX_CHUNK), path=entry.path,
                handle_of=entry.generation,
            )  # fmt: skip
        except SftpStatus as status:
            if status.code == SFTP_EOF:
                return b""
            code = self._interview.explain("read", entry.path, status)
            raise OSError(code, os.strerror(code), entry.path) from None
        assert reply == CMD_DATA, reply
        data = ReplyReader(message, f"{self.describe()}: read {entry.path}").string()
        if len(data) > min(size, MAX_CHUNK):
            raise OSError(
                errno.EPROTO,
                f"{self.describe()}: {len(data)} bytes came for a read of {min(size, MAX_CHUNK)}",
                entry.path,
            )
        if data:
            entry.witness = (offset, data[:WITNESS])
        return data

    def pwrite(self, handle: Handle, data: bytes, offset: int) -> int:
        with self._op("pwrite"):
            if offset < 0:
                raise_errno(errno.EINVAL)
            known = self._files.get(int(handle))
            appending = known is not None and bool(known.flags & os.O_APPEND)
            return self._on_handle(
                "pwrite", handle, lambda entry: self._pwrite(entry, data, offset),
                replay=not appending,
            )  # fmt: skip

    def _pwrite(self, entry: _OpenFile, data: bytes, offset: int) -> int:
        if entry.flags & os.O_ACCMODE == os.O_RDONLY:
            raise_errno(errno.EBADF)  # the server would refuse it with a status that is no errno
        view = memoryview(data)
        total = 0
        while True:  # one request per chunk; a zero-byte write still asks the server
            piece = bytes(view[total : total + MAX_CHUNK])
            self._checked(
                entry.path, CMD_WRITE, entry.remote, int64(offset + total), piece, why="write",
                handle_of=entry.generation,
            )  # fmt: skip
            total += len(piece)
            if total >= len(data):
                # An append's offset is the server's choice: nothing to recognise it by.
                appended = bool(entry.flags & os.O_APPEND)
                entry.witness = entry.witness if appended or not data else (offset, data[:WITNESS])
                return total

    def fsync(self, handle: Handle) -> None:
        with self._op("fsync"):

            def attempt(entry: _OpenFile) -> None:
                if not self._connect().has_extension("fsync@openssh.com"):
                    raise OSError(errno.ENOTSUP, "server lacks fsync@openssh.com", entry.path)
                self._checked(
                    entry.path, CMD_EXTENDED, "fsync@openssh.com", entry.remote, why="write",
                    handle_of=entry.generation,
                )  # fmt: skip

            self._on_handle("fsync", handle, attempt)

    def fchmod(self, handle: Handle, mode: int) -> None:
        """FSETSTAT on the open handle: the file it has open, whatever its name now."""
        with self._op("fchmod"):
            attrs = SFTPAttributes()
            attrs.st_mode = mode & 0o7777

            def attempt(entry: _OpenFile) -> None:
                self._checked(
                    entry.path, CMD_FSETSTAT, entry.remote, attrs, why="setstat",
                    handle_of=entry.generation,
                )  # fmt: skip

            self._on_handle("fchmod", handle, attempt)

    def ftruncate(self, handle: Handle, length: int) -> None:
        with self._op("ftruncate"):
            if length < 0:
                raise_errno(errno.EINVAL)
            attrs = SFTPAttributes()
            attrs.st_size = length

            def attempt(entry: _OpenFile) -> None:
                self._checked(
                    entry.path, CMD_FSETSTAT, entry.remote, attrs, why="write",
                    handle_of=entry.generation,
                )  # fmt: skip
                entry.witness = witness_after_truncate(entry.witness, length)

            self._on_handle("ftruncate", handle, attempt)

    @recoverable
    def truncate(self, path: str, length: int) -> None:
        with self._op("truncate"):
            if length < 0:
                raise_errno(errno.EINVAL, path)
            attrs = SFTPAttributes()
            attrs.st_size = length
            self._setstat(path, attrs, "truncate")

    # -- the namespace ------------------------------------------------------------------------

    @recoverable
    def readdir(self, path: str) -> list[DirEntry]:
        with self._op("readdir"):
            _, message = self._checked(path, CMD_OPENDIR, self._wire(path), why="opendir")
            return self._list(path, ReplyReader(message, path).string())

    @recoverable
    def mkdir(self, path: str, mode: int = 0o777) -> None:
        with self._op("mkdir"):
            attrs = SFTPAttributes()
            attrs.st_mode = mode & 0o7777
            self._checked(path, CMD_MKDIR, self._wire(path), attrs, why="mkdir")

    @recoverable
    def rmdir(self, path: str) -> None:
        with self._op("rmdir"):
            self._checked(path, CMD_RMDIR, self._wire(path), why="rmdir")

    @recoverable
    def unlink(self, path: str) -> None:
        with self._op("unlink"):
            self._checked(path, CMD_REMOVE, self._wire(path), why="unlink")

    @recoverable
    def rename(self, old: str, new: str) -> None:
        with self._op("rename"):
            if self._connect().has_extension("posix-rename@openssh.com"):
                command: tuple[Any, ...] = (CMD_EXTENDED, "posix-rename@openssh.com")
            else:  # plain RENAME: OpenSSH refuses an existing target (interviewed as EEXIST)
                command = (CMD_RENAME,)
            self._checked(old, *command, self._wire(old), self._wire(new), why="rename", other=new)

    @recoverable
    def link(self, old: str, new: str) -> None:
        with self._op("link"):
            if not self._connect().has_extension("hardlink@openssh.com"):
                raise OSError(errno.ENOTSUP, "server lacks hardlink@openssh.com", old)
            self._checked(
                old, CMD_EXTENDED, "hardlink@openssh.com", self._wire(old), self._wire(new),
                why="link", other=new,
            )  # fmt: skip

    @recoverable
    def symlink(self, target: str, linkpath: str) -> None:
        with self._op("symlink"):
            # OpenSSH reads (target, linkpath): the reverse of the draft, and what
            # every client sends; the link's text is stored as given.
            self._checked(
                linkpath, CMD_SYMLINK, self._wire(target), self._wire(linkpath), why="symlink"
            )

    @recoverable
    def readlink(self, path: str) -> str:
        with self._op("readlink"):
            reply, message = self._checked(path, CMD_READLINK, self._wire(path), why="readlink")
            assert reply == CMD_NAME, reply
            reader = ReplyReader(message, f"{self.describe()}: readlink {path}")
            if reader.uint32() != 1:
                raise_errno(errno.EIO, path)
            return os.fsdecode(reader.string())
