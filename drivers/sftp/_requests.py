"""The SFTP driver's plumbing: one request and its reply, the open-file table, recovery.

``SftpRequests`` holds what every POSIX call of ``drivers.sftp._driver.SftpDriver``
stands on: the connection (opened on demand, counted, dropped when a request
breaks), ``call`` (one round trip) and ``_checked`` (a failure interviewed into a
precise errno), the table of open files and their reopening after a reconnect,
the conversion of SFTP attributes to ``StatResult``, the directory listing, and
the plain questions the interviewer asks (``drivers.sftp._interview.Witness``).
"""

from __future__ import annotations

import errno
import getpass
import os
import posixpath
import stat as stat_module
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Self, TypeVar, cast

import paramiko
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_LSTAT,
    CMD_OPENDIR,
    CMD_READDIR,
    CMD_READLINK,
    CMD_STAT,
)
from paramiko.sftp_attr import SFTPAttributes

from drivers._interface import (
    DirEntry,
    Driver,
    FileType,
    Handle,
    StatResult,
    raise_errno,
)
from drivers._network import (
    PROGRESS_BYTES,
    call_with_recovery,
    recovery_budget,
)
from drivers._url import Location
from drivers.sftp._interview import Interviewer
from drivers.sftp._recovery import reopen
from drivers.sftp._replies import ReplyReader, SftpProtocolError, check_reply
from drivers.sftp._shell import (
    SFTP_EOF,
    SFTP_FAILURE,
    SFTP_NO_SUCH_FILE,
    SftpSession,
    SftpStatus,
    open_session,
)

__all__ = ["SFTP_PORT", "SftpRequests"]

SFTP_PORT = 22
#: OpenSSH's sftp-server answers at most 255 KiB per READ (its SFTP_MAX_READ_LENGTH
#: is 256 KiB less headers); writes are split the same way to stay under its packet limit.
MAX_CHUNK = 255 * 1024
#: A directory listing larger than this (about a million names) is refused (EPROTO).
MAX_LISTING_BYTES = 64 * 1024 * 1024
_FLAG_READ, _FLAG_WRITE, _FLAG_APPEND, _FLAG_CREATE, _FLAG_TRUNC, _FLAG_EXCL = 1, 2, 4, 8, 16, 32
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
SYNTHESIZED = frozenset({"st_ino", "st_dev", "st_nlink", "st_ctime_ns", "st_blksize", "st_blocks"})
_BLKSIZE = 4096


@dataclass(slots=True)
class _OpenFile:
    path: str
    flags: int
    remote: bytes  # the server's handle string
    generation: int
    witness: tuple[int, bytes] | None = None  # see drivers.sftp._recovery


def _sftp_flags(flags: int) -> int:
    access = flags & os.O_ACCMODE
    result = _FLAG_READ if access in (os.O_RDONLY, os.O_RDWR) else 0
    if access in (os.O_WRONLY, os.O_RDWR):
        result |= _FLAG_WRITE
    for posix, sftp in (
        (os.O_APPEND, _FLAG_APPEND),
        (os.O_CREAT, _FLAG_CREATE),
        (os.O_TRUNC, _FLAG_TRUNC),
        (os.O_EXCL, _FLAG_EXCL),
    ):
        if flags & posix:
            result |= sftp
    return result


#: Seconds of reconnecting after a connection that worked broke (overridden by the environment).
DEFAULT_RECOVERY = 60.0
RECOVERY_ENV = "AVIARY_SFTP_RECOVERY"

T = TypeVar("T")


