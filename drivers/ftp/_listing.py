"""Directory listings and the stat results made from them: MLSD/MLST facts and LIST lines.

Strategy: both kinds of listing become one :class:`Listed` record holding only
what the server said (None for what it did not), and :func:`to_stat` fills a
:class:`StatResult` from it, naming in ``synthesized`` every field it had to
make up. Nothing is guessed silently.

MLSx (RFC 3659 section 7): ``fact=value;fact=value; name``. The facts used are
type, size/sizd, modify, unique, unix.mode, unix.uid/unix.owner and
unix.gid/unix.group. proftpd, pure-ftpd and pyftpdlib all build ``unique`` as
the hex device number, a letter, and the hex inode number; when it has that
shape the inode and device are the server's own, otherwise the inode is a
hash of ``unique``.

LIST has no standard; every server here prints ``ls -l`` lines, parsed by
:data:`LS_LINE`. Their times have minute resolution (or day resolution for
files older than six months), so a LIST-only server's mtime is coarse unless
MDTM refines it; names containing a newline cannot be told from two lines.
"""

from __future__ import annotations

import calendar
import hashlib
import re
import stat as stat_module
import time
from dataclasses import dataclass, field

from drivers._interface import FileType, StatResult
from drivers.ftp._verbs import parse_timeval

__all__ = [
    "LS_LINE",
    "Listed",
    "parse_list_line",
    "parse_mlsx_line",
    "path_inode",
    "to_stat",
]

BLOCK_SIZE = 4096  # st_blksize we report when the server says nothing (bytes)
_MINUTE_NS = 60 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class Listed:
    """One name as a listing described it; None where the listing said nothing."""

    name: str
    type: FileType
    mode: int | None = None  # permission bits only
    size: int | None = None
    mtime_ns: int | None = None
    mtime_exact: bool = True  # False: minute or day resolution (LIST)
    uid: int | None = None
    gid: int | None = None
    nlink: int | None = None
    ino: int | None = None
    dev: int | None = None
    link_target: str | None = None
    facts: dict[str, str] = field(default_factory=dict)


# -- MLSD / MLST ------------------------------------------------------------------------------

_MLSX_TYPES = {
    "file": FileType.REGULAR,
    "dir": FileType.DIRECTORY,
    "cdir": FileType.DIRECTORY,
    "pdir": FileType.DIRECTORY,
}
_UNIQUE = re.compile(r"^([0-9a-f]+)[a-z]([0-9a-f]+)$", re.IGNORECASE)


def parse_mlsx_line(line: str) -> Listed | None:
    """Parse one MLSD line or MLST body line; None for a line that is not one."""
    text = line[1:] if line.startswith(" ") else line  # MLST's body lines start with a space
    facts_text, space, name = text.partition(" ")
    if not space or ("=" not in facts_text and facts_text):
        return None
    facts: dict[str, str] = {}
    for fact in filter(None, facts_text.split(";")):
        key, _, value = fact.partition("=")
        facts[key.strip().lower()] = value
    kind = facts.get("type", "").lower()
    file_type = _MLSX_TYPES.get(kind, FileType.UNKNOWN)
    target = None
    if kind.startswith("os.unix=slink") or kind.startswith("os.unix=symlink"):
        file_type = FileType.SYMLINK
        target = kind.partition(":")[2] or None
    mode = _int(facts.get("unix.mode"), 8)
    size = _int(facts.get("size")) if "size" in facts else _int(facts.get("sizd"))
    mtime = None
    if "modify" in facts:
        try:
            mtime = parse_timeval(facts["modify"])
        except ValueError:
            mtime = None
    dev = ino = None
    unique = facts.get("unique")
    if unique:
        match = _UNIQUE.match(unique)
        if match:
            dev, ino = int(match.group(1), 16), int(match.group(2), 16)
    uid = _int(facts.get("unix.uid", facts.get("unix.owner")))
    gid = _int(facts.get("unix.gid", facts.get("unix.group")))
    return Listed(
        name=name,
        type=file_type,
        mode=None if mode is None else stat_module.S_IMODE(mode),
        size=size,
        mtime_ns=mtime,
        uid=uid,
        gid=gid,
        ino=ino,
        dev=dev,
        link_target=target,
        facts=facts,
    )


def _int(text: str | None, base: int = 10) -> int | None:
    if text is None:
        return None
    try:
        return int(text, base)
    except ValueError:
        return None


# -- LIST ---------------------------------------------------------------------------------------

#: ``drwxr-xr-x    3 1002     1002         4096 Nov 22 21:31 name`` (vsftpd, proftpd,
#: pure-ftpd, pyftpdlib alike). The name starts after exactly one space: leading
#: spaces belong to it.
LS_LINE = re.compile(
    r"^(?P<type>[-dlpscbD])(?P<perms>[-rwxsStT]{9})[.+@]?\s+"
    r"(?P<nlink>\d+)\s+(?P<owner>\S+)\s+(?P<group>\S+)\s+(?P<size>\d+)\s+"
    r"(?P<month>[A-Za-z]{3})\s+(?P<day>\d{1,2})\s+(?P<when>\d{1,2}:\d\d|\d{4}) (?P<name>.*)$"
)
_LS_TYPES = {
    "-": FileType.REGULAR,
    "d": FileType.DIRECTORY,
    "l": FileType.SYMLINK,
    "p": FileType.FIFO,
    "s": FileType.SOCKET,
    "c": FileType.CHARDEV,
    "b": FileType.BLOCKDEV,
}
_MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}


