"""Chirp access control lists, decided exactly as cctools' chirp_server decides them.

Theory of operation
-------------------
Authorization in Chirp ignores Unix modes. Each directory may hold a file
``.__acl`` with lines ``subject rights``; a subject is ``method:name``
(``unix:alice``, ``address:127.0.0.1``, ``hostname:*.nd.edu``) and may contain
one ``*`` wildcard. The rights of a caller in a directory are the union of the
rights of every line whose subject matches. Rights are letters::

    r read   w write (implies p)   l list   d delete   p put (create new only)
    a admin (change the ACL)   x execute   v(...) reserve: mkdir gives the new
    directory an ACL of the caller with the rights in parentheses

A directory without ``.__acl`` uses the server's default ACL file if one is
configured (``chirp_server -A``); with "inherit" set, the nearest ancestor's
``.__acl`` comes first. Without either, nobody has rights there.

Rights are not hierarchical: only the containing directory's ACL matters. A
new directory gets a copy of its parent's effective ACL (``w``) or the reserve
ACL (``v``). Deleting needs ``d`` in the directory *above* the one checked
(cctools checks DELETE on the parent of the checked directory).

The checks raise ``OSError`` with the errno cctools leaves behind:
EACCES when the rights are missing, or when a directory exists but no ACL
applies; ENOENT when that directory does not exist. The ACL file itself can be
written only with ``a`` and never deleted.

``ChirpAcl`` reads and writes ACL files through an ``AclStorage`` (the server's
confined filesystem), so checks never look outside the exported tree; only the
default ACL file is read from the host.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path
from typing import Protocol

from chirp_server._fs import collapse_path, dirname

__all__ = [
    "ACL_BASE_NAME",
    "ADMIN",
    "DELETE",
    "EXECUTE",
    "LIST",
    "PUT",
    "READ",
    "RESERVE",
    "WRITE",
    "AclStorage",
    "ChirpAcl",
    "flags_from_access",
    "flags_from_open",
    "flags_to_text",
    "parse_acl",
    "subject_matches",
    "text_to_flags",
]

ACL_BASE_NAME = ".__acl"

READ = 1 << 0
WRITE = 1 << 1
LIST = 1 << 2
DELETE = 1 << 3
ADMIN = 1 << 4
EXECUTE = 1 << 5
PUT = 1 << 6
RESERVE_READ = 1 << 7
RESERVE_WRITE = 1 << 8
RESERVE_LIST = 1 << 9
RESERVE_DELETE = 1 << 10
RESERVE_PUT = 1 << 11
RESERVE_ADMIN = 1 << 12
RESERVE_RESERVE = 1 << 13
RESERVE_EXECUTE = 1 << 14
RESERVE = 1 << 15

# Text order of the plain rights and of the rights inside v(...).
_PLAIN = (
    ("r", READ),
    ("w", WRITE),
    ("l", LIST),
    ("d", DELETE),
    ("p", PUT),
    ("a", ADMIN),
    ("x", EXECUTE),
)
_RESERVED = (
    ("r", RESERVE_READ),
    ("w", RESERVE_WRITE),
    ("l", RESERVE_LIST),
    ("d", RESERVE_DELETE),
    ("p", RESERVE_PUT),
    ("v", RESERVE_RESERVE),
    ("a", RESERVE_ADMIN),
    ("x", RESERVE_EXECUTE),
)
# What a reserved right becomes in the new directory's ACL.
_GRANTED = {
    RESERVE_READ: READ,
    RESERVE_WRITE: WRITE,
    RESERVE_LIST: LIST,
    RESERVE_DELETE: DELETE,
    RESERVE_PUT: PUT,
    RESERVE_RESERVE: RESERVE,
    RESERVE_ADMIN: ADMIN,
    RESERVE_EXECUTE: EXECUTE,
}
_RIGHTS_CHARS = frozenset("rwldpvax()")
_C_SPACE = " \t\n\v\f\r"
#: fgets in cctools reads ACL lines in pieces of at most this many characters.
_FGETS_MAX = 1023


def _fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


# -- rights text --------------------------------------------------------------------------


def text_to_flags(text: str) -> int:
    """Rights text to flags; unknown letters are ignored, ``w`` also grants ``p``."""
    letters = dict(_PLAIN)
    letters["w"] = WRITE | PUT
    reserved = dict(_RESERVED)
    flags = 0
    i = 0
    while i < len(text):
        char = text[i]
        flags |= letters.get(char, 0)
        if char == "v":
            flags |= RESERVE
            if text[i + 1 : i + 2] == "(":
                i += 2
                while i < len(text) and text[i] != ")":
                    flags |= reserved.get(text[i], 0)
                    i += 1
        i += 1
    return flags


def flags_to_text(flags: int) -> str:
    """Flags to rights text in cctools' order ``rwldpax`` then ``v(...)``; none is ``n``."""
    text = "".join(letter for letter, bit in _PLAIN if flags & bit)
    if flags & RESERVE:
        text += "v(" + "".join(letter for letter, bit in _RESERVED if flags & bit) + ")"
    return text or "n"


