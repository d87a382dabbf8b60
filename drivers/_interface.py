"""The driver interface: POSIX-shaped operations on paths and open handles.

Theory of operation
-------------------
A driver object speaks to ONE endpoint (a Chirp server at host:port, a local
directory tree, ...). Paths given to its methods are absolute paths *inside*
that endpoint ("/dir/file"). Open files are named by integer handles that the
driver hands out; a handle means nothing to any other driver object.

Every failure is an ``OSError`` whose ``errno`` is the precise POSIX value a
local filesystem would have given (ENOENT, EISDIR, ENOTDIR, EACCES, ...). A
driver that cannot tell which errno applies must find out (the seeds' FTP
"interview") rather than guess. Network faults surface as ECONNREFUSED,
ECONNRESET, ETIMEDOUT or EHOSTUNREACH.

Every driver keeps :class:`~drivers._counters.DriverCounters`: per operation
kind, the calls, round trips, connections opened and bytes sent and received.
The simulation in ``harness`` is calibrated from these numbers, so a driver
must count what really crossed the wire, not what it meant to send.
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import TracebackType
from typing import ClassVar, Literal, NewType, NoReturn, Self, TypeVar

from drivers._counters import DriverCounters
from drivers._url import Location

__all__ = [
    "STAT_FIELDS",
    "Capabilities",
    "DirEntry",
    "DirectReads",
    "Driver",
    "FileType",
    "Handle",
    "StatFS",
    "StatResult",
    "raise_errno",
]

#: An open file, as numbered by the driver that opened it.
Handle = NewType("Handle", int)

#: The fields of a stat result, in the order the conformance suite reports them.
STAT_FIELDS: tuple[str, ...] = (
    "st_mode",
    "st_ino",
    "st_dev",
    "st_nlink",
    "st_uid",
    "st_gid",
    "st_size",
    "st_atime_ns",
    "st_mtime_ns",
    "st_ctime_ns",
    "st_blksize",
    "st_blocks",
)


def raise_errno(code: int, filename: str | None = None, filename2: str | None = None) -> NoReturn:
    """Raise the OSError for ``code`` with the system's message.

    Raises:
        OSError: always; ``FileNotFoundError`` and friends where Python has them.
    """
    if filename2 is not None:
        raise OSError(code, os.strerror(code), filename, None, filename2)
    raise OSError(code, os.strerror(code), filename)


class OpenFlags:
    """What a handle record's open flags allow (its ``flags``, as open(2) took them)."""

    flags: int

    @property
    def writable(self) -> bool:
        return self.flags & os.O_ACCMODE != os.O_RDONLY

    @property
    def readable(self) -> bool:
        return self.flags & os.O_ACCMODE != os.O_WRONLY


_Entry = TypeVar("_Entry")


def handle_entry(table: Mapping[int, _Entry], handle: Handle) -> _Entry:
    """The record a driver keeps for an open handle.

    Raises:
        OSError: EBADF for a handle never given out, or closed.
    """
    entry = table.get(int(handle))
    if entry is None:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))
    return entry