class SftpRequests(Driver):
    """The connection, requests and open-file table under ``SftpDriver`` (see there)."""

    default_port = SFTP_PORT

    def __init__(
        self,
        host: str,
        port: int = SFTP_PORT,
        user: str | None = None,
        *,
        timeout: float = 30.0,
        recovery: float | None = None,
    ) -> None:
        super().__init__()
        self.recovery = recovery_budget(recovery, RECOVERY_ENV, DEFAULT_RECOVERY)
        self.host = host
        self.port = port
        self.user = user or getpass.getuser()
        self.timeout = timeout
        self._session: SftpSession | None = None
        self._generation = 0
        self._files: dict[int, _OpenFile] = {}
        self._next_handle = 3
        self._dev = zlib.crc32(f"sftp://{host}:{port}".encode())
        self._interview = Interviewer(self)

    @classmethod
    def from_location(cls, location: Location, *, timeout: float = 30.0) -> Self:
        if not location.host:
            raise ValueError(f"sftp URL needs a host: {location}")
        if location.password:
            raise ValueError("sftp logs in with keys only: put no password in the URL")
        return cls(location.host, location.port or SFTP_PORT, location.user, timeout=timeout)

    def describe(self) -> str:
        return f"sftp://{self.user}@{self.host}:{self.port}"

    # -- the I/O shell -----------------------------------------------------------------------

    def close_driver(self) -> None:
        self._disconnect()
        self._files.clear()

    def _disconnect(self) -> None:
        # Open handles stay in the table: they answer ESTALE until closed (see _file).
        session, self._session = self._session, None
        if session is not None:
            self._settle(session)
            session.close()

    def _settle(self, session: SftpSession) -> None:
        sent, received = session.drain_bytes()
        self.counters.sent(sent)
        self.counters.received(received)

    def _connect(self) -> SftpSession:
        if self._session is not None and self._session.transport.is_active():
            return self._session
        self._disconnect()
        self.counters.connection_opened()
        self._session = open_session(self.host, self.port, self.user, self.timeout)
        self._generation += 1
        self._settle(self._session)
        return self._session

    @property
    def extensions(self) -> frozenset[str]:
        """The SFTP extensions the server announced (connects if needed)."""
        return frozenset(self._connect().client.extensions)

    def call(
        self, command: int, *args: Any, path: str | None = None, handle_of: int | None = None
    ) -> tuple[int, Any]:
        """One request and its reply: one round trip.

        ``handle_of`` is the connection number a server handle in ``args`` belongs to:
        such a request is never sent on another connection, where the same handle
        string may name another file or none.

        Raises:
            SftpStatus: the server answered with a STATUS other than OK.
            OSError: ETIMEDOUT or ECONNRESET when the connection failed.
        """
        session = self._connect()
        if handle_of is not None and handle_of != self._generation:
            raise OSError(errno.ECONNRESET, f"{self.describe()}: connection lost", path)
        try:
            reply_type, message = session.client._request(command, *args)
        except SftpStatus as status:
            self.counters.round_trip()
            self._settle(session)
            if status.code == SFTP_FAILURE and not session.transport.is_active():
                # A session dying under the request answers FAILURE on its way out (its
                # subsystem lost the channel): that is the broken connection, not the file.
                self._disconnect()
                raise OSError(errno.ECONNRESET, f"{self.describe()}: session lost", path) from None
            raise
        except SftpProtocolError as exc:
            # The stream can no longer be trusted to be in step: dropped, never retried.
            self._disconnect()
            raise OSError(errno.EPROTO, f"{self.describe()}: {exc.strerror}", path) from None
        except TimeoutError:
            self._disconnect()
            raise OSError(
                errno.ETIMEDOUT, f"{self.describe()}: no reply within {self.timeout:g} s", path
            ) from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._disconnect()
            raise OSError(errno.ECONNRESET, f"{self.describe()}: {exc}", path) from None
        except BaseException:
            # Interrupted half-way through a packet (KeyboardInterrupt, RecursionError...):
            # the stream's cipher and sequence state are unknown, so the session is dropped
            # rather than reused to send the server garbage ("Bad packet length").
            self._disconnect()
            raise
        self.counters.round_trip()
        self._settle(session)
        try:
            check_reply(command, args, reply_type)
        except SftpProtocolError as exc:
            self._disconnect()
            raise OSError(errno.EPROTO, f"{self.describe()}: {exc.strerror}", path) from None
        return reply_type, message

    def _checked(
        self,
        path: str,
        command: int,
        *args: Any,
        why: str,
        other: str | None = None,
        flags: int = 0,
        handle_of: int | None = None,
    ) -> tuple[int, Any]:
        """A request whose failure is interviewed into a precise errno.

        ``why`` names the kind of request for the interviewer ("open", "rmdir",
        ...); ``other`` is the second path of rename/link/symlink and ``flags``
        the open(2) flags.
        """
        try:
            return self.call(command, *args, path=path, handle_of=handle_of)
        except SftpStatus as status:
            code = self._interview.explain(why, path, status, other=other, flags=flags)
            raise OSError(code, os.strerror(code), path, None, other) from None

    @contextmanager
    def _op(self, name: str) -> Iterator[None]:
        with self.counters.operation(name):
            yield

    @staticmethod
    def _wire(path: str) -> bytes:
        return os.fsencode(path)

    def _file(self, handle: Handle) -> _OpenFile:
        entry = self._files.get(int(handle))
        if entry is None:
            raise_errno(errno.EBADF)
            raise AssertionError  # unreachable
        if (entry.generation != self._generation or self._session is None) and self.recovery:
            self._connect()
            if entry.generation != self._generation:
                reopen(entry, self.call, _sftp_flags, self._generation, self.describe())
        if entry.generation != self._generation or self._session is None:
            # SFTP v3 stat has no inode: without recovery a file reopened by path could be
            # another file under the same name, so the handle is stale, not reopened.
            raise OSError(
                errno.ESTALE,
                f"{self.describe()}: the connection was lost; SFTP cannot tell whether "
                f"{entry.path} is still the file that was open",
                entry.path,
            )
        return entry

    def _on_handle(
        self,
        operation: str,
        handle: Handle,
        attempt: Callable[[_OpenFile], T],
        *,
        replay: bool = True,
    ) -> T:
        # A request on an open file, sent again after a reconnect on the reopened handle.
        budget = self.recovery if self._generation and replay else 0.0
        return cast(
            T,
            call_with_recovery(
                operation, lambda: attempt(self._file(handle)), budget=budget,
                reset=self._disconnect,
            ),
        )  # fmt: skip

    def _recovering(self, operation: str, attempt: Callable[[], T]) -> T:
        # Path operations only, and only once a connection worked (see the class docstring).
        budget = self.recovery if self._generation else 0.0
        return cast(
            T,
            call_with_recovery(
                operation,
                attempt,
                budget=budget,
                reset=self._disconnect,
                attempt_time=self.timeout,
            ),
        )

    # -- metadata -------------------------------------------------------------------------

    def to_stat(self, attrs: SFTPAttributes, path: str) -> StatResult:
        mode = attrs.st_mode or 0
        size = attrs.st_size or 0
        mtime = (attrs.st_mtime or 0) * 1_000_000_000
        return StatResult(
            st_mode=mode,
            st_ino=zlib.crc32(os.fsencode(path)) or 1,
            st_dev=self._dev,
            st_nlink=2 if stat_module.S_ISDIR(mode) else 1,
            st_uid=attrs.st_uid or 0,
            st_gid=attrs.st_gid or 0,
            st_size=size,
            st_atime_ns=(attrs.st_atime or 0) * 1_000_000_000,
            st_mtime_ns=mtime,
            st_ctime_ns=mtime,
            st_blksize=_BLKSIZE,
            st_blocks=(size + 511) // 512,
            synthesized=SYNTHESIZED,
        )

    def raw_stat(self, command: int, path: str) -> SFTPAttributes:
        """STAT or LSTAT without interview (the interviewer's own question)."""
        _, message = self.call(command, self._wire(path), path=path)
        return ReplyReader(message, f"{self.describe()}: stat {path}").attrs()

    def _stat(self, command: int, path: str, why: str) -> StatResult:
        _, message = self._checked(path, command, self._wire(path), why=why)
        return self.to_stat(ReplyReader(message, f"{self.describe()}: stat {path}").attrs(), path)

    def _list(self, path: str, remote: bytes) -> list[DirEntry]:
        """READDIR until EOF, then CLOSE the directory handle ``remote``.

        The listing is bounded: at most :data:`MAX_LISTING_BYTES` of NAME replies
        (EPROTO beyond), and ``timeout`` seconds renewed by each ``PROGRESS_BYTES``
        that arrive (ETIMEDOUT when replies trickle in slower than that).
        """
        entries: list[DirEntry] = []
        listed = progress = 0
        ends = time.monotonic() + self.timeout
        try:
            while True:
                try:
                    _, message = self.call(CMD_READDIR, remote, path=path)
                except SftpStatus as status:
                    if status.code == SFTP_EOF:
                        return entries
                    raise
                listing = ReplyReader(message, f"{self.describe()}: listing {path}")
                listed += listing.left
                progress += listing.left
                if listed > MAX_LISTING_BYTES:
                    raise OSError(
                        errno.EPROTO,
                        f"{self.describe()}: listing longer than {MAX_LISTING_BYTES} bytes",
                        path,
                    )
                if progress >= PROGRESS_BYTES:
                    progress, ends = 0, time.monotonic() + self.timeout
                elif time.monotonic() > ends:
                    raise OSError(
                        errno.ETIMEDOUT,
                        f"{self.describe()}: listing too slow "
                        f"(under {PROGRESS_BYTES} bytes in {self.timeout:g} s)",
                        path,
                    )
                for _ in range(listing.count()):
                    name = os.fsdecode(listing.string())
                    listing.string()  # the "ls -l" line, for humans
                    attrs = listing.attrs()
                    if name not in (".", ".."):
                        kind = (
                            FileType.from_mode(attrs.st_mode)
                            if attrs.st_mode is not None
                            else FileType.UNKNOWN
                        )
                        entries.append(DirEntry(name, kind))
        finally:
            with suppress(SftpStatus):
                if self._session is not None:
                    self.call(CMD_CLOSE, remote, path=path)

    # -- helpers for the interviewer -------------------------------------------------------------

    def try_lstat(self, path: str) -> StatResult | None:
        """lstat without interview: None when the server says there is nothing."""
        try:
            return self.to_stat(self.raw_stat(CMD_LSTAT, path), path)
        except SftpStatus as status:
            if status.code in (SFTP_NO_SUCH_FILE,):
                return None
            raise

    def try_stat(self, path: str) -> StatResult | None:
        try:
            return self.to_stat(self.raw_stat(CMD_STAT, path), path)
        except SftpStatus as status:
            if status.code == SFTP_NO_SUCH_FILE:
                return None
            raise

    def try_readlink(self, path: str) -> str | None:
        try:
            _, message = self.call(CMD_READLINK, self._wire(path), path=path)
        except SftpStatus:
            return None
        reader = ReplyReader(message, f"{self.describe()}: readlink {path}")
        reader.uint32()
        return os.fsdecode(reader.string())

    def is_empty_dir(self, path: str) -> bool:
        """Whether a directory has no entries but "." and ".." (opendir/readdir/close)."""
        try:
            _, message = self.call(CMD_OPENDIR, self._wire(path), path=path)
            return not self._list(path, ReplyReader(message, path).string())
        except SftpStatus:
            return False

    @staticmethod
    def parent_of(path: str) -> str:
        return posixpath.dirname(path.rstrip("/")) or "/"
