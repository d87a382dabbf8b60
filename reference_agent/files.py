"""Remote open file descriptions, and how a tracee descriptor finds its own.

Strategy: when a program opens a remote file, the agent turns the open into
``memfd_create`` in the tracee. The kernel then hands out the descriptor
number (lowest free, O_CLOEXEC honoured) and does all the bookkeeping POSIX
asks of descriptors: dup, dup2, fcntl(F_DUPFD), fork, threads sharing a
table, close-on-exec. The memfd is a *placeholder*: its inode number names
the remote open file description (:class:`RemoteFile`), which holds the
driver handle, the open flags and the offset shared by every descriptor that
refers to it. To find what descriptor N of process P means, the agent stats
``/proc/P/fd/N``; a placeholder inode maps to its RemoteFile, anything else
is a local file the kernel serves natively.

A RemoteFile is released when no traced process holds its placeholder any
more (checked after close, dup2 onto it, exec and exit).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from drivers import DirectReads, DirEntry, Driver, Handle, StatResult
from reference_agent.mapped_copy import MappedCopy
from reference_agent.read_cache import FILL_MAX, MAX_BLOCK, ReadBuffer
from reference_agent.read_memory import Scratch
from reference_agent.real_path import thread_group
from reference_agent.whole_cache import write_back

__all__ = [
    "Change",
    "RemoteFile",
    "RemoteFileTable",
    "Truncated",
    "Wrote",
    "held_elsewhere",
    "moved_path",
]

#: /proc/self/fd/N, /proc/thread-self/fd/N, /proc/PID/fd/N (and task/TID/fd/N), and below.
_PROC_FD = re.compile(r"^/proc/(self|thread-self|\d+)(?:/task/(\d+))?/fd/(\d+)(/.*)?$")


@dataclass(frozen=True, slots=True)
class Wrote:
    """A change to a remote file: ``data`` written at ``offset`` (what reached the server)."""

    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Truncated:
    """A change to a remote file: its length set to ``length``."""

    length: int


#: How a remote file changed through the agent.
Change = Wrote | Truncated


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    written = 0
    while written < len(data):
        written += os.pwrite(fd, memoryview(data)[written:], offset + written)


class DirectSlot(Protocol):
    """A remote open whose reads the compiled loop answers (``_fastpath.DirectSlot``)."""

    @property
    def index(self) -> int: ...
    @property
    def offset(self) -> _Cell: ...
    @property
    def live(self) -> bool: ...
    def release(self) -> None: ...


class _Cell(Protocol):
    value: int


@dataclass(frozen=True, slots=True)
class DirectOpen:
    """What the compiled loop needs to answer one remote open's reads itself."""

    reads: DirectReads  # the driver's connection, and the request for this open
    placeholder: tuple[int, int]  # the (device, inode) the program's descriptors name
    offset: int  # the open's offset when handed over
    min_count: int  # a smaller read stays the agent's
    limit: int | None  # a read ending past this stays the agent's (None: none does)
    on_broken: Callable[[int], None]  # a read left the connection out of step (errno)
    on_made: Callable[[int, int, int], None]  # requests made, bytes sent, bytes received


class DirectServer(Protocol):
    """The compiled loop's side of reads it answers itself (``_fastpath.FastPath.serve``)."""

    def serve(self, open_file: DirectOpen) -> DirectSlot | None: ...


