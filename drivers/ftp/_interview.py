"""The interview: from a bare FTP failure to the errno a local filesystem would give.

Theory of operation
-------------------
FTP's failure replies do not say why: vsftpd answers every failed DELE with
``550 Delete operation failed.``, whether the file is missing, is a directory,
or sits in a directory we may not write. The seeds' answer (Thain and Livny,
"Parrot", section "errors and boundary conditions") is to interview the
server like an expert system: form a hypothesis ("the file is a directory"),
test it with a question the server must answer truthfully ("CWD there"), and
go on until one hypothesis survives.

Each function here is that decision procedure for one failed operation,
written against a :class:`Witness` that answers three questions:

- ``kind_of(path)``: FILE, DIRECTORY, OTHER, or ABSENT (the server shows no
  such name: missing, or hidden from us), asked with MLST or STAT;
- ``can_enter(path)``: does CWD into it succeed;
- ``is_empty(path)``: does its listing hold no names (None: cannot list).

The functions do no I/O themselves, so they are tested with a scripted
witness; the driver's witness asks the real server and every question is
one round trip in the driver's counters, charged to the operation that
failed. The precedence follows Linux: the first path argument's problems
come before the second's, and a missing component before a refused one.
"""

from __future__ import annotations

import errno
import posixpath
from enum import Enum
from typing import Protocol

__all__ = [
    "Kind",
    "Witness",
    "after_failed_create",
    "after_failed_link",
    "after_failed_listing",
    "after_failed_mkdir",
    "after_failed_read",
    "after_failed_rename",
    "after_failed_rmdir",
    "after_failed_unlink",
    "after_refused_change",
    "why_absent",
]


class Kind(Enum):
    FILE = "file"
    DIRECTORY = "directory"
    OTHER = "other"  # a device, a socket...: not a directory
    ABSENT = "absent"  # the server shows no such name


class Witness(Protocol):
    """The questions the interview may ask the server."""

    def kind_of(self, path: str) -> Kind: ...

    def can_enter(self, path: str) -> bool: ...

    def is_empty(self, path: str) -> bool | None: ...


def _parent(path: str) -> str:
    return posixpath.dirname(path.rstrip("/")) or "/"


def why_absent(witness: Witness, path: str) -> int:
    """``path`` is not shown: ENOENT, or ENOTDIR/EACCES because of a component above it."""
    if path.rstrip("/") == "":
        return errno.EACCES  # the root itself hidden: only permissions can do that
    return _parent_errno(witness, path, absent_leaf=errno.ENOENT)


def _parent_errno(witness: Witness, path: str, absent_leaf: int) -> int:
    """What stops us at ``path``'s parent; ``absent_leaf`` if the parent is a fine directory.

    A parent that is a directory we cannot enter hides its names: EACCES.
    """
    parent = _parent(path)
    if parent == path:
        return absent_leaf
    kind = witness.kind_of(parent)
    if kind is Kind.ABSENT:
        return why_absent(witness, parent)
    if kind is not Kind.DIRECTORY:
        return errno.ENOTDIR
    if absent_leaf == errno.ENOENT and not witness.can_enter(parent):
        return errno.EACCES
    return absent_leaf


def _file_expected(witness: Witness, path: str) -> int:
    """A call that needs a file there failed: missing, a directory, or not ours to touch."""
    kind = witness.kind_of(path)
    if kind is Kind.ABSENT:
        return why_absent(witness, path)
    if kind is Kind.DIRECTORY:
        return errno.EISDIR
    return errno.EACCES


def after_failed_read(witness: Witness, path: str) -> int:
    """RETR (open for reading, read_file) failed."""
    return _file_expected(witness, path)


def after_failed_create(witness: Witness, path: str) -> int:
    """STOR or APPE (create, replace, append) failed."""
    kind = witness.kind_of(path)
    if kind is Kind.DIRECTORY:
        return errno.EISDIR
    if kind is not Kind.ABSENT:
        return errno.EACCES  # it is there and we may not write it
    # Not there: a parent that is missing, not a directory, or not writable.
    return _parent_errno(witness, path, absent_leaf=errno.EACCES)


def after_failed_mkdir(witness: Witness, path: str) -> int:
    """MKD failed."""
    if witness.kind_of(path) is not Kind.ABSENT:
        return errno.EEXIST
    return _parent_errno(witness, path, absent_leaf=errno.EACCES)


def after_failed_unlink(witness: Witness, path: str) -> int:
    """DELE failed."""
    return _file_expected(witness, path)


def after_failed_rmdir(witness: Witness, path: str) -> int:
    """RMD failed."""
    kind = witness.kind_of(path)
    if kind is Kind.ABSENT:
        return why_absent(witness, path)
    if kind is not Kind.DIRECTORY:
        return errno.ENOTDIR
    if path.rstrip("/") == "":
        return errno.EBUSY
    if witness.is_empty(path) is False:
        return errno.ENOTEMPTY
    return errno.EACCES


def after_failed_listing(witness: Witness, path: str) -> int:
    """MLSD, LIST or CWD of a directory failed."""
    kind = witness.kind_of(path)
    if kind is Kind.ABSENT:
        return why_absent(witness, path)
    if kind is not Kind.DIRECTORY:
        return errno.ENOTDIR
    return errno.EACCES


def after_failed_rename(witness: Witness, old: str, new: str) -> int:
    """RNFR or RNTO failed (Linux order: the walks to both directories, the old name's
    first, then the old name, then how the two names relate, then the new name)."""
    old_kind = witness.kind_of(old)
    if old_kind is Kind.ABSENT:
        walk = _parent_errno(witness, old, absent_leaf=0)
        if walk:
            return walk
    walk = _parent_errno(witness, new, absent_leaf=0)
    if walk:
        return walk
    if old_kind is Kind.ABSENT:
        return why_absent(witness, old)
    if new.startswith(old.rstrip("/") + "/"):
        # A directory into itself; below a file, the new name's parent is no directory.
        return errno.EINVAL if old_kind is Kind.DIRECTORY else errno.ENOTDIR
    if old.startswith(new.rstrip("/") + "/") and new.rstrip("/"):
        return errno.ENOTEMPTY  # onto a directory that holds the old name: before any type
    new_kind = witness.kind_of(new)
    if new_kind is Kind.ABSENT:
        return _parent_errno(witness, new, absent_leaf=errno.EACCES)
    if old_kind is Kind.DIRECTORY and new_kind is not Kind.DIRECTORY:
        return errno.ENOTDIR
    if old_kind is not Kind.DIRECTORY and new_kind is Kind.DIRECTORY:
        return errno.EISDIR
    if new_kind is Kind.DIRECTORY and witness.is_empty(new) is False:
        return errno.ENOTEMPTY
    return errno.EACCES


def after_failed_link(witness: Witness, old: str | None, new: str, refusal: int) -> int:
    """link/symlink, which FTP cannot do: report what Linux would check first, else ``refusal``.

    ``old`` is the existing file of a hard link (None for a symlink, whose
    target is only text).
    """
    if old is not None and witness.kind_of(old) is Kind.ABSENT:
        return why_absent(witness, old)
    if witness.kind_of(new) is not Kind.ABSENT:
        return errno.EEXIST
    return _parent_errno(witness, new, absent_leaf=refusal)


def after_refused_change(witness: Witness, path: str) -> int:
    """SITE CHMOD or MFMT refused on a path: missing, or not ours to change."""
    if witness.kind_of(path) is Kind.ABSENT:
        return why_absent(witness, path)
    return errno.EPERM
