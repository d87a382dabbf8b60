"""The FTP driver's questions to the server: lookups, listings, stat, the interview's witness.

``FtpQuestions`` holds what the POSIX calls of ``drivers.ftp._driver.FtpDriver``
ask before they act, each question one round trip on the control connection
(a listing also opens a data connection), counted: what a path is (MLST, or
STAT's ``ls -l`` line when the server has no MLST), a directory's entries (MLSD
or LIST, bounded in size), the stat result made from either, and the plain
questions the errno interview asks (``drivers.ftp._interview.Witness``).
"""

from __future__ import annotations

import errno
import os
import posixpath
import zlib
from collections.abc import Callable
from contextlib import suppress
from dataclasses import replace
from typing import TypeVar, cast

from drivers._interface import (
    Driver,
    FileType,
    StatResult,
    raise_errno,
)
from drivers._network import call_with_recovery
from drivers.ftp import _interview as interview
from drivers.ftp._events import Reply
from drivers.ftp._listing import Listed, parse_list_line, parse_mlsx_line, to_stat
from drivers.ftp._shell import FtpSession
from drivers.ftp._verbs import parse_timeval

__all__ = ["MAX_LISTING_BYTES", "FtpQuestions"]

_UNSUPPORTED = (500, 502, 504)  # the server does not know the command
#: A directory listing larger than this (about a million names) is refused (EPROTO).
MAX_LISTING_BYTES = 64 * 1024 * 1024

T = TypeVar("T")


class FtpQuestions(Driver):
    """Questions to the server under ``FtpDriver`` (see there), one round trip each."""

    session: FtpSession
    recovery: float
    interview_questions: int
    last_interview: list[str]

    @property
    def listing_method(self) -> str:
        """ "MLSD" when the server offers MLSD/MLST (RFC 3659), else "LIST" (parsed ``ls -l``)."""
        self.session.ensure()
        return "MLSD" if self.session.features.has("MLST") else "LIST"

    # -- questions to the server (each one round trip, counted) ----------------------------------

    def _ask(self, verb: str, argument: str | None = None) -> Reply:
        return self.session.ask(verb, argument)

    def _recovering(self, operation: str, attempt: Callable[[], T]) -> T:
        # Only a connection that once worked is recovered: a server that was never
        # reached (wrong port, refused login) is an answer, given at once.
        budget = self.recovery if self.session.logins else 0.0
        if self.session.stream is not None or budget <= 0:
            return attempt()  # a download is streaming: a retry would lose its place
        return cast(
            T,
            call_with_recovery(
                operation,
                attempt,
                budget=budget,
                reset=self.session.disconnect,
                attempt_time=self.session.timeout,
            ),
        )

    def _lookup(self, path: str) -> Listed | None:
        """What the server says about ``path``: MLST, or STAT's ``ls -l`` line; None: not shown."""
        if self.listing_method == "MLSD":
            reply = self._ask("MLST", path)
            if reply.code != 250:
                return None
            for line in reply.body():
                entry = parse_mlsx_line(line)
                if entry is not None:
                    return entry
            return None
        reply = self._ask("STAT", path)
        if reply.code in _UNSUPPORTED:
            raise OSError(errno.ENOTSUP, f"{self.describe()} has neither MLST nor STAT with a path")
        if not 211 <= reply.code <= 213:
            return None
        base = posixpath.basename(path.rstrip("/"))
        found = None
        for line in reply.lines[1:-1]:
            entry = parse_list_line(line.lstrip(" ") if line.startswith(" ") else line)
            if entry is None:
                continue
            if entry.name == ".":  # STAT of a directory lists it; "." is the directory itself
                return replace(entry, name=base)
            if entry.name in (base, path):
                found = entry
        return found

    def kind_of(self, path: str) -> interview.Kind:
        self._note(f"kind_of {path}")
        entry = self._lookup(path)
        if entry is None:
            return interview.Kind.ABSENT
        if entry.type is FileType.DIRECTORY:
            return interview.Kind.DIRECTORY
        return interview.Kind.FILE if entry.type is FileType.REGULAR else interview.Kind.OTHER

    def can_enter(self, path: str) -> bool:
        self._note(f"can_enter {path}")
        entered = self._ask("CWD", path).code == 250
        if entered and path != "/":
            # Step out again: a working directory that is later removed confuses vsftpd.
            self._ask("CWD", "/")
        return entered

    def is_empty(self, path: str) -> bool | None:
        self._note(f"is_empty {path}")
        try:
            return not self._list(path)
        except OSError:
            return None

    def _note(self, question: str) -> None:
        self.interview_questions += 1
        self.last_interview.append(question)

    def _fail(self, code: int, path: str, path2: str | None = None) -> None:
        raise_errno(code, path, path2)

    def _diagnose(self, decide: object, *paths: str) -> int:
        """Run one interview procedure; its questions are counted in the current operation."""
        self.last_interview = []
        assert callable(decide)
        return int(decide(self, *paths))

    def _stat_entry(self, path: str, entry: Listed) -> StatResult:
        exact = None
        if (
            not entry.mtime_exact
            and entry.type is FileType.REGULAR
            and self.session.features.has("MDTM")
        ):
            reply = self._ask("MDTM", path)
            if reply.code == 213:
                with suppress(ValueError):
                    exact = parse_timeval(reply.first)
        return to_stat(
            entry, path, uid=os.getuid(), gid=os.getgid(), dev=self._device(), exact_mtime_ns=exact
        )

    def _device(self) -> int:
        # The same number in every process (str hashes are salted per process; crc32 is not).
        return zlib.crc32(f"{self.session.host}:{self.session.port}".encode()) & 0xFFFF | 0x10000

    def _stat(self, path: str) -> StatResult:
        entry = self._lookup(path)
        if entry is None:
            self._fail(self._diagnose(interview.why_absent, path), path)
        assert entry is not None
        return self._stat_entry(path, entry)

    def _list(self, path: str) -> list[Listed]:
        """The entries of a directory (never "." or ".."); a refusal raises the interviewed errno."""
        if self.listing_method == "MLSD":
            data, reply = self.session.download("MLSD", path, MAX_LISTING_BYTES)
            parse = parse_mlsx_line
        else:
            # LIST of a file or of a missing name "succeeds" on vsftpd: ask first. (Not
            # with CWD: vsftpd's STAT misreads names once its working directory is removed.)
            found = self._lookup(path)
            if found is None or found.type is not FileType.DIRECTORY:
                self._fail(self._diagnose(interview.after_failed_listing, path), path)
            data, reply = self.session.download("LIST", f"-a {path}", MAX_LISTING_BYTES)
            parse = parse_list_line
        if data is None or not reply.ok:
            self._fail(self._diagnose(interview.after_failed_listing, path), path)
        assert data is not None
        entries = []
        for raw in data.split(b"\n"):
            line = raw.removesuffix(b"\r").decode("utf-8", "surrogateescape")
            if not line or line.startswith("total "):
                continue
            entry = parse(line)
            if entry is None:
                raise OSError(
                    errno.EIO, f"{self.describe()}: unreadable listing line {line[:120]!r}", path
                )
            if entry.name in (".", "..") or entry.facts.get("type", "").lower() in ("cdir", "pdir"):
                continue
            if "/" in entry.name:  # MLSD of a plain file names the file itself
                raise_errno(errno.ENOTDIR, path)
            entries.append(entry)
        return entries
