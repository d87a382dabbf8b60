"""What a syscall does with its arguments, as the sandbox checks them: the syscall table's words.

Each entry of the syscall table (``table.py``) says, with the types here,
which of its arguments are paths and what the call does with each (only look,
read, write, execute, move), which argument is a descriptor whose object it
changes, where an open call keeps its flags, and where a socket call keeps an
address that may name a file. The sandbox (``sandbox.py``) reads nothing else
to know what to check.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from reference_agent._abi import AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW

__all__ = [
    "FAN_MARK_DONT_FOLLOW",
    "IN_DONT_FOLLOW",
    "FdArg",
    "OpenArgs",
    "PathArg",
    "SocketArg",
    "Use",
    "at_path",
    "at_path_flagged",
    "plain_path",
]


class Use(enum.IntFlag):
    """What a call does with a path: only look at it (0), read, write, execute, move it."""

    LOOK = 0
    READ = 1
    WRITE = 2
    EXEC = 4
    #: rename's paths: moving a directory that holds a rule's path would move it out of the rule.
    MOVE = 8


IN_DONT_FOLLOW: Final = 0x02000000
FAN_MARK_DONT_FOLLOW: Final = 0x04


@dataclass(frozen=True, slots=True)
class PathArg:
    """One path argument of a syscall and what the call does with it."""

    path: int  # argument index of the path
    dirfd: int | None  # argument index of its directory descriptor; None: relative to the cwd
    use: Use
    follow: bool = True  # a symlink as the last component is followed
    flags: int | None = None  # argument index of the flags below
    nofollow_bit: int = 0  # flag that stops following (AT_SYMLINK_NOFOLLOW...)
    follow_bit: int = 0  # flag that starts following (AT_SYMLINK_FOLLOW)
    empty_bit: int = 0  # flag that makes "" mean the descriptor itself (AT_EMPTY_PATH)
    optional: bool = False  # NULL means the descriptor itself (utimensat, fanotify_mark)


@dataclass(frozen=True, slots=True)
class OpenArgs:
    """An open call's arguments: its path, its directory descriptor, its flags."""

    path: int
    dirfd: int | None  # None: relative to the cwd
    flags: int | None  # None: openat2, whose flags are in a struct open_how


@dataclass(frozen=True, slots=True)
class SocketArg:
    """A socket call's address, which names a file when it is an AF_UNIX path."""

    address: int
    length: int | None  # None: sendmsg, whose address is msg_name of a struct msghdr
    use: Use  # bind creates the socket file: WRITE; connecting to one: READ


@dataclass(frozen=True, slots=True)
class FdArg:
    """The descriptor whose object a call changes: it is checked as its path would be
    (``/proc/PID/fd/N``), so that a descriptor opened only to look (``O_PATH``)
    cannot be used to change a read-only file."""

    fd: int
    use: Use


def at_path(path: int, use: Use, follow: bool = True) -> PathArg:
    """A ``*at`` call's path: the descriptor is the argument before it."""
    return PathArg(path, path - 1, use, follow)


def at_path_flagged(
    path: int,
    use: Use,
    flags: int,
    follow: bool = True,
    *,
    follow_bit: int = 0,
) -> PathArg:
    """A ``*at`` call's path whose ``flags`` argument may hold AT_EMPTY_PATH and, unless the
    call takes ``follow_bit`` (AT_SYMLINK_FOLLOW) instead, AT_SYMLINK_NOFOLLOW."""
    nofollow = 0 if follow_bit else AT_SYMLINK_NOFOLLOW
    return PathArg(path, path - 1, use, follow, flags, nofollow, follow_bit, AT_EMPTY_PATH)


def plain_path(path: int, use: Use, follow: bool = True) -> PathArg:
    """A path relative to the cwd."""
    return PathArg(path, None, use, follow)
