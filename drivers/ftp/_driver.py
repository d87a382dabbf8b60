"""The FTP driver: POSIX calls over one FTP login, with the seeds' interview for errors.

What FTP can and cannot do, and what this driver does about it:

- **Files are got and put, not opened** (the seeds' "get/put model"). A
  read-only handle reads with REST + RETR from the asked offset, and keeps the
  download streaming while reads stay sequential; a writable handle stages
  the file in a local temporary file (downloaded at open unless O_TRUNC, or
  O_WRONLY|O_APPEND, which stages only the new bytes for APPE until an
  ftruncate or unlink needs the rest) and sends it with STOR on close or fsync.
  close returns STOR's error. Other clients see writes only then; a crash
  before close loses them.
- **O_CREAT** stores an empty file at open (so the name exists, as POSIX
  says); **O_EXCL** is a check, then the store: not atomic against another
  client. Create modes other than the server's default (0644/0755 under
  umask 022) cost a SITE CHMOD.
- **Handles follow renames and unlinks made through this driver** (the
  driver rewrites their paths, and keeps an unlinked file's bytes locally),
  but not those made by other clients: their next RETR answers ENOENT.
- **A file replaced under a read-only handle is ESTALE**, where the server
  gives files an identity: MLST's ``unique`` fact (proftpd, pure-ftpd and
  pyftpdlib send it: the device and inode numbers). The handle keeps the
  ``unique`` of open; each RETR it starts (its first read, and any read that
  is not where the last one ended) asks MLST first (one more round trip) and
  answers ESTALE when the path now names another file or none, instead of
  reading the other file's bytes as if they were this one's. A server without
  MLST (vsftpd) gives no identity: its handles read whatever the path names.
  A file deleted and made anew may get the same inode back, and so the same
  ``unique``: that replacement is not seen.
- **A bare 550 is not an answer.** Each failure is diagnosed by the
  interview in ``_interview`` (MLST or STAT, CWD, a listing) before an errno
  is returned; those questions are counted as round trips of the operation.
- **stat** comes from MLST facts where FEAT offers MLST, else from STAT's
  ``ls -l`` line (plus MDTM for a file's exact mtime); ``StatResult.synthesized``
  names every field made up (atime/ctime, blksize/blocks, and inode numbers,
  owners, link counts where the server gave none). ``listing_method`` says
  whether listings came from MLSD or LIST.
- **No symlinks or hard links**: FTP has no verb for them. link and symlink
  fail with EPERM (what link(2) and symlink(2) say for a filesystem that
  cannot make them), after the errno checks Linux makes first; readlink says
  EINVAL, since every name the server shows is, to us, not a link.
- **chmod** is SITE CHMOD (ENOTSUP where the server lacks it); **utimens**
  sets the mtime with MFMT, in whole seconds (ENOTSUP without MFMT: vsftpd);
  FTP cannot set atime, so it is left alone. **statfs**: ENOTSUP, FTP has no
  verb that tells free space.
- Names holding CR or LF cannot be sent (EINVAL). On a LIST-only server
  (vsftpd) a name with glob characters (``*?[``) is matched as a pattern by
  STAT and LIST, and a name with a newline splits its listing line (EIO).
"""

from __future__ import annotations

import errno
import os
import tempfile
import time
from contextlib import suppress
from dataclasses import replace
from typing import ClassVar, Self

from drivers._interface import (
    Capabilities,
    DirEntry,
    Handle,
    StatFS,
    StatResult,
    raise_errno,
)
from drivers._network import recoverable, recovery_budget
from drivers._url import Location
from drivers.ftp import _interview as interview
from drivers.ftp._questions import _UNSUPPORTED
from drivers.ftp._shell import FtpSession
from drivers.ftp._transfers import FtpTransfers, OpenFile
from drivers.ftp._verbs import FTP_PORT, format_timeval

__all__ = ["FtpDriver"]

_DEFAULT_FILE_MODE, _DEFAULT_DIR_MODE = 0o644, 0o755
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
#: Seconds of reconnecting after a broken connection (overridden by the environment).
DEFAULT_RECOVERY = 60.0
RECOVERY_ENV = "AVIARY_FTP_RECOVERY"


def _umask() -> int:
    """This process's umask, read without changing it (os.umask would race other threads)."""
    with suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