@dataclass(slots=True)
class RemoteFile:
    """One remote open file description."""

    driver: Driver
    handle: Handle
    logical: str  # the path the program opened, in its namespace
    remote_path: str  # the path inside the driver's endpoint
    flags: int
    is_dir: bool
    dev: int  # the device number the agent reports for this endpoint
    _offset: int = 0  # the open's offset (``offset``) while no compiled loop moves it
    listing: list[DirEntry] | None = None  # a directory's entries, fetched at first getdents
    materialized: bool = False  # the placeholder holds the file's bytes (for mmap)
    key: tuple[int, int] = field(default=(0, 0))
    local_copy: str | None = None  # --cache whole: the local file the program works on
    synced: tuple[int, int] | None = None  # (mtime_ns, size) of local_copy when last sent
    #: A shared writable mapping of the placeholder exists: what it stores goes back at
    #: close and fsync (the copy tells what that is).
    mapping: MappedCopy | None = None
    #: The name was unlinked, or replaced by a rename, through this agent since the open:
    #: ``remote_path`` names another file or none, so nothing is asked of it by name.
    name_gone: bool = False
    #: O_PATH|O_NOFOLLOW on a symlink: the descriptor names the link; no handle is open.
    is_link: bool = False
    #: --cache cto: this open's read buffer (None: every read asks the driver).
    reader: ReadBuffer | None = None
    #: --cache cto, a small file opened read-only, or an empty one opened read-write (the
    #: placeholder then mirrors the file as the program writes it): the placeholder holds
    #: the file's bytes and the kernel answers reads and seeks on it (its offset is the
    #: kernel's, not ``offset``); ``fill_fd`` is the agent's own descriptor of the
    #: placeholder.
    filled: bool = False
    fill_fd: int = -1
    #: --cache-dir: the program has the copy runs share open (no handle; never written or
    #: removed by this run); this is the remote file's stat when it was opened, what fstat
    #: of the descriptor tells.
    cached: StatResult | None = None
    #: Opens of this file's --cache whole copy that the agent rewrote and the kernel has
    #: not made yet (their exit stops not seen): the copy is held meanwhile, though no
    #: descriptor shows it (a release then would remove the copy under them), and found by
    #: other opens of the file before any of them is made (``RemoteFileTable.live_copy``).
    opening: int = 0
    #: The server's inode number of the open file, once asked (``identity``).
    inode: int | None = None
    #: Where the protocol has no inode numbers: the name the agent knows the file by for
    #: locks since its own name was unlinked or replaced (one no path can take).
    former_name: str | None = None
    #: The compiled loop answers this open's reads (``RemoteFileTable.read_directly``);
    #: the offset is then the slot's, which those reads move.
    direct: DirectSlot | None = None

    @property
    def offset(self) -> int:
        """The open's offset: the agent keeps it (the placeholder's own never moves)."""
        direct = self.direct
        return self._offset if direct is None else direct.offset.value

    @offset.setter
    def offset(self, value: int) -> None:
        direct = self.direct
        if direct is None:
            self._offset = value
        else:
            direct.offset.value = value

    def stop_direct_reads(self) -> None:
        """The agent answers this open's reads itself from now on."""
        direct = self.direct
        if direct is None:
            return
        self._offset = direct.offset.value
        self.direct = None
        direct.release()

    def stat(self) -> StatResult:
        """fstat(2) of the descriptor: the open file's, or the link's own. A ``--cache
        whole`` copy changed since it was last sent has the copy's size and times: the
        program's writes and truncates are there until close sends them."""
        if self.is_link:
            return self.driver.lstat(self.remote_path)
        if self.cached is not None:
            return self.cached
        st = self.driver.fstat(self.handle)
        if self.local_copy is None:
            return st
        copy = os.stat(self.local_copy)
        if (copy.st_mtime_ns, copy.st_size) == self.synced:
            return st
        return dataclasses.replace(
            st,
            st_size=copy.st_size,
            st_blocks=copy.st_blocks,
            st_atime_ns=copy.st_atime_ns,
            st_mtime_ns=copy.st_mtime_ns,
            st_ctime_ns=copy.st_ctime_ns,
        )

    def identity(self) -> int | str:
        """Which file this is on its server: its inode number, asked of the open file once
        (a rename or unlink of its name does not change it), or where the protocol makes
        inode numbers up from paths, the path it has now (or, once that name was unlinked or
        replaced, the name it was set apart under)."""
        if self.inode is None:
            st = self.cached or (
                self.driver.lstat(self.remote_path)
                if self.is_link
                else self.driver.fstat(self.handle)
            )
            if "st_ino" in st.synthesized:
                return self.former_name if self.former_name is not None else self.remote_path
            self.inode = st.st_ino
        return self.inode

    def chmod(self, mode: int) -> None:
        """fchmod(2): by name, unless the name was unlinked or replaced (then through the
        open file itself, where the protocol can; ENOTSUP where it cannot)."""
        if self.name_gone:
            self.driver.fchmod(self.handle, mode & 0o7777)
        else:
            self.driver.chmod(self.remote_path, mode & 0o7777)

    def pread(self, size: int, offset: int) -> bytes:
        """Read from the placeholder when it holds the bytes (filled or mirrored), else
        through this open's buffer (``--cache cto``), else from the driver."""
        if self.filled:
            return os.pread(self.fill_fd, size, offset)
        if self.mapping is not None:
            return self.mapping.read(size, offset)
        if self.reader is None:
            return self.driver.pread(self.handle, size, offset)
        return self.reader.read(self._fetch_into, size, offset)

    def read_views(self, size: int, offset: int, scratch: Scratch) -> list[memoryview]:
        """Up to ``size`` bytes at ``offset`` as views, valid until the next read: of this
        open's buffer (``--cache cto``), else of ``scratch``, received into it by the driver.
        (The kernel reads a filled or mirrored placeholder: the agent never does.) An open
        with a shared writable mapping reads its placeholder: the mapping's stores are in it."""
        if self.mapping is not None:
            return [memoryview(self.mapping.read(size, offset))]
        if self.reader is not None:
            return self.reader.read_views(self._fetch_into, size, offset)
        view = scratch.view(size)
        return [view[: self.driver.pread_into(self.handle, view, offset)]]

    def _fetch_into(self, buffer: memoryview, offset: int) -> int:
        return self.driver.pread_into(self.handle, buffer, offset)

    @property
    def fillable(self) -> bool:
        """Whether :meth:`fill` would hand this open's reads to the kernel now."""
        reader = self.reader
        return not (
            self.filled
            or reader is None
            or self.flags & (os.O_ACCMODE | os.O_PATH) != os.O_RDONLY
            or self.offset != 0
            or reader.size is None
            or reader.size > FILL_MAX
            or self.mapping is not None
        )

    def fill(self, pid: int, fd: int) -> bool:
        """Put the whole file in the placeholder behind descriptor ``fd`` of ``pid`` so that
        the kernel reads it from now on; False (nothing changed) where that cannot be the
        same as reading through the agent.

        Only a read-only open with a read buffer (``--cache cto``) of at most ``FILL_MAX``
        bytes whose offset is still 0 is filled: the placeholder's own offset never moved
        (the agent answered every call on it), so from 0 on the kernel's is the same.
        """
        reader = self.reader
        if not self.fillable or reader is None or reader.size is None:
            return False
        try:
            fill_fd = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return False  # out of descriptors, say: the agent goes on answering reads itself
        try:
            size = reader.size
            data = b"".join(reader.read_views(self._fetch_into, size, 0)) if size else b""
            reader.set_aside()  # the placeholder holds the bytes now
            self.fill_fd = fill_fd
            self._put(data)
        except BaseException:
            os.close(fill_fd)
            self.fill_fd = -1
            raise
        self.filled = self.materialized = True
        return True

    def mirror(self, pid: int, fd: int) -> bool:
        """Let the placeholder behind descriptor ``fd`` of ``pid`` mirror a file opened
        read-write while it is empty (an assembler's object, a linker's output), so that the
        kernel answers its reads and seeks; False (nothing changed) where that cannot be the
        same as answering them in the agent.

        Every write still reaches the server first (the write handlers, then the kernel
        writes the same bytes to the placeholder); changes through other opens reach the
        placeholder as they do a filled one's (:meth:`follow`). Only a driver that sends
        each write at once (posix consistency) qualifies, and only without O_APPEND, whose
        writes land at the server's end.
        """
        capabilities = self.driver.capabilities
        if (
            self.filled
            or self.reader is None
            or self.reader.size != 0
            or self.flags & (os.O_ACCMODE | os.O_PATH | os.O_APPEND) != os.O_RDWR
            or capabilities.consistency != "posix"
            or capabilities.busy_names
            or self.mapping is not None
        ):
            return False
        try:
            self.fill_fd = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return False  # the agent goes on answering reads and seeks itself
        self.reader.set_aside()  # the placeholder holds the bytes; the buffer follows nothing
        self.filled = self.materialized = True
        return True

    def unmirror(self, offset: int) -> None:
        """Answer reads and seeks in the agent again, from ``offset`` (the kernel's). The
        placeholder keeps the bytes it has but follows no more writes: an mmap fetches the
        file again, unless a shared mapping of the placeholder is the file's bytes now."""
        self.filled = False
        self.materialized = self.mapping is not None
        if self.mapping is not None:
            self.mapping.filled = False  # the agent keeps the placeholder in step again
        self.offset = offset
        if self.reader is not None:
            self.reader.forget()  # it followed no write while the kernel answered reads

    def copy_whole(self, into: int) -> int:
        """Make local descriptor ``into`` hold the whole file, read from the driver now; its size."""
        os.ftruncate(into, 0)
        offset = 0
        while data := self.driver.pread(self.handle, FILL_MAX, offset):
            _pwrite_all(into, data, offset)
            offset += len(data)
        return offset

    def map_shared(self, pid: int, fd: int) -> None:
        """A shared writable mapping of the placeholder behind ``fd`` of ``pid`` was made
        (the placeholder holds the file, as it was filled for this mmap or kept since):
        from now on what the mapping stores is sent back at fsync and close, and only that
        (:class:`MappedCopy`)."""
        self.stop_direct_reads()  # reads must see the mapping's stores: the placeholder's
        self.mapping = MappedCopy(
            os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC), filled=self.filled
        )

    def send_mapped(self) -> None:
        """Send what the shared mapping stored since the last time (nothing else)."""
        if self.mapping is None:
            return
        for offset, data in self.mapping.changes():
            done = 0
            while done < len(data):
                wrote = self.driver.pwrite(self.handle, data[done:], offset + done)
                if wrote <= 0:  # a server taking nothing would hold the close for ever
                    raise OSError(errno.EIO, f"{self.logical}: the server took no bytes")
                done += wrote
            self.mapping.sent(offset, data)
        if self.reader is not None:
            self.reader.forget()

    def send_back(self, in_place: bool = False) -> None:
        """What close and fsync send: a shared mapping's stores, a ``--cache whole`` copy
        (``in_place``: see :meth:`sync`)."""
        self.send_mapped()
        self.sync(in_place)

    def copy_changed(self) -> bool:
        """--cache whole: whether the local copy changed since it was last sent (a copy
        opened read-only is never sent)."""
        if self.local_copy is None or self.read_only:
            return False
        st = os.stat(self.local_copy)
        return (st.st_mtime_ns, st.st_size) != self.synced

    def outdated(self) -> None:
        """The file changed in a way the placeholder does not follow (it is neither filled
        nor mapped shared): what an earlier mmap copied into it is old, and the next mmap
        or sendfile copies the file again."""
        if not self.filled and self.mapping is None and self.local_copy is None:
            self.materialized = False

    def changed_elsewhere(self, change: Change) -> None:
        """The file changed through another descriptor of this agent, or by name: this open
        reads it afresh, a filled or shared-mapped placeholder takes the change, and one
        filled for an earlier mmap is filled again at the next. A --cache whole copy takes
        the change too: every descriptor of the file in this run is one of the copy."""
        self.outdated()
        self._copy_takes(change)
        if self.mapping is not None:
            if isinstance(change, Wrote):
                self.mapping.wrote(change.offset, change.data)
            else:
                self.mapping.truncated(change.length)
        if self.filled:
            self.follow(change)
        elif self.reader is not None:
            self.reader.forget()

    def _copy_takes(self, change: Change) -> None:
        """A --cache whole copy of this run takes the change; the runs' shared copy of a
        --cache-dir never does (other runs read it as the file it was fetched as)."""
        if self.local_copy is None or self.cached is not None:
            return
        with open(self.local_copy, "r+b", buffering=0) as copy:
            if isinstance(change, Wrote):
                _pwrite_all(copy.fileno(), change.data, change.offset)
            else:
                os.ftruncate(copy.fileno(), change.length)

    def times_set(self, times: tuple[int, int] | None) -> None:
        """Times were set on the file (None: now): a --cache whole copy of this run carries
        them too, or sending it at close would undo them (never the runs' shared copy)."""
        if self.local_copy is None or self.cached is not None:
            return
        if times is None:
            os.utime(self.local_copy)
        else:
            os.utime(self.local_copy, ns=times)

    def follow(self, change: Change) -> None:
        """The file changed through another open of this agent: the placeholder takes the
        change (the program's own changes are seen at once, without reading the file again)."""
        if isinstance(change, Wrote):
            _pwrite_all(self.fill_fd, change.data, change.offset)
        else:
            os.ftruncate(self.fill_fd, change.length)
        if self.reader is not None:
            self.reader.forget()

    def _put(self, data: bytes) -> None:
        os.ftruncate(self.fill_fd, len(data))
        _pwrite_all(self.fill_fd, data, 0)

    def pwrite(self, data: bytes, offset: int, *, kernel_follows: bool = False) -> int:
        """Write through to the driver; this open's buffer sees it, and so does a mirroring
        placeholder, unless ``kernel_follows``: the program's own write is resumed after
        this one and makes the same change there (if the server took all of ``data``)."""
        written = self.driver.pwrite(self.handle, data, offset)
        self.outdated()
        if self.mapping is not None:
            self.mapping.wrote(offset, memoryview(data)[:written])
        if self.filled:  # a mirror: the placeholder takes what the server took
            if not kernel_follows:
                _pwrite_all(self.fill_fd, data[:written], offset)
        elif self.reader is not None:
            self.reader.wrote(offset, memoryview(data)[:written])
        return written

    def ftruncate(self, length: int) -> None:
        self.driver.ftruncate(self.handle, length)
        self.outdated()
        if self.mapping is not None:
            self.mapping.truncated(length)
        if self.filled:
            os.ftruncate(self.fill_fd, length)
        elif self.reader is not None:
            self.reader.truncated(length)

    @property
    def read_only(self) -> bool:
        """Opened for reading only (no write to finish, no local copy to send back)."""
        return self.flags & (os.O_ACCMODE | os.O_PATH) == os.O_RDONLY

    @property
    def quiet_release(self) -> bool:
        """Whether releasing this open does nothing anyone can see but close the server's
        handle: opened read-only, or writable through a driver whose every write reaches
        the server at once (posix consistency, not a stage sent at close) with no local
        copy to send back, and whose open handles keep no name busy."""
        if self.read_only:
            return True
        capabilities = self.driver.capabilities
        return (
            capabilities.consistency == "posix"
            and not capabilities.busy_names
            and self.local_copy is None
        )

    def sync(self, in_place: bool = False) -> None:
        """--cache whole: send the local copy to the server if it changed since last time.

        A new file renamed over the name replaces the old contents in one step, but it is
        another file (another inode number); ``in_place`` rewrites the file itself instead,
        for a copy that stays open in the run (fsync, or a close while other descriptors
        hold it): a program holding it sees the same file before and after (sqlite checks
        that its database's inode number has not changed)."""
        if self.local_copy is None or self.flags & os.O_ACCMODE == os.O_RDONLY:
            return
        if self.name_gone:
            return  # unlinked or replaced: its bytes go with it, never over another file
        st = os.stat(self.local_copy)
        state = (st.st_mtime_ns, st.st_size)
        if state == self.synced:
            return
        with open(self.local_copy, "rb") as copy:
            data = copy.read()
        # A temporary name renamed over the file: a failure leaves the old contents. A file
        # with other names is rewritten itself, so that they see the new contents too.
        server = self.driver.fstat(self.handle)
        linked = in_place or (server.st_nlink > 1 and "st_nlink" not in server.synthesized)
        times = (st.st_atime_ns, st.st_mtime_ns)
        write_back(self.driver, self.remote_path, data, server.st_mode, times, linked=linked)
        self.synced = state
        if not linked:
            self.inode = None  # a new file took the name: its inode number is asked again
        with contextlib.suppress(OSError):  # the handle named the replaced file: follow the name
            keep = self.flags & ~(os.O_CREAT | os.O_TRUNC | os.O_EXCL)
            fresh = self.driver.open(self.remote_path, keep)
            with contextlib.suppress(OSError):
                self.driver.close(self.handle)
            self.handle = fresh


