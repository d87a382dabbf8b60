"""The oracle of the random comparison: local POSIX, shaped by what a protocol promises.

:class:`Model` answers every call the state machine makes as a system with the
driver's :class:`~drivers.Capabilities` would, using the local driver on a
temporary directory for the files themselves:

- ``posix`` consistency: handles are the local driver's own descriptors;
- ``close-to-open``: a handle opened for writing holds a stage (the file's
  bytes at open), reads and writes work on it, and close or fsync stores it
  to the name the handle is bound to (``renames``: its name as renames through
  the driver moved it, dropped when the name is unlinked; ``path``: the name
  it was opened with, whatever is there now). A read-only handle reads the
  bytes the file had at open; once another write changes the file, what it
  reads is not defined by close-to-open, and the model answers :data:`ANY`;
- ``close-to-open`` with ``appends_at_close``: a write-only O_APPEND handle
  appends what it wrote to the file as it is at close or fsync (an ftruncate,
  or an unlink through the driver, makes its stage the whole file first);
- ``close-to-open`` with ``write_through`` (an agent's read cache over a posix
  driver): every call is local POSIX at once, except what a handle reads: the
  file as it was at open, changed by the handle's own writes and truncates; once
  anything else changes the file, :data:`ANY`;
- forced create modes (Chirp's 0600/0700) are applied to whatever is created.

:func:`allowed_errnos` is the set of errnos a system may give where the model
gives one: the errno itself, EIO for ELOOP where the protocol cannot say
ELOOP, and, where the driver does not keep Linux's precedence between errors,
every error that applies to one of the names of a two-name call.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import posixpath
from dataclasses import dataclass
from typing import Any

from drivers import Capabilities, Handle, OpenFlags, StatResult
from drivers.local import LocalDriver

__all__ = ["ANY", "Model", "Outcome", "allowed_errnos", "attempt", "cached_reads"]


class _Any:
    """A result the model leaves open: every answer agrees with it."""

    def __repr__(self) -> str:
        return "<anything: not defined by the protocol's consistency>"


ANY: Any = _Any()


class Outcome:
    """A result or an errno."""

    def __init__(self, value: Any = None, error: int | None = None) -> None:
        self.value, self.error = value, error

    def __repr__(self) -> str:
        if self.error is not None:
            return f"error {errno.errorcode.get(self.error, self.error)}"
        return repr(self.value)


def attempt(call: Any, *args: Any) -> Outcome:
    try:
        return Outcome(call(*args))
    except OSError as exc:
        return Outcome(error=exc.errno)


TWO_NAME_CALLS = ("rename", "link")


def allowed_errnos(
    caps: Capabilities, oracle: LocalDriver, name: str, args: tuple[Any, ...], expected: int
) -> frozenset[int]:
    """The errnos a system with ``caps`` may answer where Linux answers ``expected``."""
    allowed = {expected}
    if not caps.errno_precedence and name in TWO_NAME_CALLS:
        # Each error that applies to one name alone: the missing old name, the new
        # name's missing or non-directory parent, an existing new name.
        for path in args[:2]:
            for probe in (path, posixpath.dirname(path) or "/"):
                found = attempt(oracle.lstat if probe == path else oracle.stat, probe)
                if found.error is not None:
                    allowed.add(found.error)
        if name == "link" and attempt(oracle.lstat, args[1]).error is None:
            allowed.add(errno.EEXIST)
    # Then what the protocol says for each of them.
    if errno.ELOOP in allowed and not caps.reports_eloop:
        allowed.add(errno.EIO)
    call = name.split("[", 1)[0]
    allowed.update(
        theirs for on, linux, theirs in caps.errno_aliases if on in ("*", call) and linux in allowed
    )
    return frozenset(allowed)


@dataclass
class _Staged(OpenFlags):
    """One open handle of a close-to-open system."""

    path: str
    flags: int
    data: bytearray  # writable: the stage; read-only: the bytes at open
    is_dir: bool = False
    dirty: bool = False
    stale: bool = False  # read-only: the file changed since open, or another file took its name
    orphan: bool = False  # its name was unlinked through the driver ("renames" binding)
    identity: tuple[int, int, int] | None = None  # read-only: (st_dev, st_ino, st_mtime_ns) at open
    #: appends_at_close: what the handle wrote and will append at close (None: a whole stage).
    appended: bytearray | None = None
    real: Handle | None = None  # write-through: the local descriptor all calls but reads use


class Model:
    """The oracle: the local driver below ``local``'s root, answering as ``caps`` promise."""

    def __init__(self, local: LocalDriver, caps: Capabilities) -> None:
        self.local, self.caps = local, caps
        self.staged: dict[int, _Staged] = {}
        self._next = 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)  # calls that change nothing a handle holds

    @property
    def close_to_open(self) -> bool:
        return self.caps.consistency == "close-to-open"

    @property
    def write_through(self) -> bool:
        return self.close_to_open and self.caps.write_through

    # -- what is created ------------------------------------------------------------------------

    def _force(self, path: str, is_dir: bool) -> None:
        forced = self.caps.forced_create_modes
        if forced is not None:
            self.local.chmod(path, forced[1] if is_dir else forced[0])

    def _exists(self, path: str) -> bool:
        """Whether ``path`` names a file (through a symlink: whether its target exists)."""
        return attempt(self.local.stat, path).error is None

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        self.local.mkdir(path, mode)
        self._force(path, is_dir=True)

    def write_file(self, path: str, data: bytes, mode: int = 0o666, chunk: int = 1 << 20) -> None:
        new = not self._exists(path)
        self.local.write_file(path, data, mode, chunk)
        if new:
            self._force(path, is_dir=False)
        self._changed()

    # -- names ------------------------------------------------------------------------------------

    def rename(self, old: str, new: str) -> None:
        self.local.rename(old, new)
        if self.caps.handle_binding == "renames":
            for entry in self.staged.values():
                if entry.path == old:
                    entry.path = new
                elif entry.path.startswith(old.rstrip("/") + "/"):
                    entry.path = new.rstrip("/") + entry.path[len(old.rstrip("/")) :]
        self._changed()

    def unlink(self, path: str) -> None:
        for entry in self.staged.values():
            if entry.path == path and entry.appended is not None:
                self._whole(entry)  # the driver keeps the file's bytes for the handle
        self.local.unlink(path)
        if self.caps.handle_binding == "renames":
            for entry in self.staged.values():
                if entry.path == path:
                    entry.orphan = True
        self._changed()

    def rmdir(self, path: str) -> None:
        self.local.rmdir(path)
        self._changed()

    def truncate(self, path: str, length: int) -> None:
        self.local.truncate(path, length)
        self._changed()

    def _changed(self, by: _Staged | None = None) -> None:
        """A read-only handle whose file no longer holds its bytes at open reads anything
        (write-through: any handle but ``by``, whose file changed other than through it).

        So does one whose name now holds another file, or whose file was written or had
        its times set, even to the same bytes: a driver that can tell files apart answers
        ESTALE there (FTP's MLST unique: another file; an HTTP ETag: the mtime too).
        """
        for entry in self.staged.values():
            if entry.real is not None:
                if entry is not by and not entry.stale and not entry.is_dir:
                    entry.stale = _file_bytes(entry.real) != bytes(entry.data)
                continue
            if entry.writable or entry.stale or entry.is_dir:
                continue
            now = attempt(self.local.read_file, entry.path)
            if entry.orphan or now.error is not None or now.value != bytes(entry.data):
                entry.stale = True
                continue
            st = attempt(self.local.stat, entry.path)
            if st.error is not None:
                entry.stale = True
                continue
            if (st.value.st_dev, st.value.st_ino, st.value.st_mtime_ns) != entry.identity:
                entry.stale = True

    # -- open files -------------------------------------------------------------------------------

    def open(self, path: str, flags: int, mode: int = 0o666) -> Handle:
        new = flags & os.O_CREAT and not self._exists(path)
        if not self.close_to_open or self.write_through:
            handle = self.local.open(path, flags, mode)
            if new:
                self._force(path, is_dir=False)
            if self.write_through:
                is_dir = self.local.fstat(handle).is_dir()
                data = b"" if is_dir else _file_bytes(handle)
                entry = _Staged(path, flags, bytearray(data), is_dir=is_dir, real=handle)
                self.staged[int(handle)] = entry
                self._changed(by=entry)  # O_TRUNC
            return handle
        deferred = flags & os.O_TRUNC if self.caps.truncate_at_close else 0
        handle = self.local.open(path, flags & ~deferred, mode)
        try:
            st = self.local.fstat(handle)
        finally:
            self.local.close(handle)
        data = b"" if st.is_dir() else self.local.read_file(path)
        if new:
            self._force(path, is_dir=False)
        elif flags & os.O_TRUNC and not deferred:
            self._changed()
        entry = _Staged(path, flags, bytearray(data), is_dir=st.is_dir())
        entry.identity = (st.st_dev, st.st_ino, st.st_mtime_ns)
        if deferred:
            entry.data = bytearray()
            entry.dirty = bool(data)
        elif self.caps.appends_at_close and not new and _appending_only(flags):
            entry.appended = bytearray()
        self._next += 1
        self.staged[self._next] = entry
        return Handle(self._next)

    def _entry(self, handle: Handle) -> _Staged:
        entry = self.staged.get(int(handle))
        if entry is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return entry

    def close(self, handle: Handle) -> None:
        if not self.close_to_open or self.write_through:
            self.local.close(handle)
            self.staged.pop(int(handle), None)
            return
        entry = self.staged.pop(int(handle))
        self._store(entry)

    def fsync(self, handle: Handle) -> None:
        if not self.close_to_open or self.write_through:
            self.local.fsync(handle)
            return
        self._store(self._entry(handle))

    def _whole(self, entry: _Staged) -> None:
        """An appending handle's stage becomes the whole file: as it is now, then its bytes."""
        assert entry.appended is not None
        entry.data = bytearray(self.local.read_file(entry.path)) + entry.appended
        entry.appended = None

    def _store(self, entry: _Staged) -> None:
        if not entry.dirty or entry.orphan:
            return
        entry.dirty = False
        new = not self._exists(entry.path)
        stage = bytes(entry.data)
        if entry.appended is not None:
            stage = (b"" if new else self.local.read_file(entry.path)) + bytes(entry.appended)
            entry.appended = bytearray()
        self.local.write_file(entry.path, stage)
        if new:
            self._force(entry.path, is_dir=False)
        self._changed()

    def pread(self, handle: Handle, size: int, offset: int) -> bytes | Any:
        if not self.close_to_open:
            return self.local.pread(handle, size, offset)
        if self.write_through:
            self.local.pread(handle, size, offset)  # its errors are POSIX's
            entry = self._entry(handle)
            return ANY if entry.stale else bytes(entry.data[offset : offset + size])
        entry = self._entry(handle)
        if not entry.readable:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        if entry.is_dir:
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        if entry.stale:
            return ANY
        return bytes(entry.data[offset : offset + size])

    def pwrite(self, handle: Handle, data: bytes, offset: int) -> int:
        if not self.close_to_open:
            return self.local.pwrite(handle, data, offset)
        if self.write_through:
            written = self.local.pwrite(handle, data, offset)
            self._through(handle)
            return written
        entry = self._entry(handle)
        if not entry.writable or entry.is_dir:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        if entry.flags & os.O_APPEND:
            offset = len(entry.data)
        if offset > len(entry.data) and data:  # writing nothing extends nothing
            entry.data.extend(bytes(offset - len(entry.data)))
        entry.data[offset : offset + len(data)] = data
        if entry.appended is not None:
            entry.appended += data
        entry.dirty = True
        return len(data)

    def ftruncate(self, handle: Handle, length: int) -> None:
        if not self.close_to_open or self.write_through:
            self.local.ftruncate(handle, length)
            if self.write_through:
                self._through(handle)
            return
        entry = self._entry(handle)
        if not entry.writable:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        if entry.appended is not None:
            self._whole(entry)
        del entry.data[length:]
        entry.data.extend(bytes(length - len(entry.data)))
        entry.dirty = True

    def _through(self, handle: Handle) -> None:
        """A write-through handle changed its file: it reads what it wrote, others may not."""
        entry = self._entry(handle)
        if not entry.stale:
            entry.data = bytearray(_file_bytes(handle))
        self._changed(by=entry)

    def fstat_size(self, handle: Handle) -> int | Any | None:
        """A regular file's size through its handle (None for a directory: the server's)."""
        if not self.close_to_open or self.write_through:
            st = self.local.fstat(handle)
            return st.st_size if st.is_reg() else None
        entry = self._entry(handle)
        if entry.is_dir:
            return None
        return ANY if entry.stale else len(entry.data)

    def fstat(self, handle: Handle) -> StatResult:
        return self.local.fstat(handle)


def _appending_only(flags: int) -> bool:
    return flags & (os.O_ACCMODE | os.O_APPEND | os.O_TRUNC) == os.O_WRONLY | os.O_APPEND


def _file_bytes(handle: Handle) -> bytes:
    """The bytes of the file a local descriptor names, whatever its access mode or name now."""
    fd = os.open(f"/proc/self/fd/{int(handle)}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0) if size else b""
    finally:
        os.close(fd)


def cached_reads(caps: Capabilities) -> Capabilities:
    """What a driver promises behind an agent run with ``--cache cto``: its writes as they
    were, its reads close-to-open (a posix driver's writes reach the server at once)."""
    if caps.consistency == "posix":
        return dataclasses.replace(caps, consistency="close-to-open", write_through=True)
    return caps