def flags_from_access(mode: int) -> int:
    """The rights an ``access(path, mode)`` request needs (F_OK and 0 mean read)."""
    flags = 0
    if mode & os.R_OK:
        flags |= READ
    if mode & os.W_OK:
        flags |= WRITE
    if mode & os.X_OK:
        flags |= EXECUTE
    return flags or READ


def flags_from_open(flags: int) -> int:
    """The rights an ``open`` with these kernel flags needs."""
    need = 0
    if flags & os.O_WRONLY:
        need |= WRITE
    if flags & os.O_RDWR:
        need |= READ | WRITE
    if flags & (os.O_CREAT | os.O_TRUNC | os.O_APPEND):
        need |= WRITE
    return need or READ


def subject_matches(pattern: str, subject: str) -> bool:
    """cctools' ``string_match``: exact, or one ``*`` standing for any middle part.

    Only the first ``*`` is special. The text before it must start the subject and the
    text after it must end it (the two may overlap, as in cctools).
    """
    star = pattern.find("*")
    if star < 0:
        return pattern == subject
    head, tail = pattern[:star], pattern[star + 1 :]
    return len(tail) <= len(subject) and subject.startswith(head) and subject.endswith(tail)


def parse_acl(text: str) -> list[tuple[str, int]]:
    """The ``(subject, flags)`` entries of an ACL file, read as cctools reads them.

    A line is a subject (up to the first space), whitespace, then rights letters
    (``rwldpvax()``); a line without both is skipped, so ``subject n`` lines vanish.
    """
    entries: list[tuple[str, int]] = []
    lines = [piece + "\n" for piece in text.split("\n")]
    lines[-1] = lines[-1][:-1]  # the text after the last newline has none
    for line in lines:
        for start in range(0, len(line), _FGETS_MAX):
            parsed = _parse_line(line[start : start + _FGETS_MAX])
            if parsed is not None:
                entries.append(parsed)
    return entries


def _parse_line(line: str) -> tuple[str, int] | None:
    space = line.find(" ")
    if space <= 0:
        return None
    rest = line[space:].lstrip(_C_SPACE)
    end = 0
    while end < len(rest) and rest[end] in _RIGHTS_CHARS:
        end += 1
    if end == 0:
        return None
    return line[:space], text_to_flags(rest[:end])


def format_acl(entries: list[tuple[str, int]]) -> str:
    return "".join(f"{subject} {flags_to_text(flags)}\n" for subject, flags in entries)


# -- checks against a tree ---------------------------------------------------------------------


class AclStorage(Protocol):
    """What the ACL code needs from the exported tree (paths are fixed server paths)."""

    def isdir(self, path: str) -> bool: ...
    def readlink(self, path: str, length: int) -> bytes: ...
    def read_file(self, path: str) -> bytes: ...
    def write_file(self, path: str, data: bytes) -> None: ...
    def rename(self, old: str, new: str) -> None: ...
    def unlink(self, path: str) -> None: ...


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}"