#: Which of the (device, inode) keys a descriptor of the given tasks refers to.
HeldScan = Callable[[Sequence[int], Sequence[tuple[int, int]]], list[bool]]


def held_elsewhere(pids: Sequence[int], key: tuple[int, int], pid: int, fd: int) -> bool:
    """Whether a descriptor of ``pids`` other than ``fd`` of ``pid``'s process refers to
    ``key`` (stat of /proc/PID/fd/N; threads of one process share their descriptors)."""
    own = thread_group(pid)
    for task in pids:
        mine = thread_group(task) == own
        with contextlib.suppress(OSError):
            for entry in os.listdir(f"/proc/{task}/fd"):
                if mine and int(entry) == fd:
                    continue
                with contextlib.suppress(OSError):
                    st = os.stat(f"/proc/{task}/fd/{entry}")
                    if (st.st_dev, st.st_ino) == key:
                        return True
    return False


def mapped_by(pids: Sequence[int], keys: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Which of ``keys`` (device, inode) a memory mapping of ``pids`` holds (/proc/PID/maps
    names each mapped file by its device as "major:minor" and its inode)."""
    wanted = {(os.major(dev), os.minor(dev), ino): (dev, ino) for dev, ino in keys}
    found: set[tuple[int, int]] = set()
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) < 5 or fields[4] == "0":
                    continue
                major, _, minor = fields[3].partition(":")
                key = wanted.get((int(major, 16), int(minor, 16), int(fields[4])))
                if key is not None:
                    found.add(key)
        if len(found) == len(wanted):
            break
    return found


def scan_held(pids: Sequence[int], keys: Sequence[tuple[int, int]]) -> list[bool]:
    """Which of ``keys`` some descriptor of ``pids`` refers to (stat of /proc/PID/fd/N); it
    stops looking once all are found. A task that is gone holds nothing."""
    wanted = {key: index for index, key in enumerate(keys)}
    held = [False] * len(keys)
    for pid in pids:
        if not wanted:
            break
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    st = os.stat(f"/proc/{pid}/fd/{fd}")
                    index = wanted.pop((st.st_dev, st.st_ino), None)
                    if index is not None:
                        held[index] = True
    return held


class RemoteFileTable:
    """Placeholder inode -> RemoteFile, for the whole traced program tree."""

    def __init__(self) -> None:
        self._files: dict[tuple[int, int], RemoteFile] = {}
        #: How :meth:`collect` asks which placeholders are still held (the agent puts the
        #: compiled scan here when it has one: a close of a remote file asks each time).
        self.held_scan: HeldScan = scan_held
        #: --cache whole: copies none of whose opens the kernel has made yet; an open of
        #: the same file meanwhile (another process's, between this one's entry and exit)
        #: shares them too, or the two would work on two copies (and lock two files).
        self._copies_opening: list[RemoteFile] = []
        #: The opens with a shared writable mapping (``map_shared``): every remote open asks
        #: whether its file has one, and most runs have none to look through.
        self._mapped: list[RemoteFile] = []
        #: The compiled loop, where it answers reads of remote files itself (None: the
        #: agent answers them all).
        self.direct: DirectServer | None = None
        self._loud = 0  # files held whose release someone may see (not quiet_release)
        #: Changes each time a placeholder is added or released (the fast path's cue).
        self.version = 0

    def __len__(self) -> int:
        return len(self._files)

    @property
    def all_quiet(self) -> bool:
        """Whether releasing any remote file held would go unseen (``quiet_release``)."""
        return self._loud == 0

    def placeholder_keys(self) -> list[tuple[int, int, bool, int]]:
        """The (device, inode) of every placeholder, whether the kernel holds its bytes
        (filled, or a --cache whole copy): a descriptor of any other file is local, and reads
        and seeks of such a one are the kernel's; and the slot of the compiled loop that
        answers its reads (-1: none)."""
        return [
            (
                dev,
                ino,
                remote.filled or remote.local_copy is not None,
                -1 if remote.direct is None else remote.direct.index,
            )
            for (dev, ino), remote in self._files.items()
        ]

    def read_directly(self, remote: RemoteFile) -> None:
        """At an open of ``remote``, or after the agent answered a read of it: let the
        compiled loop answer its next ones where the driver allows it
        (``Driver.direct_reads``) and nothing but the server's bytes may answer them: not a
        directory, a link, a filled or mirrored placeholder, a shared mapping's file or a
        local copy. Under ``--cache cto`` only
        reads the open's buffer would fetch whole anyway (at least ``MAX_BLOCK`` bytes)
        within the size the open knows; a smaller one stays with the buffer."""
        server, direct = self.direct, remote.direct
        if server is None or (direct is not None and direct.live):
            return
        if (
            remote.is_dir
            or remote.is_link
            or remote.filled
            or remote.fillable  # its first read hands it to the kernel
            or remote.mapping is not None
            or remote.local_copy is not None
            or remote.cached is not None
            or remote.flags & os.O_PATH
            or remote.flags & os.O_ACCMODE == os.O_WRONLY
            or remote.key not in self._files
        ):
            return
        reads = remote.driver.direct_reads(remote.handle)
        if reads is None:
            return
        remote.stop_direct_reads()  # a slot whose connection is gone: counted, given back
        reader = remote.reader
        slot = server.serve(
            DirectOpen(
                reads,
                placeholder=remote.key,
                offset=remote.offset,
                min_count=1 if reader is None else MAX_BLOCK,
                limit=None if reader is None else reader.size,
                on_broken=remote.driver.direct_read_broke,
                on_made=remote.driver.direct_reads_made,
            )
        )
        if slot is not None:
            remote.direct = slot  # the C side's entry of its placeholder has the slot too

    def fill(self, pid: int, fd: int, remote: RemoteFile) -> bool:
        """:meth:`RemoteFile.fill`, told to the fast path when it happened."""
        if not remote.fill(pid, fd):
            return False
        self.version += 1
        return True

    def mirror(self, pid: int, fd: int, remote: RemoteFile) -> bool:
        """:meth:`RemoteFile.mirror`, told to the fast path when it happened."""
        if not remote.mirror(pid, fd):
            return False
        self.version += 1
        return True

    def unmirror(self, remote: RemoteFile, offset: int) -> None:
        """:meth:`RemoteFile.unmirror`, told to the fast path."""
        remote.unmirror(offset)
        self.version += 1

    def add(self, pid: int, fd: int, remote: RemoteFile) -> None:
        st = os.stat(f"/proc/{pid}/fd/{fd}")
        remote.key = (st.st_dev, st.st_ino)
        stale = self._files.get(remote.key)
        if stale is remote:
            return
        if stale is not None:  # closed, not collected yet, and its inode number reused
            self._drop(stale)
        self._files[remote.key] = remote
        self._loud += not remote.quiet_release
        self.version += 1

    def live_copy(
        self, driver: Driver, path: str, st: StatResult | None = None
    ) -> RemoteFile | None:
        """--cache whole: the open whose local copy holds the file at ``path`` now, if any;
        with the file's stat ``st``, also one opened under another name of it (a symlink, a
        hard link), known by the server's inode number."""
        inode = st.st_ino if st is not None and "st_ino" not in st.synthesized else None
        for remote in [*self._files.values(), *self._copies_opening]:
            if (
                remote.local_copy is not None
                and remote.cached is None  # the runs' shared copy is never written
                and remote.driver is driver
                and not remote.name_gone
                and (remote.remote_path == path or (inode is not None and remote.inode == inode))
            ):
                return remote
        return None

    def copy_opening(self, remote: RemoteFile) -> None:
        """--cache whole: the agent rewrote an open of ``remote``'s copy; the kernel makes it
        next (``copy_opened``). The first open of a copy makes it findable at once."""
        remote.opening += 1
        known = self._files.get(remote.key) is remote
        if not known and remote not in self._copies_opening:
            self._copies_opening.append(remote)

    def copy_opened(self, remote: RemoteFile, pid: int, result: int) -> None:
        """--cache whole: an open of ``remote``'s copy was made (``result``: the descriptor
        of ``pid``, or -errno). The first that succeeds puts the copy in the table; when
        every open of a copy new to the table failed, the copy goes (its handle closed,
        its local file removed)."""
        remote.opening -= 1
        known = self._files.get(remote.key) is remote
        if result >= 0 and not known:
            self.add(pid, result, remote)
            known = True
        if known or not remote.opening:
            with contextlib.suppress(ValueError):
                self._copies_opening.remove(remote)
        if not known and not remote.opening:
            _release(remote)

    def opened_for_writing(self, remote: RemoteFile, handle: Handle, flags: int) -> None:
        """--cache whole: ``remote``'s copy, open read-only so far, was opened for writing:
        from now on it is written back, through ``handle`` (opened with ``flags``)."""
        assert remote.local_copy is not None
        self._loud -= not remote.quiet_release
        with contextlib.suppress(OSError):
            remote.driver.close(remote.handle)
        copy = os.stat(remote.local_copy)
        remote.handle, remote.flags = handle, flags
        remote.synced = (copy.st_mtime_ns, copy.st_size)
        self._loud += not remote.quiet_release

    def lookup(self, pid: int, fd: int, seen: tuple[int, int] | None = None) -> RemoteFile | None:
        """The RemoteFile behind descriptor ``fd`` of ``pid``, or None if it is local.

        ``seen``: the (device, inode) the descriptor's /proc link named a moment ago, at this
        stop (the compiled fast path's stat): then it is not stat'ed again.
        """
        if not self._files or fd < 0:
            return None
        if seen is not None:
            return self._files.get(seen)
        try:
            st = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            return None
        return self._files.get((st.st_dev, st.st_ino))

    def behind_proc_link(self, pid: int, path: str) -> tuple[RemoteFile, str] | None:
        """The remote file a /proc/.../fd/N path of ``pid`` names, and what follows N.

        The kernel would follow such a link to the placeholder; the program means the file.
        """
        match = _PROC_FD.match(path)
        if match is None:
            return None
        who, task, fd, rest = match.groups()
        owner = int(task) if task else pid if who in ("self", "thread-self") else int(who)
        remote = self.lookup(owner, int(fd))
        return None if remote is None else (remote, rest or "")

    def map_shared(self, remote: RemoteFile, pid: int, fd: int) -> None:
        """:meth:`RemoteFile.map_shared`, and ``remote`` among the mapped opens."""
        remote.map_shared(pid, fd)
        if remote not in self._mapped:
            self._mapped.append(remote)

    def _mapped_opens(self, driver: Driver, path: str) -> list[RemoteFile]:
        """The opens of the file at ``path`` with a shared writable mapping."""
        return [
            remote
            for remote in self._mapped
            if remote.driver is driver and remote.remote_path == path
        ]

    def mapped(self, driver: Driver, path: str) -> bool:
        """Whether an open of the file at ``path`` has a shared writable mapping (whose
        stores go to the server when it is released, once the map is gone)."""
        return bool(self._mapped_opens(driver, path))

    def mapped_elsewhere(self, remote: RemoteFile, pids: Sequence[int]) -> RemoteFile | None:
        """Another open of the same remote file with a shared writable mapping that some
        process of ``pids`` still has (the agent does not see munmap: /proc/PID/maps tells)."""
        others = [
            o for o in self._mapped_opens(remote.driver, remote.remote_path) if o is not remote
        ]
        if not others:
            return None
        mapped = mapped_by(pids, {other.key for other in others})
        return next((other for other in others if other.key in mapped), None)

    def unnamed(self, driver: Driver, path: str, former_name: str) -> None:
        """``path`` was unlinked or renamed over through ``driver``: the files open under
        that name keep their contents but no longer have it (``former_name`` is what
        they are known by for locks where the protocol has no inode numbers)."""
        for remote in self._files.values():
            if remote.driver is driver and remote.remote_path == path and not remote.name_gone:
                remote.name_gone = True
                remote.former_name = former_name

    def renamed(
        self, driver: Driver, old: str, new: str, old_logical: str, new_logical: str
    ) -> None:
        """``old`` was renamed to ``new`` through ``driver`` (remote paths; ``old_logical``
        and ``new_logical`` in the program's namespace): every open file or directory at or
        below it is named from the new place, as its inode would be."""
        for remote in self._files.values():
            if remote.name_gone:
                continue
            logical = moved_path(remote.logical, old_logical, new_logical)
            if logical is not None:
                remote.logical = logical
            if remote.driver is driver:
                path = moved_path(remote.remote_path, old, new)
                if path is not None:
                    remote.remote_path = path

    def changed(
        self,
        driver: Driver,
        remote_path: str,
        change: Change,
        by: RemoteFile | None = None,
        inode: int | None = None,
    ) -> None:
        """The file changed as ``change`` says (through ``by``, or by name): its other opens
        read it afresh, filled and shared-mapped placeholders take the change, and others
        filled for an mmap are filled again at the next one. Its other opens are those of
        its inode number (``inode``, else ``by``'s; opened through a symlink or another hard
        link too) and, where a number is not known, those of its name."""
        if inode is None and by is not None:
            inode = by.inode
        for other in self._files.values():
            if other is by or other.driver is not driver:
                continue
            if inode is not None and other.inode is not None:
                if other.inode != inode:
                    continue  # another file, even under this name (one unlinked since)
            elif other.remote_path != remote_path or other.name_gone:
                continue
            try:
                other.changed_elsewhere(change)
            except OSError as exc:
                # The change itself succeeded; the program is told where a person sees it.
                print(
                    f"aviary: refreshing the open copy of {other.logical} failed: "
                    f"{exc.strerror or exc}",
                    file=sys.stderr,
                )

    def collect(self, live_pids: Iterable[int]) -> list[RemoteFile]:
        """Release every RemoteFile no live process holds a placeholder of; return them."""
        if not self._files:
            return []
        keys, pids = list(self._files), list(live_pids)
        held = self.held_scan(pids, keys)
        released = [
            self._files[key]
            for key, kept in zip(keys, held, strict=True)
            if not kept and not self._files[key].opening
        ]
        # A shared mapping outlives the descriptor it was made through: its stores reach the
        # server at the release, once no process maps the placeholder (or the --cache whole
        # copy, which the kernel maps itself) any more.
        mapped_keys = {
            remote.key
            for remote in released
            if remote.mapping is not None or (remote.local_copy is not None and not remote.cached)
        }
        if mapped_keys:
            still_mapped = mapped_by(pids, mapped_keys)
            released = [remote for remote in released if remote.key not in still_mapped]
        for remote in released:
            self._drop(remote)
        if released:
            self.version += 1
        return released

    def _drop(self, remote: RemoteFile) -> None:
        del self._files[remote.key]
        if remote in self._mapped:
            self._mapped.remove(remote)
        self._loud -= not remote.quiet_release
        _release(remote)

    def close_all(self) -> None:
        for remote in list(self._files.values()):
            self._drop(remote)
        self.version += 1


