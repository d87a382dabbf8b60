"""The mount table: Parrot's mountlist format and the built-in service prefixes.

A mountlist has one entry per line; ``#`` starts a comment:

    LOGICAL  PHYSICAL            # /data  /chirp/server:9094/data
    LOGICAL  PHYSICAL  ACCESS    # /data  /chirp/server:9094/data  rx
    LOGICAL  ACCESS              # /home  DENY

PHYSICAL is a local absolute path, a service path (``/chirp/HOST:PORT/path``)
or a driver URL (``chirp://HOST:PORT/path``). ACCESS is ``DENY`` (EACCES),
``ENOENT`` (the path seems not to exist), ``LOCAL`` (the local path itself,
punching through a wider mount such as ``/ /chirp/...``) or any of ``r w x``
(default ``rwx``).

An entry may name a single file: ``/job/output.txt /job/output.7.txt`` sends
every use of the one name to the other, so copies of a program hard-wired to
``output.txt`` can each write their own. Parsed with a ``base`` (``aviary run``
gives its starting directory), LOGICAL and PHYSICAL may also be relative to it:

    output.txt  output.7.txt      # ./output.txt is ./output.7.txt

A relative PHYSICAL made only of the letters r, w, x is read as ACCESS; write
``./rx`` for a file of that name. Directory listings are not rewritten: ``ls``
shows ``output.7.txt``, while ``cat output.txt`` reads it.
"""

from __future__ import annotations

import errno
import posixpath
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

__all__ = [
    "FULL_ACCESS",
    "Access",
    "Mount",
    "MountlistError",
    "Special",
    "parse_mountlist",
    "read_mountlist",
]


class MountlistError(ValueError):
    """A malformed mountlist; the message names the file and line."""


class Special(Enum):
    """Entries that name no physical path."""

    DENY = "DENY"  # every access fails with EACCES
    ENOENT = "ENOENT"  # the path seems not to exist
    LOCAL = "LOCAL"  # the local path itself, whatever wider mount covers it


@dataclass(frozen=True, slots=True)
class Access:
    """What a mount permits: read, write, execute."""

    read: bool = True
    write: bool = True
    execute: bool = True

    @classmethod
    def parse(cls, text: str) -> Access:
        letters = text.lower()
        if not letters or set(letters) - set("rwx"):
            raise ValueError(text)
        return cls("r" in letters, "w" in letters, "x" in letters)

    def errno_for(
        self, *, read: bool = False, write: bool = False, execute: bool = False
    ) -> int | None:
        """EACCES if the mount forbids one of the asked kinds of access, else None."""
        if (read and not self.read) or (write and not self.write) or (execute and not self.execute):
            return errno.EACCES
        return None

    def __str__(self) -> str:
        return (
            "".join(
                c for c, on in zip("rwx", (self.read, self.write, self.execute), strict=True) if on
            )
            or "-"
        )


#: Read, write and execute: what a mount without an ACCESS word permits.
FULL_ACCESS = Access()


@dataclass(frozen=True, slots=True)
class Mount:
    """One mountlist entry. ``physical`` is None for DENY/ENOENT/LOCAL entries."""

    logical: str
    physical: str | None
    access: Access = Access()
    special: Special | None = None
    source: str = ""  # "file:line", for messages

    def covers(self, path: str) -> bool:
        return self.logical == "/" or path == self.logical or path.startswith(self.logical + "/")


_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def _logical(text: str, where: str, base: str | None = None) -> str:
    if not text.startswith("/"):
        if base is None:
            raise MountlistError(f"{where}: logical path must be absolute: {text!r}")
        text = posixpath.join(base, text)
    return posixpath.normpath(text).replace("//", "/")


def _physical(text: str, where: str, base: str | None = None) -> str:
    if _URL.match(text):
        return text
    if not text.startswith("/"):
        if base is None:
            raise MountlistError(f"{where}: physical path must be absolute or a URL: {text!r}")
        text = posixpath.join(base, text)
    return posixpath.normpath(text).replace("//", "/")


def _is_access(text: str) -> bool:
    return bool(text) and not set(text.lower()) - set("rwx")


def _access(text: str, where: str) -> Access:
    try:
        return Access.parse(text)
    except ValueError:
        raise MountlistError(
            f"{where}: unknown access {text!r} (expected DENY, ENOENT, LOCAL or letters of rwx)"
        ) from None


def parse_mountlist(text: str, source: str = "mountlist", base: str | None = None) -> list[Mount]:
    """Parse mountlist text into mounts, in file order.

    Args:
        text: the entries.
        source: names the text in messages.
        base: an absolute directory that relative LOGICAL and PHYSICAL paths are
            relative to; None makes them an error.

    Raises:
        MountlistError: "SOURCE:LINE: what is wrong".
    """
    mounts: list[Mount] = []
    seen: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{number}"
        words = line.split()
        if len(words) not in (2, 3):
            raise MountlistError(f"{where}: expected LOGICAL PHYSICAL [ACCESS], got {line!r}")
        logical = _logical(words[0], where, base)
        if logical in seen:
            raise MountlistError(f"{where}: {logical} is already mounted at {seen[logical]}")
        seen[logical] = where
        second = words[1]
        if len(words) == 2 and second.upper() in Special.__members__:
            special = Special[second.upper()]
            mounts.append(Mount(logical, None, Access(), special, where))
            continue
        relative = not second.startswith("/") and not _URL.match(second)
        if len(words) == 2 and relative and (base is None or _is_access(second)):
            mounts.append(Mount(logical, logical, _access(second, where), None, where))
            continue
        access = _access(words[2], where) if len(words) == 3 else Access()
        mounts.append(Mount(logical, _physical(second, where, base), access, None, where))
    return mounts


def read_mountlist(path: str | Path, base: str | None = None) -> list[Mount]:
    """Read and parse a mountlist file (``base`` as for ``parse_mountlist``).

    Raises:
        MountlistError: unreadable or malformed.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise MountlistError(f"{path}: cannot read mountlist: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise MountlistError(f"{path}: mountlist is not text") from None
    return parse_mountlist(text, str(path), base)