class FtpDriver(FtpTransfers):
    """A client of FTP servers (RFC 959 with RFC 2389, 2428 and 3659 extensions).

    Args:
        host, port: the server.
        user, password: the login; anonymous when ``user`` is None.
        timeout: seconds allowed for any one network wait.
        recovery: seconds spent reconnecting after a connection that worked broke
            (None: ``$AVIARY_FTP_RECOVERY``, else 60; 0: fail at once). Every
            operation is sent again on the new connection: FTP keeps no state
            between commands that a reconnect could lose, writes are whole-file
            puts of the local stage (the same bytes again), and the
            non-idempotent ones (mkdir, rmdir, unlink, rename) treat the error
            their replay gets when the first copy did the work as success
            (``drivers._network.APPLIED_IF_REPLAYED``). Appends (APPE) and
            exclusive creates are never replayed: they fail with the errno.
    """

    name = "ftp"
    url_schemes = ("ftp",)
    capabilities = Capabilities(
        consistency="close-to-open",  # get/put: STOR at close or fsync
        handle_binding="renames",
        truncate_at_close=True,
        appends_at_close=True,  # O_WRONLY|O_APPEND: APPE of the new bytes
        symlinks=False,
        hard_links=False,
        time_resolution_ns=1_000_000_000,
        errno_precedence=False,  # rename: RNFR's missing old name before the new name's directory
        link_counts=False,  # MLST has none (vsftpd's LIST has, but it is not claimed)
    )
    server_capabilities: ClassVar[dict[str, Capabilities]] = {
        "vsftpd": replace(capabilities, utimens=False),  # no MFMT
        "pure-ftpd": replace(capabilities, trailing_spaces=False),  # stores 'a ' as 'a_'
        "pyftpdlib": replace(capabilities, utimens_directories=False),  # MFMT on files only
        # proftpd's SITE CHMOD trims the trailing spaces of its argument ("a " becomes "a"):
        # such a name takes neither chmod nor a create mode, so none is drawn.
        "proftpd": replace(capabilities, trailing_spaces=False),
    }
    default_port = FTP_PORT

    def __init__(
        self,
        host: str,
        port: int = FTP_PORT,
        user: str | None = None,
        password: str | None = None,
        *,
        timeout: float = 30.0,
        recovery: float | None = None,
    ) -> None:
        super().__init__()
        self.timeout = timeout
        self.recovery = recovery_budget(recovery, RECOVERY_ENV, DEFAULT_RECOVERY)
        self.session = FtpSession(host, port, user, password, timeout, self.counters)
        self._files: dict[int, OpenFile] = {}
        self._next_handle = 3
        self._chmod_supported = True
        #: Questions asked by interviews, in total and for the last failure (for reports).
        self.interview_questions = 0
        self.last_interview: list[str] = []

    @classmethod
    def from_location(cls, location: Location, *, timeout: float = 30.0) -> Self:
        if not location.host:
            raise ValueError(f"ftp URL needs a host: {location}")
        return cls(
            location.host,
            location.port or FTP_PORT,
            location.user,
            location.password,
            timeout=timeout,
        )

    def describe(self) -> str:
        return self.session.describe()

    def close_driver(self) -> None:
        for entry in self._files.values():
            if entry.stage is not None:
                entry.stage.close()
        self._files.clear()
        self.session.quit()

    # -- metadata ------------------------------------------------------------------------------

    @recoverable
    def stat(self, path: str) -> StatResult:
        with self.counters.operation("stat"):
            return self._stat(path)

    @recoverable
    def lstat(self, path: str) -> StatResult:
        with self.counters.operation("lstat"):
            return self._stat(path)  # the server follows links; we never see one

    def stat_at_open(self, handle: Handle) -> StatResult:
        entry = self._entry(handle)
        return entry.stat if entry.stage is None else self.fstat(handle)

    def fstat(self, handle: Handle) -> StatResult:
        with self.counters.operation("fstat"):
            entry = self._entry(handle)
            if entry.stage is not None:
                size = entry.stage.seek(0, os.SEEK_END)
                if entry.append_only:
                    size += entry.stat.st_size
                return replace(entry.stat, st_size=size, st_blocks=(size + 511) // 512)
            if entry.stat_at == self.counters.begun - 1:
                entry.stat_at = self.counters.begun
                return entry.stat
            try:
                entry.stat = self._stat(entry.path)
            except FileNotFoundError:
                return entry.stat  # renamed or removed by another client: what we knew
            entry.stat_at = self.counters.begun
            return entry.stat

    @recoverable
    def access(self, path: str, mode: int) -> None:
        with self.counters.operation("access"):
            st = self._stat(path)
            bits = (
                (mode & os.R_OK and 0o444) | (mode & os.W_OK and 0o222) | (mode & os.X_OK and 0o111)
            )
            if bits and not st.st_mode & bits & 0o700 and "st_mode" not in st.synthesized:
                raise_errno(errno.EACCES, path)

    def statfs(self, path: str) -> StatFS:
        with self.counters.operation("statfs"):
            raise OSError(errno.ENOTSUP, "FTP has no verb that reports free space", path)

    @recoverable
    def chmod(self, path: str, mode: int) -> None:
        with self.counters.operation("chmod"):
            self._chmod(path, mode)

    def _chmod(self, path: str, mode: int) -> None:
        if not self._chmod_supported:
            raise OSError(errno.ENOTSUP, f"{self.describe()} has no SITE CHMOD", path)
        reply = self._ask("SITE", f"CHMOD {mode & 0o7777:o} {path}")
        if reply.code in _UNSUPPORTED:
            self._chmod_supported = False
            raise OSError(errno.ENOTSUP, f"{self.describe()} has no SITE CHMOD: {reply}", path)
        if not reply.ok:
            self._fail(self._diagnose(interview.after_refused_change, path), path)
        for entry in self._open_at(path):  # an open handle's fstat shows the new mode
            bits = (entry.stat.st_mode & ~0o7777) | (mode & 0o7777)
            entry.stat = replace(entry.stat, st_mode=bits)

    @recoverable
    def utimens(self, path: str, times_ns: tuple[int, int] | None = None) -> None:
        with self.counters.operation("utimens"):
            self.session.ensure()
            if not self.session.features.has("MFMT"):
                raise OSError(
                    errno.ENOTSUP, f"{self.describe()} has no MFMT: times cannot be set", path
                )
            mtime = time.time_ns() if times_ns is None else times_ns[1]
            self._set_mtime(path, mtime)
            whole_seconds = mtime - mtime % 1_000_000_000  # what MFMT keeps
            for entry in self._open_at(path):
                entry.stat = replace(entry.stat, st_mtime_ns=whole_seconds)
                if entry.stage is not None:
                    entry.mtime_after_upload = mtime

    def _set_mtime(self, path: str, mtime: int) -> None:
        reply = self._ask("MFMT", f"{format_timeval(mtime)} {path}")
        if not reply.ok:
            self._fail(self._diagnose(interview.after_refused_change, path), path)

    def _open_at(self, path: str) -> list[OpenFile]:
        """The handles open under ``path``."""
        return [entry for entry in self._files.values() if entry.path == path]

    def _fix_mode(self, path: str, mode: int, default: int) -> None:
        """chmod a new file or directory whose mode is not what the server made."""
        wanted = mode & 0o7777 & ~_umask()
        if wanted != default and self._chmod_supported:
            with suppress(OSError):  # the object exists; a server refusing modes is a known gap
                self._chmod(path, wanted)

    # -- open files ----------------------------------------------------------------------------

    def open(self, path: str, flags: int, mode: int = 0o666) -> Handle:
        if flags & os.O_CREAT and flags & os.O_EXCL:
            return self._open(path, flags, mode)  # a replay's EEXIST could be someone else's
        return self._recovering("open", lambda: self._open(path, flags, mode))

    def _open(self, path: str, flags: int, mode: int) -> Handle:
        with self.counters.operation("open"):
            if flags & os.O_PATH or (_O_TMPFILE and flags & _O_TMPFILE == _O_TMPFILE):
                raise OSError(errno.EINVAL, "FTP cannot open with O_PATH or O_TMPFILE", path)
            writable = flags & os.O_ACCMODE != os.O_RDONLY
            entry = self._lookup(path)
            created = False
            if entry is None:
                if not flags & os.O_CREAT:
                    self._fail(self._diagnose(interview.why_absent, path), path)
                self._store(path, None)
                self._fix_mode(path, mode, _DEFAULT_FILE_MODE)
                created = True
                st = self._stat(path)
            else:
                if flags & os.O_CREAT and flags & os.O_EXCL:
                    raise_errno(errno.EEXIST, path)
                st = self._stat_entry(path, entry)
                if st.is_dir() and (writable or flags & (os.O_TRUNC | os.O_CREAT)):
                    raise_errno(errno.EISDIR, path)
            if flags & os.O_DIRECTORY and not st.is_dir():
                raise_errno(errno.ENOTDIR, path)
            opened = OpenFile(path, flags, st, is_dir=st.is_dir())
            if entry is not None and not writable:
                opened.identity = entry.facts.get("unique")
            if writable:
                self._open_stage(opened, created)
            opened.stat_at = self.counters.begun
            return self._remember(opened)

    def close(self, handle: Handle) -> None:
        with self.counters.operation("close"):
            entry = self._entry(handle)
            del self._files[int(handle)]
            if self.session.stream is not None and self.session.stream.key is entry:
                self.session.settle()
            if entry.stage is None:
                return
            try:
                if entry.dirty and not entry.orphan:
                    self._upload(entry)
            finally:
                entry.stage.close()

    def _upload(self, entry: OpenFile) -> None:
        """Send a handle's stage, then the mtime utimens gave it meanwhile (the upload
        stamped the server's clock over it)."""
        self._put_stage(entry)
        if entry.mtime_after_upload is not None:
            self._set_mtime(entry.path, entry.mtime_after_upload)
            entry.mtime_after_upload = None

    def pread(self, handle: Handle, size: int, offset: int) -> bytes:
        with self.counters.operation("pread"):
            entry = self._entry(handle)
            if size < 0 or offset < 0:
                raise_errno(errno.EINVAL)
            if not entry.readable:
                raise_errno(errno.EBADF)
            if entry.is_dir:
                raise_errno(errno.EISDIR, entry.path)
            if entry.stage is not None:
                entry.stage.seek(offset)
                return entry.stage.read(size)
            if size == 0 or (
                offset >= entry.stat.st_size and "st_size" not in entry.stat.synthesized
            ):
                return b""  # at the end the open (or the last fstat) saw: no transfer
            if self.session.stream is not None and self.session.stream.key is entry:
                return self._remote_read(entry, size, offset)  # the stream in progress
            return self._recovering("pread", lambda: self._remote_read(entry, size, offset))

    def pwrite(self, handle: Handle, data: bytes, offset: int) -> int:
        with self.counters.operation("pwrite"):
            entry = self._entry(handle)
            if offset < 0:
                raise_errno(errno.EINVAL)
            if entry.stage is None or not entry.writable:  # an unlink stages readers too
                raise_errno(errno.EBADF)
            assert entry.stage is not None
            if not data:
                return 0  # writes nothing: a file is not extended to the offset
            if entry.flags & os.O_APPEND:
                entry.stage.seek(0, os.SEEK_END)
            else:
                end = entry.stage.seek(0, os.SEEK_END)
                if offset > end:
                    entry.stage.write(b"\0" * (offset - end))
                entry.stage.seek(offset)
            entry.stage.write(data)
            entry.dirty = True
            entry.mtime_after_upload = None
            return len(data)

    def fsync(self, handle: Handle) -> None:
        with self.counters.operation("fsync"):
            entry = self._entry(handle)
            if entry.stage is not None and entry.dirty and not entry.orphan:
                self._upload(entry)
                if entry.append_only:
                    entry.stat = replace(
                        entry.stat, st_size=entry.stat.st_size + entry.stage.seek(0, os.SEEK_END)
                    )
                    entry.stage.seek(0)
                    entry.stage.truncate()
                entry.dirty = False

    def ftruncate(self, handle: Handle, length: int) -> None:
        with self.counters.operation("ftruncate"):
            entry = self._entry(handle)
            if length < 0 or entry.stage is None or not entry.writable:
                raise_errno(errno.EINVAL)
            assert entry.stage is not None
            if entry.append_only:
                self._whole_stage(entry)
            end = entry.stage.seek(0, os.SEEK_END)
            if length > end:
                entry.stage.write(b"\0" * (length - end))
            entry.stage.truncate(length)
            entry.dirty = True
            entry.mtime_after_upload = None

    @recoverable
    def truncate(self, path: str, length: int) -> None:
        with self.counters.operation("truncate"):
            if length < 0:
                raise_errno(errno.EINVAL, path)
            st = self._stat(path)
            if st.is_dir():
                raise_errno(errno.EISDIR, path)
            with tempfile.TemporaryFile(prefix="aviary-ftp-") as stage:
                if length > 0:
                    self._fetch(path, stage)
                    stage.truncate(length)
                    end = stage.seek(0, os.SEEK_END)
                    stage.write(b"\0" * (length - end))
                self._store(path, stage)

    # -- whole files (the get/put model, without a handle) ---------------------------------------

    @recoverable
    def read_file(self, path: str, chunk: int = 1 << 20) -> bytes:
        """RETR: the whole file over one data connection."""
        with self.counters.operation("getfile"):
            data, reply = self.session.download("RETR", path)
            if data is None:
                self._fail(self._diagnose(interview.after_failed_read, path), path)
            assert data is not None
            if not reply.ok:
                raise OSError(errno.EIO, f"{self.describe()}: RETR {path}: {reply}")
            return data

    @recoverable
    def write_file(self, path: str, data: bytes, mode: int = 0o666, chunk: int = 1 << 20) -> None:
        """STOR: create or replace a file over one data connection."""
        with self.counters.operation("putfile"), tempfile.SpooledTemporaryFile(1 << 22) as stage:
            stage.write(data)
            self._store(path, stage)  # type: ignore[arg-type]
            self._fix_mode(path, mode, _DEFAULT_FILE_MODE)

    # -- the namespace ---------------------------------------------------------------------------

    @recoverable
    def readdir(self, path: str) -> list[DirEntry]:
        with self.counters.operation("readdir"):
            return [DirEntry(e.name, e.type) for e in self._list(path)]

    @recoverable
    def mkdir(self, path: str, mode: int = 0o777) -> None:
        with self.counters.operation("mkdir"):
            reply = self._ask("MKD", path)
            if reply.code != 257:
                self._fail(self._diagnose(interview.after_failed_mkdir, path), path)
            self._fix_mode(path, mode, _DEFAULT_DIR_MODE)

    @recoverable
    def rmdir(self, path: str) -> None:
        with self.counters.operation("rmdir"):
            if not self._ask("RMD", path).ok:
                self._fail(self._diagnose(interview.after_failed_rmdir, path), path)

    @recoverable
    def unlink(self, path: str) -> None:
        with self.counters.operation("unlink"):
            open_here = self._keep_before_unlink(path)
            if not self._ask("DELE", path).ok:
                self._fail(self._diagnose(interview.after_failed_unlink, path), path)
            for entry in open_here:
                entry.orphan = True

    def rename(self, old: str, new: str) -> None:
        with self.counters.operation("rename"):
            if old.rstrip("/") == new.rstrip("/"):
                self._stat(old)  # rename(x, x) does nothing, if x exists
                return
            self._recovering("rename", lambda: self._rename(old, new))
            prefix = old.rstrip("/") + "/"
            for entry in self._files.values():  # open handles follow their file
                if entry.path == old:
                    entry.path = new
                elif entry.path.startswith(prefix):
                    entry.path = new.rstrip("/") + "/" + entry.path[len(prefix) :]

    def _rename(self, old: str, new: str) -> None:
        if self._ask("RNFR", old).code != 350 or not self._ask("RNTO", new).ok:
            self._fail(self._diagnose(interview.after_failed_rename, old, new), old, new)

    def link(self, old: str, new: str) -> None:
        with self.counters.operation("link"):
            self._fail(self._diagnose(_no_link, old, new), old, new)

    def symlink(self, target: str, linkpath: str) -> None:
        with self.counters.operation("symlink"):
            self._fail(self._diagnose(_no_symlink, linkpath), linkpath)

    def readlink(self, path: str) -> str:
        with self.counters.operation("readlink"):
            self._stat(path)
            raise OSError(errno.EINVAL, "FTP shows no symbolic links: not a link", path)


def _no_link(witness: interview.Witness, old: str, new: str) -> int:
    return interview.after_failed_link(witness, old, new, errno.EPERM)


def _no_symlink(witness: interview.Witness, linkpath: str) -> int:
    return interview.after_failed_link(witness, None, linkpath, errno.EPERM)
