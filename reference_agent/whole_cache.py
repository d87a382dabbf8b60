"""Whole-file copies of remote files, kept in a directory that runs share (``--cache-dir``).

The slides' CVMFS use case: a program whose interpreter, libraries and modules
live on a server runs many times, and each run should fetch only what it uses,
and only once. With ``--cache whole --cache-dir DIR`` a remote file opened
read-only (or executed) is served from a local copy in DIR:

- each open asks the server for the file's metadata (one ``stat``); the copy's
  name carries the remote size, mtime and inode, so a file changed on the
  server gets a new name and is fetched again, and the old copy is removed;
- a missing copy is fetched whole into a private temporary name in DIR and
  renamed into place: ``rename`` is atomic, so concurrent runs (or processes)
  sharing DIR never see half a file, and two that fetch the same file at once
  just install the same bytes twice;
- the program opens the copy itself, read-only: reads, seeks and ``mmap``
  are the kernel's. ``fstat`` on that descriptor tells the remote file as the
  open's ``stat`` found it (its device, inode, owner, mode, size and times), so
  a program comparing ``stat`` of the name with ``fstat`` of what it opened
  (``cp``) sees one file.

Freshness is as good as the server's metadata: a file rewritten within one
mtime tick (Chirp keeps whole seconds) with the same size and inode is not
noticed. Files opened for writing keep the per-run copies of ``--cache whole``.

Writing back (:func:`write_back`) never puts bad data in place of good: the new
contents go to a temporary name beside the file and are renamed over it only
once every byte was acknowledged (and fsync'ed, where the server can), so a
server that dies or a disk that fills during the upload leaves the old file
as it was. Only where no temporary file can be made (the directory refuses
new names) or the file has other names (hard links) is the file rewritten in
place, and a failure then truncates it to the bytes the server acknowledged;
the error says which happened. A file opened through a symlink is written back
to the file the link names.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import stat as stat_module
from dataclasses import dataclass
from pathlib import Path

from drivers import Driver, Handle, StatResult
from reference_agent.namespace import RemoteTarget
from reference_agent.read_memory import aligned

__all__ = ["CacheStats", "WholeFileCache", "WriteBackError", "read_only_open", "write_back"]

#: Bytes asked for per read while fetching: few requests (cctools' Chirp server pays about a
#: millisecond per request whatever its size), received into memory reused for each.
FETCH_CHUNK = 4 << 20
#: Characters of the remote path kept in a copy's name ("/" as "%"), so one can tell what it is.
NAME_TAIL = 80
#: Bytes sent per write while writing back (within every driver's largest write).
WRITE_CHUNK = 1 << 20
#: Errors creating the temporary name that mean "not here" rather than "failed":
#: the directory refuses new names, so the file is rewritten in place instead.
_NO_TEMPORARY = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTSUP, errno.ENOSYS, errno.EXDEV}
)
#: Errors of a rename over an existing file that mean the protocol cannot do it.
_NO_RENAME_OVER = frozenset({errno.EEXIST, errno.ENOTSUP, errno.ENOSYS, errno.ENOTEMPTY})


def read_only_open(flags: int) -> bool:
    """Whether an open with ``flags`` can be served from a shared read-only copy."""
    changing = os.O_CREAT | os.O_TRUNC | os.O_PATH | os.O_TMPFILE
    return flags & os.O_ACCMODE == os.O_RDONLY and not flags & changing


@dataclass(slots=True)
class CacheStats:
    """What the cache did in one run."""

    hits: int = 0
    fetched: int = 0
    fetched_bytes: int = 0
    replaced: int = 0  # copies dropped because the remote file changed


class WholeFileCache:
    """Whole local copies of remote files in ``directory``, named by URL and remote metadata.

    Args:
        directory: an existing directory; other runs may use it at the same time.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.stats = CacheStats()

    def _key(self, target: RemoteTarget) -> str:
        return hashlib.sha256(target.url.encode()).hexdigest()[:32]

    def _name(self, target: RemoteTarget, st: StatResult) -> str:
        tail = target.path.strip("/").replace("/", "%")[-NAME_TAIL:] or "file"
        return f"{self._key(target)}-{st.st_size}-{st.st_mtime_ns}-{st.st_ino}-{tail}"

    def copy_of(self, driver: Driver, target: RemoteTarget, st: StatResult) -> str:
        """The local copy of ``target`` as ``st`` describes it, fetched if it is not there.

        Args:
            driver: the endpoint's driver.
            target: the remote file.
            st: its metadata, just asked of the server (``driver.stat``).

        Returns:
            The absolute path of a read-only local copy.

        Raises:
            OSError: from the driver (the file vanished, the server is gone) or the disk.
        """
        local = self.directory / self._name(target, st)
        if local.exists():
            self.stats.hits += 1
            return str(local)
        partial = self.directory / f".{local.name}.{os.getpid()}.{os.urandom(4).hex()}"
        try:
            size = self._fetch(driver, target, partial)
            os.utime(partial, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.chmod(partial, (stat_module.S_IMODE(st.st_mode) & 0o555) | 0o444)
            os.rename(partial, local)
        except BaseException:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
        self.stats.fetched += 1
        self.stats.fetched_bytes += size
        self._drop_older(target, local)
        return str(local)

    def _fetch(self, driver: Driver, target: RemoteTarget, partial: Path) -> int:
        handle = driver.open(target.path, os.O_RDONLY)
        offset = 0
        try:
            memory = memoryview(aligned(FETCH_CHUNK))  # page-aligned: see read_memory
            with open(partial, "xb") as copy:
                while count := driver.pread_into(handle, memory, offset):
                    copy.write(memory[:count])
                    offset += count
        finally:
            driver.close(handle)
        return offset

    def _drop_older(self, target: RemoteTarget, current: Path) -> None:
        """Remove copies of earlier versions of the same remote file (held ones live on)."""
        for older in self.directory.glob(f"{self._key(target)}-*"):
            if older != current:
                with contextlib.suppress(OSError):
                    older.unlink()
                    self.stats.replaced += 1

    def summary(self) -> str:
        s = self.stats
        return (
            f"whole-file cache {self.directory}: {s.hits} hits, {s.fetched} fetched "
            f"({s.fetched_bytes} bytes), {s.replaced} replaced"
        )


class WriteBackError(OSError):
    """A write-back failed; the message says what the server's file holds now."""


def write_back(
    driver: Driver,
    path: str,
    data: bytes,
    mode: int,
    times_ns: tuple[int, int] | None = None,
    *,
    linked: bool = False,
) -> None:
    """Make the server's ``path`` hold ``data``, or leave it as it was.

    Args:
        driver: the endpoint's driver.
        path: the file inside the endpoint.
        data: the whole new contents.
        mode: permission bits for the new file (the old file's): set on the temporary file
            after it is made, where the protocol can (servers create under their own umask).
        times_ns: (atime, mtime) the file gets once in place (the local copy's: the last
            write's, or what the program set); None: the server's clock.
        linked: the file has other names (hard links). A new file renamed over ``path``
            would leave them the old contents, so the file itself is rewritten instead
            (a failure then keeps what the server acknowledged, as where no temporary
            name can be made).

    Raises:
        WriteBackError: the upload failed, with the errno of the failure and a
            message naming how far it got and what ``path`` holds now.
    """
    path = _file_named(driver, path)  # a symlink stays; the file it names is rewritten
    if linked:
        _rewrite_in_place(driver, path, data)
    else:
        _replace_contents(driver, path, data, mode)
    if times_ns is not None and driver.capabilities.utimens:
        with contextlib.suppress(OSError):  # the contents are in place; times are second best
            driver.utimens(path, times_ns)


#: Symlinks followed to the file a name leads to, at most (Linux's MAXSYMLINKS).
MAX_LINKS = 40


def _file_named(driver: Driver, path: str) -> str:
    """The path of the file ``path`` leads to, its symlinks followed as the server follows
    them (an absolute target from the endpoint's root): the copy of a file opened through
    a link goes to that file, and the link stays a link."""
    for _ in range(MAX_LINKS):
        try:
            if not driver.lstat(path).is_lnk():
                return path
        except FileNotFoundError:
            return path  # gone meanwhile: the write-back makes it again, under this name
        target = driver.readlink(path)
        if not target.startswith("/"):
            target = posixpath.join(posixpath.dirname(path), target)
        path = posixpath.normpath(target)
    raise WriteBackError(errno.ELOOP, f"writing back {path} failed: too many levels of symlinks")


def _replace_contents(driver: Driver, path: str, data: bytes, mode: int) -> None:
    """:func:`write_back` but for the times."""
    directory, name = posixpath.split(path)
    temporary = posixpath.join(directory, f".{name}.aviary-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        handle = driver.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & 0o7777)
    except OSError as exc:
        if exc.errno not in _NO_TEMPORARY:
            raise _failed(exc, path, 0, len(data), f"{path} is unchanged") from None
        _rewrite_in_place(driver, path, data)
        return
    if driver.capabilities.chmod:
        with contextlib.suppress(OSError):  # the contents matter more than the bits
            driver.chmod(temporary, mode & 0o7777)
    progress = _Progress()
    open_handle: Handle | None = handle
    try:
        _upload(driver, handle, data, progress)
        with contextlib.suppress(OSError):  # not every protocol can fsync; rename still orders
            driver.fsync(handle)
        open_handle = None
        driver.close(handle)
        driver.rename(temporary, path)
    except OSError as exc:
        if open_handle is not None:
            with contextlib.suppress(OSError):
                driver.close(open_handle)
        with contextlib.suppress(OSError):
            driver.unlink(temporary)
        if progress.sent == len(data) and exc.errno in _NO_RENAME_OVER:
            _rewrite_in_place(driver, path, data)  # the protocol cannot replace a file
            return
        raise _failed(exc, path, progress.sent, len(data), f"{path} is unchanged") from None


@dataclass(slots=True)
class _Progress:
    sent: int = 0  # bytes the server acknowledged


def _upload(driver: Driver, handle: Handle, data: bytes, progress: _Progress) -> None:
    """Write ``data`` from offset 0, counting in ``progress`` what the server acknowledged."""
    while progress.sent < len(data):
        chunk = data[progress.sent : progress.sent + WRITE_CHUNK]
        wrote = driver.pwrite(handle, chunk, progress.sent)
        if wrote <= 0:
            raise OSError(errno.EIO, "the server accepted no bytes")
        progress.sent += wrote


def _rewrite_in_place(driver: Driver, path: str, data: bytes) -> None:
    """Rewrite ``path`` itself; on failure keep only what the server acknowledged."""
    handle = driver.open(path, os.O_WRONLY)
    progress = _Progress()
    try:
        _upload(driver, handle, data, progress)
        driver.ftruncate(handle, len(data))
    except OSError as exc:
        try:
            driver.ftruncate(handle, progress.sent)
            holds = f"{path} holds the first {progress.sent} bytes of the new contents"
        except OSError:
            holds = f"{path} may hold a mix of old and new contents"
        raise _failed(exc, path, progress.sent, len(data), holds) from None
    finally:
        with contextlib.suppress(OSError):
            driver.close(handle)


def _failed(exc: OSError, path: str, sent: int, total: int, holds: str) -> WriteBackError:
    code = exc.errno or errno.EIO
    reason = exc.strerror or str(exc)
    return WriteBackError(
        code,
        f"writing back {path} failed after {sent} of {total} bytes "
        f"({errno.errorcode.get(code, code)}: {reason}); {holds}",
    )