def moved_path(path: str, old: str, new: str) -> str | None:
    """``path`` once ``old`` was renamed to ``new``, if it is ``old`` or below it; else None."""
    if path == old:
        return new
    if path.startswith(old.rstrip("/") + "/"):
        return new.rstrip("/") + path[len(old.rstrip("/")) :]
    return None


def _release(remote: RemoteFile) -> None:
    """Last descriptor gone: send back a changed copy, then close the remote handle."""
    if remote.cached is not None:
        return  # the runs' shared copy: nothing to send, no handle, and it stays
    remote.stop_direct_reads()
    try:
        remote.send_back()  # a shared mapping's stores, a --cache whole copy
    except OSError as exc:
        # Nobody is left to tell through a return value; say it where a person sees it.
        print(
            f"aviary: writing back {remote.logical} failed: {exc.strerror or exc}", file=sys.stderr
        )
    finally:
        if not remote.is_link:
            with contextlib.suppress(OSError):
                remote.driver.close(remote.handle)
        if remote.local_copy is not None:
            with contextlib.suppress(OSError):
                os.unlink(remote.local_copy)
        if remote.fill_fd >= 0:
            os.close(remote.fill_fd)
            remote.fill_fd = -1
        if remote.mapping is not None:
            remote.mapping.close()