@dataclass(frozen=True, slots=True)
class StatResult:
    """Every field of a POSIX stat result, times in nanoseconds.

    ``synthesized`` names the fields the driver made up because its protocol
    does not carry them (FTP has no inode numbers, for example); the
    conformance suite reports those as "plausible but synthesised".
    """

    st_mode: int
    st_ino: int
    st_dev: int
    st_nlink: int
    st_uid: int
    st_gid: int
    st_size: int
    st_atime_ns: int
    st_mtime_ns: int
    st_ctime_ns: int
    st_blksize: int
    st_blocks: int
    st_rdev: int = 0
    synthesized: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_os(cls, st: os.stat_result) -> StatResult:
        """Convert a local ``os.stat_result``; nothing is synthesised."""
        return cls(
            st_mode=st.st_mode,
            st_ino=st.st_ino,
            st_dev=st.st_dev,
            st_nlink=st.st_nlink,
            st_uid=st.st_uid,
            st_gid=st.st_gid,
            st_size=st.st_size,
            st_atime_ns=st.st_atime_ns,
            st_mtime_ns=st.st_mtime_ns,
            st_ctime_ns=st.st_ctime_ns,
            st_blksize=st.st_blksize,
            st_blocks=st.st_blocks,
            st_rdev=st.st_rdev,
        )

    @property
    def file_type(self) -> FileType:
        return FileType.from_mode(self.st_mode)

    def is_dir(self) -> bool:
        return stat_module.S_ISDIR(self.st_mode)

    def is_reg(self) -> bool:
        return stat_module.S_ISREG(self.st_mode)

    def is_lnk(self) -> bool:
        return stat_module.S_ISLNK(self.st_mode)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a driver's protocol promises, as the conformance suite's model of it.

    The suite's state machine draws only the operations a driver claims and
    compares the results with an oracle that keeps the protocol's consistency:
    ``"posix"`` (every write visible at once, to every handle and name) or
    ``"close-to-open"`` (a handle's writes reach the server at close or fsync; a
    reader opened before a writer's close may see either content). A driver
    that cannot write at all (``writable=False``) is compared on a tree made
    behind its server's back.
    """

    #: The protocol can change the server (False: every change fails, EROFS).
    writable: bool = True
    consistency: Literal["posix", "close-to-open"] = "posix"
    #: What an open handle names: the file object ("inode", as POSIX), its path as
    #: renames through this driver move it ("renames"), or the path it was opened with.
    handle_binding: Literal["inode", "renames", "path"] = "inode"
    #: close-to-open: O_TRUNC empties the file at close (the stage is stored), not at open.
    truncate_at_close: bool = False
    #: close-to-open: a write-only O_APPEND handle (not O_TRUNC) sends only what it wrote,
    #: appended to the file as it is at close or fsync (FTP's APPE), not the file of its open.
    appends_at_close: bool = False
    #: close-to-open: each write reaches the server at once and other opens may see it; only
    #: what an open reads is close-to-open (an agent's read cache over a posix driver).
    write_through: bool = False
    symlinks: bool = True
    #: O_CREAT|O_EXCL fails on any existing name, a dangling symlink too (Chirp servers
    #: create the link's target instead).
    exclusive_create_on_symlinks: bool = True
    #: A symlink's target is stored as the protocol escapes it (Chirp: a space becomes %20),
    #: so only targets without such bytes keep their text.
    symlink_targets_escaped: bool = False
    hard_links: bool = True
    #: chmod changes the mode (and stat reports the real mode bits).
    chmod: bool = True
    #: New files and directories get the mode asked for (less the umask 022).
    create_modes: bool = True
    #: The server's own modes for new (files, directories) whatever was asked (Chirp: 0600/0700).
    forced_create_modes: tuple[int, int] | None = None
    utimens: bool = True
    #: utimens works on directories too (pyftpdlib's MFMT takes files only: EPERM).
    utimens_directories: bool = True
    #: The granularity of the times utimens sets and stat reports, in nanoseconds.
    time_resolution_ns: int = 1
    #: stat reports the real link count of files.
    link_counts: bool = True
    #: rename may replace an empty directory.
    rename_over_directory: bool = True
    #: ELOOP is reported as such (False: the protocol has no code for it, EIO comes back).
    reports_eloop: bool = True
    #: When several errors apply, the one Linux checks first is reported (False: any of them).
    errno_precedence: bool = True
    #: (call, Linux's errno, the protocol's): where a protocol has no code for an error or its
    #: server checks another error first ("open", EEXIST, EISDIR). The call "*" is every call.
    errno_aliases: tuple[tuple[str, int, int], ...] = ()
    #: Names that start with a dot are listed (nginx hides them).
    lists_dotfiles: bool = True
    #: A name may end with a space (pure-ftpd stores it as '_').
    trailing_spaces: bool = True
    #: The longest name component, in bytes, the driver makes and lists back whole (Linux: 255).
    name_max: int = 255
    #: A name stays busy while a file opened under it is open, also after unlink or rename
    #: (XRootD's lock): making or opening a file there answers EBUSY until the handle closes.
    busy_names: bool = False
    #: An open file keeps its contents after its name is unlinked (rclone's VFS drops them).
    unlink_while_open: bool = True
    #: truncate(2) by path works on a file that is not open (rclone's VFS: EIO).
    truncate_by_path: bool = True
    #: open(O_RDONLY|O_CREAT) may create the file (rclone's VFS: EIO).
    create_read_only: bool = True
    #: Files below a renamed directory open at once under its new name (rclone's VFS: EIO).
    rename_directories: bool = True


@dataclass(frozen=True, slots=True)
class StatFS:
    """The fields of statfs(2) that remote protocols carry."""

    f_type: int
    f_bsize: int
    f_blocks: int
    f_bfree: int
    f_bavail: int
    f_files: int
    f_ffree: int


class FileType(Enum):
    """A directory entry's type, as getdents64's d_type names it."""

    UNKNOWN = "unknown"
    REGULAR = "regular"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    FIFO = "fifo"
    SOCKET = "socket"
    CHARDEV = "chardev"
    BLOCKDEV = "blockdev"

    @classmethod
    def from_mode(cls, mode: int) -> FileType:
        return _TYPE_BY_FMT.get(stat_module.S_IFMT(mode), cls.UNKNOWN)


_TYPE_BY_FMT: dict[int, FileType] = {
    stat_module.S_IFREG: FileType.REGULAR,
    stat_module.S_IFDIR: FileType.DIRECTORY,
    stat_module.S_IFLNK: FileType.SYMLINK,
    stat_module.S_IFIFO: FileType.FIFO,
    stat_module.S_IFSOCK: FileType.SOCKET,
    stat_module.S_IFCHR: FileType.CHARDEV,
    stat_module.S_IFBLK: FileType.BLOCKDEV,
}


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One name in a directory listing (never "." or "..")."""

    name: str
    type: FileType
    #: The entry's inode number as its stat gives it, where the listing says (0: unknown).
    ino: int = 0


@dataclass(frozen=True, slots=True)
class DirectReads:
    """How compiled code may read one open file on the driver's live connection, between
    the driver's own calls (the agent's compiled loop answers a program's reads this way).

    A read is ``request_start`` followed by ``COUNT OFFSET`` in decimal and a newline; the
    reply is a decimal count line (negative: an error, which the driver itself must be
    asked again to name) followed by that many bytes, at most COUNT; nothing else is sent
    or received meanwhile. Whoever reads this way tells the driver how many it made
    (:meth:`Driver.direct_reads_made`) and that the connection is out of step when a
    reply did not come whole (:meth:`Driver.direct_read_broke`).
    """

    socket_fd: int  # the connection's socket, valid until the driver's next call
    request_start: bytes  # b"pread 5 " on a Chirp connection
    max_count: int  # the largest COUNT one request may ask
    timeout: float  # seconds to wait for any one network event


class Driver(ABC):
    """One endpoint of one remote I/O protocol, behind POSIX-shaped calls.

    Subclasses set ``name`` (the registry name) and ``url_schemes`` (the URL
    schemes they answer, ``chirp`` for ``chirp://host:port/path``), and
    implement :meth:`from_location` plus every abstract operation.

    Drivers are not thread-safe unless they say so: give each thread its own
    driver object, or serialise the calls.
    """

    name: ClassVar[str]
    url_schemes: ClassVar[tuple[str, ...]]
    #: The protocol's usual port; remote drivers set it (the agent's /SERVICE/HOST/ paths use it).
    default_port: ClassVar[int | None] = None
    #: The agent's path prefix for this protocol (/SERVICE/HOST:PORT/...); the first URL
    #: scheme when unset (xrootd's scheme is "root", a name /root already has).
    service: ClassVar[str | None] = None
    #: What the protocol promises (the conformance suite's model); see :class:`Capabilities`.
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: Where one server implementation differs ("vsftpd": no MFMT), keyed by the server's name.
    server_capabilities: ClassVar[dict[str, Capabilities]] = {}

    @classmethod
    def capabilities_on(cls, server: str) -> Capabilities:
        """The capabilities on one server implementation (the driver's own when it names none)."""
        return cls.server_capabilities.get(server, cls.capabilities)

    def __init__(self) -> None:
        self.counters = DriverCounters()

    # -- construction and lifetime ------------------------------------------------

    @classmethod
    @abstractmethod
    def from_location(cls, location: Location, *, timeout: float = 30.0) -> Self:
        """Build a driver for the endpoint named by ``location``.

        Args:
            location: the parsed URL; its ``path`` is ignored here.
            timeout: the deadline in seconds for any one network wait.

        Raises:
            ValueError: the location is malformed for this driver.
        """

    def close_driver(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release connections and cached state. Handles become invalid."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close_driver()

    def describe(self) -> str:
        """A short human description of the endpoint, for messages."""
        return self.name

    # -- metadata -----------------------------------------------------------------

    @abstractmethod
    def stat(self, path: str) -> StatResult:
        """stat(2): follows symlinks."""

    @abstractmethod
    def lstat(self, path: str) -> StatResult:
        """lstat(2): does not follow a final symlink."""

    @abstractmethod
    def fstat(self, handle: Handle) -> StatResult:
        """fstat(2) on an open handle."""

    def stat_at_open(self, handle: Handle) -> StatResult:
        """The open file's attributes as its open saw them, for the caller that opened it.

        A protocol whose open reply carries them (Chirp, FTP's MLST) answers without
        another round trip; the default asks with :meth:`fstat`.
        """
        return self.fstat(handle)

    @abstractmethod
    def access(self, path: str, mode: int) -> None:
        """access(2) with F_OK, R_OK, W_OK, X_OK bits."""

    @abstractmethod
    def statfs(self, path: str) -> StatFS:
        """statfs(2) of the filesystem holding ``path``."""

    @abstractmethod
    def chmod(self, path: str, mode: int) -> None:
        """chmod(2)."""

    @abstractmethod
    def utimens(self, path: str, times_ns: tuple[int, int] | None = None) -> None:
        """utimensat(2): set (atime, mtime) in nanoseconds, or both to now if None.

        A driver whose protocol cannot set times must raise (ENOTSUP or EPERM),
        never report success and do nothing.
        """

    # -- open files ---------------------------------------------------------------

    @abstractmethod
    def open(self, path: str, flags: int, mode: int = 0o666) -> Handle:
        """open(2) with ``os.O_*`` flags; returns a handle for the p* calls."""

    @abstractmethod
    def close(self, handle: Handle) -> None:
        """close(2). After an error the handle is still released."""

    @abstractmethod
    def pread(self, handle: Handle, size: int, offset: int) -> bytes:
        """pread(2): at most ``size`` bytes at ``offset``; b"" at end of file."""

    def pread_into(self, handle: Handle, buffer: memoryview, offset: int) -> int:
        """pread(2) into ``buffer`` (at most its length) at ``offset``: the bytes read, 0 at end.

        A driver that can receive into the caller's memory overrides this; this one copies.
        """
        data = self.pread(handle, len(buffer), offset)
        buffer[: len(data)] = data
        return len(data)

    def direct_reads(self, handle: Handle) -> DirectReads | None:
        """How compiled code may read ``handle`` on this driver's connection now (see
        :class:`DirectReads`); None where the protocol or the connection's state does not
        allow it (the default)."""
        return None

    def direct_reads_made(self, requests: int, sent: int, received: int) -> None:  # noqa: B027
        """``requests`` reads made through :meth:`direct_reads` (``sent`` bytes of requests,
        ``received`` of replies): counted as this driver's own preads."""

    def direct_read_broke(self, errno_value: int) -> None:  # noqa: B027
        """A read made through :meth:`direct_reads` left the connection out of step
        (``errno_value``: ETIMEDOUT, ECONNRESET, EPROTO...): the driver drops it before
        its next call, as if that call had found it broken."""

    @abstractmethod
    def pwrite(self, handle: Handle, data: bytes, offset: int) -> int:
        """pwrite(2): returns the number of bytes written."""

    def fchmod(self, handle: Handle, mode: int) -> None:
        """fchmod(2) of an open file, whatever its name now. A protocol that changes modes
        by path only cannot (ENOTSUP): the agent asks this only for a file whose name was
        unlinked or replaced since it was opened, and chmods by path otherwise."""
        raise OSError(errno.ENOTSUP, f"{self.name}: no mode change through an open file")

    @abstractmethod
    def fsync(self, handle: Handle) -> None:
        """fsync(2)."""

    @abstractmethod
    def ftruncate(self, handle: Handle, length: int) -> None:
        """ftruncate(2)."""

    @abstractmethod
    def truncate(self, path: str, length: int) -> None:
        """truncate(2)."""

    # -- the namespace ------------------------------------------------------------

    @abstractmethod
    def readdir(self, path: str) -> list[DirEntry]:
        """The entries of a directory, without "." and "..", in server order."""

    @abstractmethod
    def mkdir(self, path: str, mode: int = 0o777) -> None:
        """mkdir(2)."""

    @abstractmethod
    def rmdir(self, path: str) -> None:
        """rmdir(2)."""

    @abstractmethod
    def unlink(self, path: str) -> None:
        """unlink(2)."""

    @abstractmethod
    def rename(self, old: str, new: str) -> None:
        """rename(2): atomically replaces ``new`` where POSIX allows."""

    @abstractmethod
    def link(self, old: str, new: str) -> None:
        """link(2): a hard link."""

    @abstractmethod
    def symlink(self, target: str, linkpath: str) -> None:
        """symlink(2): ``target`` is stored as text."""

    @abstractmethod
    def readlink(self, path: str) -> str:
        """readlink(2)."""

    # -- conveniences built on the operations above ---------------------------------

    def read_file(self, path: str, chunk: int = 1 << 20) -> bytes:
        """Read a whole file with open/pread/close."""
        handle = self.open(path, os.O_RDONLY)
        try:
            parts: list[bytes] = []
            offset = 0
            while True:
                data = self.pread(handle, chunk, offset)
                if not data:
                    return b"".join(parts)
                parts.append(data)
                offset += len(data)
        finally:
            self.close(handle)

    def write_file(self, path: str, data: bytes, mode: int = 0o666, chunk: int = 1 << 20) -> None:
        """Create or replace a file with open/pwrite/close."""
        handle = self.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            offset = 0
            while offset < len(data):
                written = self.pwrite(handle, data[offset : offset + chunk], offset)
                if written <= 0:
                    raise_errno(errno.EIO, path)
                offset += written
        finally:
            self.close(handle)
