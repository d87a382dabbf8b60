"""The FTP driver's open files and the data transfers that serve them.

FTP moves whole files, not pieces of open ones (the seeds' "get/put model"), so
a handle of ``drivers.ftp._driver.FtpDriver`` is bookkeeping on this side:
``FtpTransfers`` holds the table of open handles and what moves bytes for them.
A writable handle's content is a local stage, filled by RETR at open and sent
back by STOR at close or fsync (or only its new bytes by APPE, for
O_WRONLY|O_APPEND, until an ftruncate or unlink needs the whole file); a
read-only handle streams REST + RETR from the asked offset, first checking,
where the server gives files an identity (MLST's ``unique`` fact), that the path
still names the file opened (ESTALE if not). The POSIX calls that use these
are in ``_driver``; the questions they ask before acting in ``_questions``.
"""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass
from typing import BinaryIO

from drivers._interface import Handle, OpenFlags, StatResult, handle_entry
from drivers.ftp import _interview as interview
from drivers.ftp._questions import _UNSUPPORTED, FtpQuestions
from drivers.ftp._shell import DataStream

__all__ = ["FtpTransfers", "OpenFile"]


@dataclass(slots=True)
class OpenFile(OpenFlags):
    """One handle the driver gave out: its path and flags, and its stage if it writes."""

    path: str
    flags: int
    stat: StatResult  # as of open
    is_dir: bool = False
    stage: BinaryIO | None = None  # writable handles: the content, here
    append_only: bool = False  # the stage holds only bytes to APPE
    dirty: bool = False
    orphan: bool = False  # unlinked through this driver: the stage is all there is
    identity: str | None = None  # read-only: MLST's unique fact at open, if the server gave it
    #: The driver's operation count when ``stat`` was fetched: while nothing else has been
    #: asked since, the next fstat is answered from it (an open's MLST serves its fstat).
    stat_at: int = -1
    #: The mtime (ns) utimens gave the path while this handle's stage waited: the upload at
    #: close or fsync stamps the server's clock, so it is given again after it. A write or
    #: truncate through the handle since forgets it (it is a newer change, as on a disk).
    mtime_after_upload: int | None = None


def _new_stage() -> BinaryIO:
    """A local temporary file for a handle's bytes; it lives as long as the handle."""
    return tempfile.TemporaryFile(prefix="aviary-ftp-")