def parse_list_line(line: str, now: float | None = None) -> Listed | None:
    """Parse one ``ls -l`` style LIST line; None for "total N" and lines of other shapes."""
    match = LS_LINE.match(line)
    if match is None:
        return None
    name = match.group("name")
    target = None
    file_type = _LS_TYPES.get(match.group("type"), FileType.UNKNOWN)
    if file_type is FileType.SYMLINK and " -> " in name:
        name, _, target = name.partition(" -> ")
    return Listed(
        name=name,
        type=file_type,
        mode=_mode_from_perms(match.group("perms")),
        size=int(match.group("size")),
        mtime_ns=_ls_time(match.group("month"), int(match.group("day")), match.group("when"), now),
        mtime_exact=False,
        uid=_int(match.group("owner")),
        gid=_int(match.group("group")),
        nlink=int(match.group("nlink")),
        link_target=target,
    )


def _mode_from_perms(perms: str) -> int:
    """``rwxr-sr-t`` -> 0o3755: each letter sets its bit; ``S``/``T`` set only the special bit."""
    mode = 0
    for index, char in enumerate(perms):
        if char not in "-ST":
            mode |= 1 << (8 - index)
    for index, special in (
        (2, stat_module.S_ISUID),
        (5, stat_module.S_ISGID),
        (8, stat_module.S_ISVTX),
    ):
        if perms[index] in "sStT":
            mode |= special
    return mode


def _ls_time(month: str, day: int, when: str, now: float | None) -> int | None:
    number = _MONTHS.get(month.capitalize())
    if number is None:
        return None
    current = time.gmtime(time.time() if now is None else now)
    if ":" in when:
        hour, minute = (int(p) for p in when.split(":"))
        year = current.tm_year
        # ls shows hh:mm for the last six months: a date "in the future" is last year's.
        if (number, day) > (current.tm_mon, current.tm_mday + 1):
            year -= 1
    else:
        hour = minute = 0
        year = int(when)
    try:
        return calendar.timegm((year, number, day, hour, minute, 0, 0, 0, 0)) * 1_000_000_000
    except ValueError:
        return None


# -- stat results ---------------------------------------------------------------------------------


def path_inode(path: str) -> int:
    """A stable inode number for a path the server gave none for (63 bits of its hash)."""
    return (
        int.from_bytes(
            hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).digest()
        )
        >> 1
    )


_TYPE_BITS = {
    FileType.REGULAR: stat_module.S_IFREG,
    FileType.DIRECTORY: stat_module.S_IFDIR,
    FileType.SYMLINK: stat_module.S_IFLNK,
    FileType.FIFO: stat_module.S_IFIFO,
    FileType.SOCKET: stat_module.S_IFSOCK,
    FileType.CHARDEV: stat_module.S_IFCHR,
    FileType.BLOCKDEV: stat_module.S_IFBLK,
}


def to_stat(
    entry: Listed, path: str, *, uid: int, gid: int, dev: int, exact_mtime_ns: int | None = None
) -> StatResult:
    """A full stat result from what a listing said, naming every field made up.

    Args:
        entry: the listing's record of ``path``.
        path: the absolute path (for a synthesised inode number).
        uid, gid: the caller's ids, reported when the server names no owner.
        dev: the device number to report when the server gives none.
        exact_mtime_ns: a precise mtime learnt elsewhere (MDTM), if any.
    """
    made_up: set[str] = set()
    file_type = entry.type if entry.type is not FileType.UNKNOWN else FileType.REGULAR
    permissions = entry.mode
    if permissions is None:
        permissions = 0o755 if file_type is FileType.DIRECTORY else 0o644
        made_up.add("st_mode")
    if entry.type is FileType.UNKNOWN:
        made_up.add("st_mode")
    size = entry.size
    if size is None:
        size = 0 if file_type is not FileType.DIRECTORY else BLOCK_SIZE
        made_up.add("st_size")
    mtime = exact_mtime_ns if exact_mtime_ns is not None else entry.mtime_ns
    if mtime is None or (exact_mtime_ns is None and not entry.mtime_exact):
        made_up.add("st_mtime_ns")
        mtime = mtime if mtime is not None else 0
    made_up.update(("st_atime_ns", "st_ctime_ns", "st_blksize", "st_blocks"))
    values = {"st_uid": entry.uid, "st_gid": entry.gid, "st_ino": entry.ino, "st_dev": entry.dev}
    defaults = {"st_uid": uid, "st_gid": gid, "st_ino": path_inode(path), "st_dev": dev}
    for name, value in values.items():
        if value is None:
            values[name] = defaults[name]
            made_up.add(name)
    nlink = entry.nlink
    if nlink is None:
        nlink = 2 if file_type is FileType.DIRECTORY else 1
        made_up.add("st_nlink")
    return StatResult(
        st_mode=_TYPE_BITS.get(file_type, stat_module.S_IFREG) | permissions,
        st_ino=int(values["st_ino"] or 0),
        st_dev=int(values["st_dev"] or 0),
        st_nlink=nlink,
        st_uid=int(values["st_uid"] or 0),
        st_gid=int(values["st_gid"] or 0),
        st_size=size,
        st_atime_ns=mtime,
        st_mtime_ns=mtime,
        st_ctime_ns=mtime,
        st_blksize=BLOCK_SIZE,
        st_blocks=(size + 511) // 512,
        synthesized=frozenset(made_up),
    )