class ChirpAcl:
    """The ACL policy of one server: default ACL, inheritance, read-only mode.

    Args:
        storage: the confined tree the ACL files live in.
        default_acl: host path of the default ACL file, or None.
        inherit_default: look in ancestors for ``.__acl`` before the default.
        read_only: grant at most ``r`` and ``l`` (``chirp_server -R``).
    """

    def __init__(
        self,
        storage: AclStorage,
        default_acl: Path | None = None,
        inherit_default: bool = False,
        read_only: bool = False,
    ) -> None:
        self.storage = storage
        self.default_acl = default_acl
        self.inherit_default = inherit_default
        self.read_only = read_only

    # -- reading

    def effective(self, directory: str) -> list[tuple[str, int]]:
        """The entries governing ``directory``: its ``.__acl``, an ancestor's, or the default.

        Raises:
            OSError: no ACL applies (the errno of the last file tried).
        """
        current = directory
        while True:
            try:
                data = self.storage.read_file(_join(current, ACL_BASE_NAME))
            except OSError as exc:
                last = exc
            else:
                return parse_acl(data.decode("utf-8", "surrogateescape"))
            if not self.inherit_default or current == "/":
                break
            slash = current.rfind("/")
            current = current[:slash] if slash > 0 else "/"
        if self.default_acl is None:
            raise last
        return parse_acl(self.default_acl.read_text("utf-8", "surrogateescape"))

    def rights(self, directory: str, subject: str) -> int | None:
        """The subject's flags in ``directory``; None when no ACL applies."""
        try:
            entries = self.effective(directory)
        except OSError:
            return None
        flags = 0
        for pattern, granted in entries:
            if subject_matches(pattern, subject):
                flags |= granted
        if self.read_only:
            flags &= READ | LIST
        return flags

    # -- checks

    def check_dir(self, directory: str, subject: str, flags: int) -> None:
        """Require ``flags`` in ``directory`` (DELETE: in the directory above it)."""
        granted = 0
        if flags & DELETE:
            above = self.rights(dirname(directory), subject)
            if above is None:
                raise self._missing(directory)
            granted |= above & DELETE
        if flags & ~DELETE:
            here = self.rights(directory, subject)
            if here is None:
                raise self._missing(directory)
            granted |= here
        if flags & granted != flags:
            raise _fail(errno.EACCES)

    def check(self, path: str, subject: str, flags: int) -> None:
        """Require ``flags`` for ``path``; a symlink is judged by its target's directory."""
        self._check(path, subject, flags, follow=True)

    def check_link(self, path: str, subject: str, flags: int) -> None:
        """Require ``flags`` for ``path`` itself, a symlink included."""
        self._check(path, subject, flags, follow=False)

    def _check(self, path: str, subject: str, flags: int, follow: bool) -> None:
        if follow and flags != DELETE:
            try:
                target = os.fsdecode(self.storage.readlink(path, 1024))
            except OSError:
                target = ""
            if target:
                path = target if target.startswith("/") else collapse_path(f"{path}/../{target}")
        if path.endswith(ACL_BASE_NAME):
            if flags & DELETE:
                raise _fail(errno.EACCES)
            if flags & WRITE:
                flags = (flags & ~WRITE) | ADMIN
        path = collapse_path(path)
        directory = path if self.storage.isdir(path) else dirname(path)
        self.check_dir(directory, subject, flags)

    def _missing(self, directory: str) -> OSError:
        # A missing ACL means "permission denied", a missing directory "no such entry".
        return _fail(errno.EACCES if self.storage.isdir(directory) else errno.ENOENT)

    # -- writing

    def set(self, directory: str, subject: str, flags: int, reset: bool = False) -> None:
        """Give ``subject`` exactly ``flags`` in ``directory`` (0 removes the entry).

        ``reset`` starts from an empty ACL instead of the effective one.

        Raises:
            OSError: ENOTDIR if ``directory`` is not one, EACCES if the ACL cannot be
                read or written.
        """
        if not self.storage.isdir(directory):
            raise _fail(errno.ENOTDIR)
        entries: list[tuple[str, int]] = []
        if not reset:
            try:
                entries = self.effective(directory)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise _fail(errno.EACCES) from None
        lines: list[tuple[str, int]] = []
        replaced = False
        for entry_subject, entry_flags in entries:
            if entry_subject == subject:
                entry_flags, replaced = flags, True
            if entry_flags:
                lines.append((entry_subject, entry_flags))
        if not replaced:
            lines.append((subject, flags))  # even with no rights: an "n" line, skipped on read
        final = _join(directory, ACL_BASE_NAME)
        scratch = f"{final}.{os.getpid()}.{threading.get_ident()}"
        try:
            self.storage.write_file(scratch, format_acl(lines).encode("utf-8", "surrogateescape"))
            self.storage.rename(scratch, final)
        except OSError:
            with contextlib.suppress(OSError):
                self.storage.unlink(scratch)
            raise _fail(errno.EACCES) from None

    def init_root(self, user: str) -> None:
        """Give the server's own user ``rwlda`` at the root if no ACL applies there."""
        try:
            self.effective("/")
        except OSError:
            self.storage.write_file(
                _join("/", ACL_BASE_NAME),
                format_acl([(f"unix:{user}", READ | WRITE | DELETE | LIST | ADMIN)]).encode(),
            )

    def init_copy(self, path: str) -> bool:
        """Give the new directory ``path`` a copy of its parent's effective ACL."""
        try:
            entries = self.effective(collapse_path(f"{path}/.."))
            self.storage.write_file(
                _join(path, ACL_BASE_NAME), format_acl(entries).encode("utf-8", "surrogateescape")
            )
        except OSError:
            return False
        return True

    def init_reserve(self, path: str, subject: str) -> bool:
        """Give the new directory ``path`` an ACL of ``subject`` with the reserved rights.

        ``v`` without a list reserves ``rwlda``.
        """
        reserved = self.rights(dirname(path), subject)
        if reserved is None:
            return False
        flags = 0
        for bit, granted in _GRANTED.items():
            if reserved & bit:
                flags |= granted
        if not flags:
            flags = READ | WRITE | LIST | DELETE | ADMIN
        try:
            self.storage.write_file(
                _join(path, ACL_BASE_NAME),
                format_acl([(subject, flags)]).encode("utf-8", "surrogateescape"),
            )
        except OSError:
            return False
        return True
