"""The Chirp driver: the driver interface, one Chirp request per operation.

The connection, its deadlines and recovery after a broken connection live in
the I/O shell (``_shell.py``, decisions in ``_recovery.py``): a call made
here either returns what the server said, raises the server's errno, raises
ESTALE for a handle whose file changed while the connection was down, or
raises the connection's error once recovery has given up (at once when it is
disabled: ``recovery=0`` or ``AVIARY_CHIRP_RECOVERY=0``; handles then die
with their connection and answer EBADF, as a Chirp descriptor does).

Replays after an unknown outcome are safe: Chirp's data calls name their
offset (pwrite at an offset twice leaves the same bytes), an append-mode
write is checked against the file's tail before it is sent again, putfile
replaces the whole file, and the namespace calls that are not idempotent
map the error a replay gets when the first copy was applied back to success
(``_recovery.APPLIED_IF_REPLAYED``; ``open`` with O_EXCL is left honest).

What Chirp cannot say, this driver does not pretend: times have whole-second
resolution (sub-second parts are dropped on utimens), ``O_NOFOLLOW`` and
``O_DIRECTORY`` are checked with an extra round trip, and flags the protocol
cannot carry (``O_PATH``, ``O_TMPFILE``) fail with EINVAL.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Self

from drivers._interface import (
    Capabilities,
    DirectReads,
    DirEntry,
    FileType,
    Handle,
    StatFS,
    StatResult,
    raise_errno,
)
from drivers._url import Location
from drivers.chirp._connection import READY
from drivers.chirp._events import (
    ContinuePut,
    Data,
    DataInto,
    Done,
    Event,
    Failure,
    ListReply,
    LongListReply,
    PutData,
    Reply,
    Request,
    StatFSReply,
    StatReply,
)
from drivers.chirp._recovery import OpenFile
from drivers.chirp._shell import DEFAULT_AUTH_METHODS, ChirpShell, _Broken
from drivers.chirp.codec import (
    CHIRP_PORT,
    CLIENT_SIDE_FLAGS,
    LINE_MAX,
    MAX_BUFFER_SIZE,
    PATH_MAX,
    errno_for_chirp_code,
    letters_from_flags,
)

__all__ = ["DEFAULT_AUTH_METHODS", "ChirpDriver"]

#: Requests of one pipelined pread in flight at once (their lines fit any socket buffer).
PIPELINE_DEPTH = 8
#: An open's reply answers an fstat of its handle, without a round trip, when nothing else
#: was asked of this driver since and it is younger than this (seconds): glibc's fopen and
#: gcc fstat what they just opened. The bound keeps a loop that polls the open file for
#: another client's change honest.
REPLY_REUSE_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class _Listing:
    """The last directory listed, with each name's lstat as getlongdir sent it.

    ``ls -l`` lists a directory, then asks statx, lgetxattr and getxattr of every name:
    while nothing else is asked of the driver, and for :data:`REPLY_REUSE_SECONDS`, a
    stat or lstat of a listed name is answered from the listing (as Parrot's directory
    cache does), and counts as no operation.
    """

    directory: str
    entries: Mapping[str, StatResult]
    asked: int  # the driver's operations begun when the listing came
    when: float  # time.monotonic() then


@dataclass(slots=True)
class _Names:
    """What the stats asked in a row, with nothing else in between, said of each name.

    make stats ``x.c`` and ``x.o``, then gcc's realpath asks readlink of both: the lstat
    (every stat asks lstat first) already said neither is a link, or that the name is
    missing. Only readlink is answered from here, within :data:`REPLY_REUSE_SECONDS` of
    the answer; a stat asked again goes to the server (a loop polling a file stays honest).
    """

    asked: int  # the driver's operations begun when the last answer came
    said: dict[str, tuple[StatResult | None, float]]  # path -> (lstat, or None: missing; when)


#: Flags this driver can express or emulate; anything else is refused.
_EMULATED_FLAGS = os.O_NOFOLLOW | os.O_DIRECTORY | os.O_DSYNC | os.O_DIRECT
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)  # includes O_DIRECTORY's bit: test all bits


class ChirpDriver(ChirpShell):
    """A client of cctools' Chirp protocol (CCL dialect).

    Args:
        host: server address.
        port: server port (9094 by default).
        auth_methods: methods to offer, in order; the first the server accepts wins.
        timeout: seconds to wait for any one network event.
        recovery: seconds to spend reconnecting after a broken connection
            (None: ``AVIARY_CHIRP_RECOVERY`` or 60; 0: fail at once).
    """

    name = "chirp"
    url_schemes = ("chirp",)
    capabilities = Capabilities(
        create_modes=False,
        symlink_targets_escaped=True,  # both servers store the URL-encoded target verbatim
        exclusive_create_on_symlinks=False,  # O_EXCL on a dangling link creates its target
        forced_create_modes=(0o600, 0o700),  # both servers create under umask 077
        time_resolution_ns=1_000_000_000,
        rename_over_directory=False,  # the server's .__acl file keeps every directory non-empty
        reports_eloop=False,  # no Chirp code for ELOOP: UNKNOWN, reported as EIO
        errno_precedence=False,  # the new name's directory is checked before the old name
        errno_aliases=(
            ("*", errno.EPERM, errno.EACCES),  # no Chirp code for EPERM: NOT_AUTHORIZED
            ("open", errno.EEXIST, errno.EISDIR),  # a directory is refused before O_EXCL
            # O_EXCL on a symlink loop: the servers meet ELOOP (sent as UNKNOWN) before EEXIST.
            ("open", errno.EEXIST, errno.EIO),
        ),
    )
    default_port = CHIRP_PORT
    #: Bytes one request of a pipelined pread asks for: a whole Chirp buffer. cctools'
    #: server clears its 16 MiB buffer before every request, so fewer, larger requests
    #: are cheaper there; a read larger than this is several requests in one round trip.
    pipeline_piece: int = MAX_BUFFER_SIZE
    _listing: _Listing | None = None
    _names: _Names | None = None

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

    # -- metadata ---------------------------------------------------------------------------

    def _stat(self, verb: str, path: str) -> StatResult:
        event = self._call(Request(f"{verb} {self._path(path)}", Reply.STAT), path)
        assert isinstance(event, StatReply), event
        return event.stat

    def _listed(self, path: str) -> StatResult | None:
        """``path``'s lstat from the listing of its directory, while that is still the
        last thing asked of this driver and young enough; else None."""
        listing = self._listing
        if (
            listing is None
            or listing.asked != self.counters.begun
            or time.monotonic() - listing.when >= REPLY_REUSE_SECONDS
        ):
            return None
        directory, _, name = path.rstrip("/").rpartition("/")
        if (directory or "/") != listing.directory:
            return None
        return listing.entries.get(name)

    def _said(self, path: str, st: StatResult | None) -> None:
        """Note what the lstat being asked (this driver's latest operation) said of ``path``:
        added to the notes of the stats just before it, or the first of new notes."""
        names = self._names
        if names is None or names.asked != self.counters.begun - 1:
            names = self._names = _Names(self.counters.begun, {})
        names.said[path] = (st, time.monotonic())
        names.asked = self.counters.begun

    def _lstat_noted(self, path: str) -> StatResult:
        try:
            st = self._stat("lstat", path)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                self._said(path, None)
            raise
        self._said(path, st)
        return st

    def stat(self, path: str) -> StatResult:
        listed = self._listed(path)
        if listed is not None and not listed.is_lnk():  # a link's target is not listed
            return listed
        with self._op("stat"):
            if listed is not None:  # a link, the listing says: its target
                return self._stat("stat", path)
            # lstat first: the same one round trip for anything but a link, and what it
            # says answers a readlink right after (gcc's realpath of what make stated).
            st = self._lstat_noted(path)
            return self._stat("stat", path) if st.is_lnk() else st

    def lstat(self, path: str) -> StatResult:
        listed = self._listed(path)
        if listed is not None:
            return listed
        with self._op("lstat"):
            return self._lstat_noted(path)

    def fstat(self, handle: Handle) -> StatResult:
        entry = self._entry(handle)
        if (
            entry.opened is not None
            and entry.opened_at == self.counters.begun
            and time.monotonic() - entry.opened_when < REPLY_REUSE_SECONDS
        ):
            # Nothing was asked of this driver since the open replied with these attributes
            # (glibc's fopen and cc1 fstat right after open): no round trip, and no operation
            # in the counters (a model replaying them costs none).
            entry.opened_at = -1
            return entry.opened
        with self._op("fstat"):
            self._entry(handle)
            event = self._call(lambda: Request(f"fstat {self._fd(handle)}", Reply.STAT))
            assert isinstance(event, StatReply), event
            self._entry(handle).observed(event.stat, time.time())
            return event.stat

    def stat_at_open(self, handle: Handle) -> StatResult:
        opened = self._entry(handle).opened
        return opened if opened is not None else self.fstat(handle)

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
            # An lstat of its own (and counted as one): Chirp's open follows links.
            if flags & os.O_NOFOLLOW and self.lstat(path).is_lnk():
                raise_errno(errno.ELOOP, path)
            letters = letters_from_flags(flags & ~(CLIENT_SIDE_FLAGS | _EMULATED_FLAGS))
            if flags & os.O_DSYNC and "s" not in letters:
                letters += "s"
            line = f"open {self._path(path)} {letters} {mode & 0o7777}"
            # A replayed open is idempotent except with O_EXCL, whose EEXIST
            # after an unknown outcome is reported as is (see _recovery).
            event = self._call(Request(line, Reply.STAT), path)
            assert isinstance(event, StatReply), event
            handle = self._next_handle
            self._next_handle += 1
            st = event.stat
            entry = OpenFile(
                path, flags, letters, mode & 0o7777, event.value, self._generation,
                st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns,
            )  # fmt: skip
            entry.observed(st, time.time())
            entry.opened, entry.opened_at = st, self.counters.begun
            entry.opened_when = time.monotonic()
            self._files[handle] = entry
            if flags & os.O_DIRECTORY and not st.is_dir():
                self._close_quietly(Handle(handle))
                raise_errno(errno.ENOTDIR, path)
            return Handle(handle)

    def _close_quietly(self, handle: Handle) -> None:
        with suppress(OSError):
            self._close(handle)

    def _close(self, handle: Handle) -> None:
        entry = self._files.pop(int(handle), None)
        if entry is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        if entry.stale is not None or entry.generation != self._generation or self._conn is None:
            return  # its descriptor died with its connection, or was closed at reopen
        try:
            event = self._round_trip(Request(f"close {entry.fd}"))
        except _Broken:
            return  # the server closes every descriptor of a connection it lost
        if isinstance(event, Failure):
            raise_errno(errno_for_chirp_code(event.code))

    def close(self, handle: Handle) -> None:
        """Close a handle; a stale handle, or one whose connection broke, closes quietly."""
        with self._op("close"):
            self._close(handle)

    def pread(self, handle: Handle, size: int, offset: int) -> bytes:
        with self._op("pread"):
            if size < 0 or offset < 0:
                raise_errno(errno.EINVAL)
            self._entry(handle)
            size = min(size, MAX_BUFFER_SIZE)
            event = self._call(
                lambda: Request(
                    f"pread {self._fd(handle)} {size} {offset}", Reply.BYTES, limit=size
                )
            )
            assert isinstance(event, Data), event
            return event.data

    def pread_into(self, handle: Handle, buffer: memoryview, offset: int) -> int:
        """pread straight into ``buffer``: one request per :attr:`pipeline_piece` bytes, sent
        before the first reply is read (one round trip; up to PIPELINE_DEPTH at a time).

        The count is that of the unbroken run of bytes from ``offset``: a short reply (end
        of file) ends it, and what later replies brought is not counted. An error after
        some bytes returns those bytes, as read(2) does; every reply is read either way,
        so the connection stays in step.
        """
        with self._op("pread"):
            if offset < 0:
                raise_errno(errno.EINVAL)
            self._entry(handle)
            piece = self.pipeline_piece
            spans = [(at, min(piece, len(buffer) - at)) for at in range(0, len(buffer), piece)]
            if not spans:
                return 0

            def attempt(replay: bool) -> Event:
                sock, conn = self._connection()
                fd = self._fd(handle)

                def send(index: int) -> None:
                    at, size = spans[index]
                    into = buffer[at : at + size]
                    line = f"pread {fd} {size} {offset + at}"
                    self._send(sock, conn, Request(line, Reply.BYTES, limit=size, into=into))

                # At most PIPELINE_DEPTH requests ahead: a server blocked on a reply we
                # have not read yet must never also wait for us to take its requests.
                for index in range(min(PIPELINE_DEPTH, len(spans))):
                    send(index)
                total, ended = 0, False
                failure: Failure | None = None
                for index, (_at, size) in enumerate(spans):
                    if index + PIPELINE_DEPTH < len(spans):
                        send(index + PIPELINE_DEPTH)
                    event = self._receive(sock, conn)
                    if isinstance(event, Failure):
                        failure = failure if failure is not None else event
                        ended = True
                    elif not ended:
                        assert isinstance(event, DataInto), event
                        total += event.value
                        ended = event.value < size
                self.counters.round_trip()
                if failure is not None and total == 0:
                    raise_errno(errno_for_chirp_code(failure.code))
                return Done(total)

            event = self._recovering(attempt)
            assert isinstance(event, Done), event
            return event.value

    def direct_reads(self, handle: Handle) -> DirectReads | None:
        """A pread of ``handle``'s server descriptor on the live connection, while it is
        idle, logged in and not recovering, and the handle is of this connection."""
        entry = self._files.get(int(handle))
        sock, conn = self._sock, self._conn
        if (
            entry is None
            or entry.stale is not None
            or entry.generation != self._generation
            or sock is None
            or conn is None
            or conn.state is not READY
            or conn.pending
            or self._limit is not None
            or self._lost is not None
        ):
            return None
        return DirectReads(
            sock.fileno(), f"pread {entry.fd} ".encode(), MAX_BUFFER_SIZE, self.timeout
        )

    def direct_reads_made(self, requests: int, sent: int, received: int) -> None:
        self.counters.made_elsewhere("pread", requests, sent, received)

    def pwrite(self, handle: Handle, data: bytes, offset: int) -> int:
        with self._op("pwrite"):
            if offset < 0:
                raise_errno(errno.EINVAL)
            entry = self._entry(handle)
            if entry.flags & os.O_ACCMODE == os.O_RDONLY:
                # cctools' server writes zero bytes to a read-only descriptor without an error.
                raise_errno(errno.EBADF)
            total = 0
            view = memoryview(data)
            while True:  # one request per 16 MiB; a zero-byte write still asks the server
                piece = view[total : total + MAX_BUFFER_SIZE]  # sent as is, not copied
                written = self._pwrite_piece(handle, entry, piece, offset + total)
                total += written
                if written < len(piece) or total >= len(data):
                    return total

    def _written(self, entry: OpenFile) -> None:
        """We change this file: through every handle on it, its size is ours to expect."""
        for other in self._files.values():
            if other.inode == entry.inode:
                other.dirty = True

    def _pwrite_piece(
        self, handle: Handle, entry: OpenFile, piece: bytes | memoryview, offset: int
    ) -> int:
        self._written(entry)

        def build() -> Request:
            return Request(f"pwrite {self._fd(handle)} {len(piece)} {offset}", payload=piece)

        # At an offset a replay rewrites the same bytes in the same place. In
        # append mode the server ignores the offset, so a replay would append
        # twice: look at the file's tail first.
        check = (lambda: self._appended_already(handle, piece)) if "a" in entry.letters else None
        event = self._call(build, before_replay=check)
        assert isinstance(event, Done), event
        return event.value

    def _appended_already(self, handle: Handle, piece: bytes | memoryview) -> Event | None:
        """Done(len) if the file already ends with ``piece``, else None (send it again).

        A file that legitimately ended with the same bytes before our append is
        taken for our own append: a known false positive, documented here.
        """
        fd = self._fd(handle)
        event = self._round_trip(Request(f"fstat {fd}", Reply.STAT))
        if not isinstance(event, StatReply) or event.stat.st_size < len(piece) or not piece:
            return None
        start = event.stat.st_size - len(piece)
        tail = self._round_trip(
            Request(f"pread {fd} {len(piece)} {start}", Reply.BYTES, limit=len(piece))
        )
        return Done(len(piece)) if isinstance(tail, Data) and tail.data == piece else None

    def fsync(self, handle: Handle) -> None:
        with self._op("fsync"):
            self._entry(handle)
            self._simple(lambda: f"fsync {self._fd(handle)}")

    def fchmod(self, handle: Handle, mode: int) -> None:
        with self._op("fchmod"):
            self._entry(handle)
            self._simple(lambda: f"fchmod {self._fd(handle)} {mode & 0o7777}")

    def ftruncate(self, handle: Handle, length: int) -> None:
        with self._op("ftruncate"):
            self._written(self._entry(handle))
            self._simple(lambda: f"ftruncate {self._fd(handle)} {length}")

    def truncate(self, path: str, length: int) -> None:
        with self._op("truncate"):
            self._simple(f"truncate {self._path(path)} {length}", path)

    # -- the namespace ------------------------------------------------------------------------

    def readdir(self, path: str) -> list[DirEntry]:
        with self._op("readdir"):
            event = self._call(Request(f"getlongdir {self._path(path)}", Reply.LONGDIR), path)
            assert isinstance(event, LongListReply), event
            self._listing = _Listing(
                path.rstrip("/") or "/",
                {name: st for name, st in event.entries if st is not None and "/" not in name},
                self.counters.begun,
                time.monotonic(),
            )
            return [
                DirEntry(name, st.file_type, st.st_ino)
                if st is not None
                else DirEntry(name, FileType.UNKNOWN)
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

    def _noted(self, path: str) -> tuple[StatResult | None] | None:
        """What the stats asked just before said of ``path`` (a 1-tuple), else None."""
        names = self._names
        if names is None or names.asked != self.counters.begun or path not in names.said:
            return None
        st, when = names.said[path]
        return (st,) if time.monotonic() - when < REPLY_REUSE_SECONDS else None

    def readlink(self, path: str) -> str:
        noted = self._noted(path)
        known = noted[0] if noted is not None else self._listed(path)
        # No operation either way: what was just said answers it.
        if noted is not None and known is None:
            raise_errno(errno.ENOENT, path)
        if known is not None and not known.is_lnk():
            raise_errno(errno.EINVAL, path)
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
        """putfile: create or replace a file in two round trips (replayed whole after a break)."""
        with self._op("putfile"):
            line = f"putfile {self._path(path)} {mode & 0o7777} {len(data)}"

            def attempt(replay: bool) -> Event:
                event = self._round_trip(Request(line, Reply.PUT))
                if isinstance(event, Failure):
                    raise_errno(errno_for_chirp_code(event.code), path)
                assert isinstance(event, ContinuePut), event
                sock, conn = self._sock, self._conn  # mid-putfile: not READY, but ours
                assert sock is not None and conn is not None
                self._send(sock, conn, PutData(data))
                final = self._receive(sock, conn)
                self.counters.round_trip()
                if isinstance(final, Failure):
                    raise_errno(errno_for_chirp_code(final.code), path)
                assert isinstance(final, Done), final
                return final

            final = self._recovering(attempt)
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
