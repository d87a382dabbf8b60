"""The Chirp driver: a blocking socket shell around :class:`ChirpConnection`.

One driver object holds one TCP connection to one server, opened lazily by
the first operation (which is charged with it in the counters). Every wait on
the network has a deadline (``timeout``); a refused, reset or silent
connection surfaces as ECONNREFUSED, ECONNRESET or ETIMEDOUT, and the next
operation opens a fresh connection. Chirp file descriptors live and die with
their connection, so handles from a lost connection answer EBADF until
recovery (reconnect, reopen, verify the inode) lands with faultnet.

What Chirp cannot say, this driver does not pretend: times have whole-second
resolution (sub-second parts are dropped on utimens), ``O_NOFOLLOW`` and
``O_DIRECTORY`` are checked with an extra round trip, and flags the protocol
cannot carry (``O_PATH``, ``O_TMPFILE``) fail with EINVAL.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Self

from drivers._interface import DirEntry, Driver, FileType, Handle, StatFS, StatResult, raise_errno
from drivers._url import Location
from drivers.chirp._codec import (
    CHIRP_PORT,
    CLIENT_SIDE_FLAGS,
    LINE_MAX,
    MAX_BUFFER_SIZE,
    PATH_MAX,
    encode_path,
    errno_for_chirp_code,
    letters_from_flags,
)
from drivers.chirp._connection import BROKEN, READY, ChirpConnection
from drivers.chirp._events import (
    NEED_DATA,
    AuthAgreed,
    Authenticated,
    AuthOffer,
    AuthRefused,
    ChallengeAnswer,
    ContinuePut,
    Data,
    Done,
    Event,
    Failure,
    ListReply,
    LongListReply,
    ProtocolError,
    PutData,
    Reply,
    Request,
    StatFSReply,
    StatReply,
    UnixChallenge,
)

__all__ = ["DEFAULT_AUTH_METHODS", "ChirpDriver"]

#: cctools' client order, less the methods that need Kerberos or Globus.
DEFAULT_AUTH_METHODS: tuple[str, ...] = ("unix", "hostname", "address")
SUPPORTED_AUTH_METHODS = frozenset(DEFAULT_AUTH_METHODS)
#: Flags this driver can express or emulate; anything else is refused.
_EMULATED_FLAGS = os.O_NOFOLLOW | os.O_DIRECTORY | os.O_DSYNC | os.O_DIRECT
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)  # includes O_DIRECTORY's bit: test all bits
_RECV_CHUNK = 1 << 20


@dataclass(slots=True)
class _OpenFile:
    """What we remember of an open handle: enough to reopen it after a reconnect."""

    path: str
    flags: int
    inode: int
    generation: int


class ChirpDriver(Driver):
    """A client of cctools' Chirp protocol (CCL dialect).

    Args:
        host: server address.
        port: server port (9094 by default).
        auth_methods: methods to offer, in order; the first the server accepts wins.
        timeout: seconds to wait for any one network event.
    """

    name = "chirp"
    url_schemes = ("chirp",)
    default_port = CHIRP_PORT

    def __init__(
        self,
        host: str,
        port: int = CHIRP_PORT,
        *,
        auth_methods: Sequence[str] = DEFAULT_AUTH_METHODS,
        timeout: float = 30.0,
    ) -> None:
        super().__init__()
        unknown = [m for m in auth_methods if m not in SUPPORTED_AUTH_METHODS]
        if unknown or not auth_methods:
            raise ValueError(
                f"unsupported chirp auth method(s) {unknown or '(none)'}; "
                f"choose from {', '.join(sorted(SUPPORTED_AUTH_METHODS))}"
            )
        self.host = host
        self.port = port
        self.auth_methods = tuple(auth_methods)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._conn: ChirpConnection | None = None
        self._generation = 0
        self._files: dict[int, _OpenFile] = {}

    @classmethod
    def from_location(cls, location: Location, *, timeout: float = 30.0) -> Self:
        if not location.host:
            raise ValueError(f"chirp URL needs a host: {location}")
        methods = os.environ.get("AVIARY_CHIRP_AUTH")
        auth = (
            tuple(m.strip() for m in methods.split(",") if m.strip())
            if methods
            else DEFAULT_AUTH_METHODS
        )
        return cls(location.host, location.port or CHIRP_PORT, auth_methods=auth, timeout=timeout)

    def describe(self) -> str:
        return f"chirp://{self.host}:{self.port}"

    @property
    def subject(self) -> str | None:
        """Who the server thinks we are (``address:127.0.0.1``), once connected."""
        if self._conn is None or self._conn.subject is None:
            return None
        return f"{self._conn.method}:{self._conn.subject}"

    # -- the I/O shell -------------------------------------------------------------------

    def close_driver(self) -> None:
        self._disconnect()

    def _disconnect(self) -> None:
        sock, self._sock, self._conn = self._sock, None, None
        self._files.clear()
        if sock is not None:
            with suppress(OSError):
                sock.close()

    def _connection(self) -> tuple[socket.socket, ChirpConnection]:
        if self._sock is not None and self._conn is not None and self._conn.state is READY:
            return self._sock, self._conn
        self._disconnect()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except TimeoutError:
            raise_errno(errno.ETIMEDOUT, f"{self.host}:{self.port}")
        except (socket.gaierror, UnicodeError):
            raise OSError(
                errno.EHOSTUNREACH, f"cannot resolve chirp server {self.host!r}"
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.counters.connection_opened()
        self._generation += 1
        self._sock, self._conn = sock, ChirpConnection()
        try:
            self._authenticate(sock, self._conn)
        except BaseException:
            self._disconnect()
            raise
        return sock, self._conn

    def _authenticate(self, sock: socket.socket, conn: ChirpConnection) -> None:
        for method in self.auth_methods:
            self._send(sock, conn, AuthOffer(method))
            event = self._receive(sock, conn)
            if isinstance(event, AuthRefused):
                continue
            assert isinstance(event, AuthAgreed), event
            event = self._receive(sock, conn)
            if isinstance(event, UnixChallenge):
                event = self._answer_unix_challenge(sock, conn, event.path)
            if isinstance(event, Authenticated):
                return
            assert isinstance(event, AuthRefused), event
        raise OSError(
            errno.EACCES,
            f"chirp server {self.host}:{self.port} refused auth methods {', '.join(self.auth_methods)}",
        )

    def _answer_unix_challenge(
        self, sock: socket.socket, conn: ChirpConnection, path: str
    ) -> Event:
        try:
            fd = os.open(
                path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_SYNC | os.O_NOCTTY, 0o600
            )
        except OSError:
            # The challenge is on the server's filesystem, which we do not share.
            self._send(sock, conn, ChallengeAnswer(created=False))
            return AuthRefused("unix")
        os.close(fd)
        try:
            self._send(sock, conn, ChallengeAnswer(created=True))
            return self._receive(sock, conn)
        finally:
            with suppress(OSError):
                os.unlink(path)

    def _send(self, sock: socket.socket, conn: ChirpConnection, event: Event) -> None:
        data = conn.send(event)
        try:
            sock.sendall(data)
        except TimeoutError:
            self._disconnect()
            raise_errno(errno.ETIMEDOUT, self.describe())
        except OSError as exc:
            self._disconnect()
            raise OSError(
                exc.errno or errno.ECONNRESET, f"chirp {self.describe()}: {exc.strerror}"
            ) from None
        self.counters.sent(len(data))

    def _receive(self, sock: socket.socket, conn: ChirpConnection) -> Event:
        while True:
            try:
                event = conn.next_event()
            except ProtocolError as exc:
                self._disconnect()
                raise OSError(exc.errno_hint, f"chirp {self.describe()}: {exc}") from None
            if event is not NEED_DATA:
                return event
            try:
                data = sock.recv(_RECV_CHUNK)
            except TimeoutError:
                self._disconnect()
                raise OSError(
                    errno.ETIMEDOUT, f"chirp {self.describe()}: no reply within {self.timeout:g} s"
                ) from None
            except OSError as exc:
                self._disconnect()
                raise OSError(
                    exc.errno or errno.ECONNRESET, f"chirp {self.describe()}: {exc.strerror}"
                ) from None
            self.counters.received(len(data))
            conn.receive_data(data)

    def _call(self, request: Request, path: str | None = None) -> Event:
        """One round trip: send ``request``, return its reply; failures raise OSError."""
        if len(request.line) >= LINE_MAX:
            raise_errno(errno.ENAMETOOLONG, path)
        sock, conn = self._connection()
        self._send(sock, conn, request)
        event = self._receive(sock, conn)
        self.counters.round_trip()
        if isinstance(event, Failure):
            raise_errno(errno_for_chirp_code(event.code), path)
        return event

    def _simple(self, line: str, path: str | None = None) -> int:
        event = self._call(Request(line), path)
        assert isinstance(event, Done), event
        return event.value

    @contextmanager
    def _op(self, name: str) -> Iterator[None]:
        with self.counters.operation(name):
            yield

    @staticmethod
    def _path(path: str) -> str:
        encoded = encode_path(path)
        if len(encoded) >= PATH_MAX:
            raise_errno(errno.ENAMETOOLONG, path)
        return encoded

    def _fd(self, handle: Handle) -> int:
        entry = self._files.get(int(handle))
        if entry is None or entry.generation != self._generation or self._conn is None:
            raise_errno(errno.EBADF)
        return int(handle)

    # -- metadata ---------------------------------------------------------------------------

    def _stat(self, verb: str, path: str) -> StatResult:
        event = self._call(Request(f"{verb} {self._path(path)}", Reply.STAT), path)
        assert isinstance(event, StatReply), event
        return event.stat

    def stat(self, path: str) -> StatResult:
        with self._op("stat"):
            return self._stat("stat", path)

    def lstat(self, path: str) -> StatResult:
        with self._op("lstat"):
            return self._stat("lstat", path)

    def fstat(self, handle: Handle) -> StatResult:
        with self._op("fstat"):
            event = self._call(Request(f"fstat {self._fd(handle)}", Reply.STAT))
            assert isinstance(event, StatReply), event
            return event.stat

    def access(self, path: str, mode: int) -> None:
        with self._op("access"):
            self._simple(f"access {self._path(path)} {mode}", path)

    def statfs(self, path: str) -> StatFS:
        with self._op("statfs"):
            event = self._call(Request(f"statfs {self._path(path)}", Reply.STATFS), path)
            assert isinstance(event, StatFSReply), event
            return event.statfs

    def chmod(self, path: str, mode: int) -> None:
        with self._op("chmod"):
            self._simple(f"chmod {self._path(path)} {mode & 0o7777}", path)

    def utimens(self, path: str, times_ns: tuple[int, int] | None = None) -> None:
        with self._op("utimens"):
            if times_ns is None:
                now = int(time.time())
                atime = mtime = now
            else:
                atime, mtime = (t // 1_000_000_000 for t in times_ns)
            self._simple(f"utime {self._path(path)} {atime} {mtime}", path)

    # -- open files ----------------------------------------------------------------------------

    def open(self, path: str, flags: int, mode: int = 0o666) -> Handle:
        with self._op("open"):
            if flags & os.O_PATH or (_O_TMPFILE and flags & _O_TMPFILE == _O_TMPFILE):
                raise OSError(errno.EINVAL, "chirp cannot open with O_PATH or O_TMPFILE", path)
            if flags & os.O_NOFOLLOW and self._stat("lstat", path).is_lnk():
                raise_errno(errno.ELOOP, path)
            letters = letters_from_flags(flags & ~(CLIENT_SIDE_FLAGS | _EMULATED_FLAGS))
            if flags & os.O_DSYNC and "s" not in letters:
                letters += "s"
            line = f"open {self._path(path)} {letters} {mode & 0o7777}"
            event = self._call(Request(line, Reply.STAT), path)
            assert isinstance(event, StatReply), event
            fd = event.value
            self._files[fd] = _OpenFile(path, flags, event.stat.st_ino, self._generation)
            if flags & os.O_DIRECTORY and not event.stat.is_dir():
                self._close_quietly(fd)
                raise_errno(errno.ENOTDIR, path)
            return Handle(fd)

    def _close_quietly(self, fd: int) -> None:
        self._files.pop(fd, None)
        with suppress(OSError):
            self._simple(f"close {fd}")

    def close(self, handle: Handle) -> None:
        with self._op("close"):
            fd = self._fd(handle)
            del self._files[fd]
            self._simple(f"close {fd}")

    def pread(self, handle: Handle, size: int, offset: int) -> bytes:
        with self._op("pread"):
            if size < 0 or offset < 0:
                raise_errno(errno.EINVAL)
            size = min(size, MAX_BUFFER_SIZE)
            request = Request(f"pread {self._fd(handle)} {size} {offset}", Reply.BYTES, limit=size)
            event = self._call(request)
            assert isinstance(event, Data), event
            return event.data

    def pwrite(self, handle: Handle, data: bytes, offset: int) -> int:
        with self._op("pwrite"):
            if offset < 0:
                raise_errno(errno.EINVAL)
            fd = self._fd(handle)
            total = 0
            view = memoryview(data)
            while True:  # one request per 16 MiB; a zero-byte write still asks the server
                piece = bytes(view[total : total + MAX_BUFFER_SIZE])
                line = f"pwrite {fd} {len(piece)} {offset + total}"
                written = self._pwrite_piece(Request(line, payload=piece))
                total += written
                if written < len(piece) or total >= len(data):
                    return total

    def _pwrite_piece(self, request: Request) -> int:
        event = self._call(request)
        assert isinstance(event, Done), event
        return event.value

    def fsync(self, handle: Handle) -> None:
        with self._op("fsync"):
            self._simple(f"fsync {self._fd(handle)}")

    def ftruncate(self, handle: Handle, length: int) -> None:
        with self._op("ftruncate"):
            self._simple(f"ftruncate {self._fd(handle)} {length}")

    def truncate(self, path: str, length: int) -> None:
        with self._op("truncate"):
            self._simple(f"truncate {self._path(path)} {length}", path)

    # -- the namespace ------------------------------------------------------------------------

    def readdir(self, path: str) -> list[DirEntry]:
        with self._op("readdir"):
            event = self._call(Request(f"getlongdir {self._path(path)}", Reply.LONGDIR), path)
            assert isinstance(event, LongListReply), event
            return [
                DirEntry(name, st.file_type if st is not None else FileType.UNKNOWN)
                for name, st in event.entries
                if name not in (".", "..")
            ]

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        with self._op("mkdir"):
            self._simple(f"mkdir {self._path(path)} {mode & 0o7777}", path)

    def rmdir(self, path: str) -> None:
        with self._op("rmdir"):
            self._simple(f"rmdir {self._path(path)}", path)

    def unlink(self, path: str) -> None:
        with self._op("unlink"):
            self._simple(f"unlink {self._path(path)}", path)

    def rename(self, old: str, new: str) -> None:
        with self._op("rename"):
            self._simple(f"rename {self._path(old)} {self._path(new)}", old)

    def link(self, old: str, new: str) -> None:
        with self._op("link"):
            self._simple(f"link {self._path(old)} {self._path(new)}", old)

    def symlink(self, target: str, linkpath: str) -> None:
        with self._op("symlink"):
            self._simple(f"symlink {self._path(target)} {self._path(linkpath)}", linkpath)

    def readlink(self, path: str) -> str:
        with self._op("readlink"):
            request = Request(
                f"readlink {self._path(path)} {PATH_MAX}", Reply.BYTES, limit=PATH_MAX
            )
            event = self._call(request, path)
            assert isinstance(event, Data), event
            return os.fsdecode(event.data)

    # -- whole files in one round trip --------------------------------------------------------

    def read_file(self, path: str, chunk: int = 1 << 20) -> bytes:
        """getfile: the whole file in one round trip."""
        with self._op("getfile"):
            event = self._call(Request(f"getfile {self._path(path)}", Reply.BYTES), path)
            assert isinstance(event, Data), event
            return event.data

    def write_file(self, path: str, data: bytes, mode: int = 0o666, chunk: int = 1 << 20) -> None:
        """putfile: create or replace a file in two round trips."""
        with self._op("putfile"):
            request = Request(f"putfile {self._path(path)} {mode & 0o7777} {len(data)}", Reply.PUT)
            event = self._call(request, path)
            assert isinstance(event, ContinuePut), event
            sock, conn = self._sock, self._conn
            assert sock is not None and conn is not None
            self._send(sock, conn, PutData(data))
            final = self._receive(sock, conn)
            self.counters.round_trip()
            if isinstance(final, Failure):
                raise_errno(errno_for_chirp_code(final.code), path)
            assert isinstance(final, Done), final
            if final.value != len(data):
                raise OSError(errno.EIO, f"putfile stored {final.value} of {len(data)} bytes", path)

    # -- Chirp's own calls -------------------------------------------------------------------

    def whoami(self) -> str:
        """The subject the server knows us by, as the server says it."""
        with self._op("whoami"):
            event = self._call(Request(f"whoami {LINE_MAX}", Reply.BYTES, limit=LINE_MAX))
            assert isinstance(event, Data), event
            return event.data.decode("utf-8", "replace")

    def getacl(self, path: str) -> list[tuple[str, str]]:
        """The ACL of a directory as (subject, rights) pairs."""
        with self._op("getacl"):
            event = self._call(Request(f"getacl {self._path(path)}", Reply.LINES), path)
            assert isinstance(event, ListReply), event
            pairs = []
            for line in event.lines:
                subject, _, rights = line.rpartition(" ")
                pairs.append((subject, rights))
            return pairs

    def setacl(self, path: str, subject: str, rights: str) -> None:
        """Give ``subject`` ``rights`` (``rwlda``, ``none`` to remove) on a directory."""
        with self._op("setacl"):
            self._simple(f"setacl {self._path(path)} {subject} {rights}", path)

    def rmall(self, path: str) -> None:
        """Delete a file or a whole tree on the server side."""
        with self._op("rmall"):
            self._simple(f"rmall {self._path(path)}", path)

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.state is not BROKEN