class FtpTransfers(FtpQuestions):
    """The open handles under ``FtpDriver`` (see there) and the transfers that serve them."""

    _files: dict[int, OpenFile]
    _next_handle: int

    # -- the table of open handles ---------------------------------------------------------------

    def _entry(self, handle: Handle) -> OpenFile:
        return handle_entry(self._files, handle)

    def _remember(self, opened: OpenFile) -> Handle:
        handle = self._next_handle
        self._next_handle += 1
        self._files[handle] = opened
        return Handle(handle)

    # -- a writable handle's stage ---------------------------------------------------------------

    def _open_stage(self, opened: OpenFile, created: bool) -> None:
        """Give a writable handle its stage: empty (O_TRUNC, a new file), new bytes only, or all."""
        opened.stage = _new_stage()
        if opened.flags & os.O_TRUNC or created:
            opened.dirty = bool(opened.flags & os.O_TRUNC) and opened.stat.st_size > 0
        elif opened.flags & os.O_APPEND and opened.flags & os.O_ACCMODE == os.O_WRONLY:
            opened.append_only = True
        else:
            try:
                self._fetch(opened.path, opened.stage)
            except BaseException:
                opened.stage.close()
                raise

    def _fetch(self, path: str, into: BinaryIO) -> None:
        """RETR the whole of ``path`` into a local file."""
        sock, _ = self.session.start("RETR", path)
        if sock is None:
            self._fail(self._diagnose(interview.after_failed_read, path), path)
        assert sock is not None
        for chunk in self.session.read_all(sock):
            into.write(chunk)
        final = self.session.finish(sock)
        if not final.ok:
            raise OSError(errno.EIO, f"{self.describe()}: RETR {path}: {final}")

    def _store(self, path: str, source: BinaryIO | None, verb: str = "STOR") -> None:
        """STOR (or APPE) ``source`` to ``path``; a refusal is interviewed."""
        if source is not None:
            source.seek(0)
        reply = self.session.upload(verb, path, source)
        if verb == "APPE" and reply.code in (451, *_UNSUPPORTED):
            # The server will not append (proftpd without AllowStoreRestart): get, add, put.
            assert source is not None
            with tempfile.TemporaryFile(prefix="aviary-ftp-") as whole:
                self._fetch(path, whole)
                source.seek(0)
                whole.write(source.read())
                self._store(path, whole)
            return
        if not reply.ok:
            if reply.code in (425, 426, 451, 452, 552):  # the transfer, not the name, failed
                code = errno.ENOSPC if reply.code in (452, 552) else errno.EIO
                raise OSError(code, f"{self.describe()}: {verb} {path}: {reply}")
            self._fail(self._diagnose(interview.after_failed_create, path), path)

    def _put_stage(self, entry: OpenFile) -> None:
        """Send a handle's stage: STOR the whole (again after a reconnect), or APPE once."""
        assert entry.stage is not None
        stage = entry.stage
        if entry.append_only:
            self._store(entry.path, stage, "APPE")  # appending twice would double the bytes
            return
        self._recovering("put", lambda: self._store(entry.path, stage, "STOR"))

    def _whole_stage(self, entry: OpenFile) -> None:
        """An append-only stage becomes the whole file: the server's bytes, then those to add."""
        assert entry.stage is not None
        whole = _new_stage()
        try:
            self._fetch(entry.path, whole)
            entry.stage.seek(0)
            whole.write(entry.stage.read())
        except BaseException:
            whole.close()
            raise
        entry.stage.close()
        entry.stage, entry.append_only = whole, False

    def _keep_before_unlink(self, path: str) -> list[OpenFile]:
        """Stage the whole file for the handles open on ``path``: POSIX keeps the inode alive."""
        open_here = [e for e in self._files.values() if e.path == path and not e.orphan]
        for entry in open_here:
            if entry.stage is None and not entry.is_dir:
                entry.stage = _new_stage()
                self._fetch(path, entry.stage)
            elif entry.append_only:
                self._whole_stage(entry)
        return open_here

    # -- a read-only handle's download -----------------------------------------------------------

    def _remote_read(self, entry: OpenFile, size: int, offset: int) -> bytes:
        stream = self.session.stream
        if stream is None or stream.key is not entry or stream.position != offset:
            if entry.identity is not None:
                self._same_file(entry)
            sock, reply = self.session.start("RETR", entry.path, rest=offset or None)
            if sock is None:
                if reply.code in (554, 501) and offset:  # REST past the end of the file
                    return b""
                self._fail(self._diagnose(interview.after_failed_read, entry.path), entry.path)
            assert sock is not None
            stream = DataStream(entry, sock, offset)
            self.session.stream = stream
        data, ended = self.session.read_some(stream, size)
        if ended:
            self.session.stream = None
            final = self.session.finish(stream.sock)
            if not final.ok:
                raise OSError(errno.EIO, f"{self.describe()}: RETR {entry.path}: {final}")
        return data

    def _same_file(self, entry: OpenFile) -> None:
        """ESTALE unless ``entry.path`` still names the file opened (MLST's unique fact)."""
        found = self._lookup(entry.path)
        now = found.facts.get("unique") if found is not None else None
        if now != entry.identity:
            raise OSError(
                errno.ESTALE,
                f"{self.describe()}: {entry.path} is no longer the file that was opened "
                f"(unique {entry.identity}, now {now or 'no file'})",
                entry.path,
            )
