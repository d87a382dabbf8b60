"""What an XRootD server's answers mean: status to errno, stat to ``StatResult``.

The server's error text (a Linux server's own strerror words) is read first,
then the kXR code table (after XProtocol's ``toErrno()``), and a kXR_FSError
with an unknown text is 0: the driver interviews the server. Stat replies
become ``StatResult`` and listings' stat ``FileType``; reply sizes are counted
from the protocol's framing, since the bindings expose no socket counters.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import re
import stat as stat_module
from collections.abc import Callable
from typing import Any

from drivers._interface import FileType, StatResult

__all__ = [
    "BLOCK",
    "IS_DIR",
    "IS_READABLE",
    "IS_WRITABLE",
    "LISTED_NAME_MAX",
    "X_BIT_SET",
    "body_size",
    "cut_by_listings",
    "errno_for_status",
    "kind_of",
    "stat_from_info",
]

BLOCK = 4096  # bytes: the unit of the space query and the made-up st_blksize
#: bytes: the longest name a listing gives back whole (xrootd 5.5.3 cuts 255 bytes to 254)
LISTED_NAME_MAX = 254

# StatInfo flags (XProtocol kXR_* stat flags).
X_BIT_SET, IS_DIR, OTHER, OFFLINE, IS_READABLE, IS_WRITABLE = 1, 2, 4, 8, 16, 32

#: kXR error codes -> errno, after XProtocol's own toErrno() table.
ERRNO_BY_KXR: dict[int, int] = {
    3000: errno.EINVAL,  # kXR_ArgInvalid
    3001: errno.EINVAL,  # kXR_ArgMissing
    3002: errno.ENAMETOOLONG,  # kXR_ArgTooLong
    3003: errno.EBUSY,  # kXR_FileLocked: another handle has the file open for writing
    3004: errno.EBADF,  # kXR_FileNotOpen
    3005: errno.EIO,  # kXR_FSError: ambiguous (ENOTDIR, ENOTEMPTY, ELOOP...): see above
    3006: errno.EINVAL,  # kXR_InvalidRequest
    3007: errno.EIO,  # kXR_IOError
    3008: errno.ENOMEM,  # kXR_NoMemory
    3009: errno.ENOSPC,  # kXR_NoSpace
    3010: errno.EACCES,  # kXR_NotAuthorized
    3011: errno.ENOENT,  # kXR_NotFound
    3012: errno.EIO,  # kXR_ServerError
    3013: errno.ENOTSUP,  # kXR_Unsupported
    3014: errno.EHOSTUNREACH,  # kXR_noserver
    3015: errno.ENOTBLK,  # kXR_NotFile
    3016: errno.EISDIR,  # kXR_isDirectory
    3017: errno.ECANCELED,  # kXR_Cancelled
    3018: errno.EEXIST,  # kXR_ItExists
    3021: errno.EDQUOT,  # kXR_overQuota
    3025: errno.EROFS,  # kXR_fsReadOnly
    3027: errno.ENODATA,  # kXR_AttrNotFound
    3034: errno.ETIMEDOUT,  # kXR_ReqTimedOut
}
#: Client-side status codes of the bindings (XrdClStatus.hh) -> errno.
ERRNO_BY_CLIENT_CODE: dict[int, int] = {
    101: errno.EHOSTUNREACH,  # errInvalidAddr: the host does not resolve
    102: errno.ECONNRESET,  # errSocketError
    103: errno.ETIMEDOUT,  # errSocketTimeout
    104: errno.ECONNRESET,  # errSocketDisconnected
    107: errno.ECONNRESET,  # errStreamDisconnect
    108: errno.ECONNREFUSED,  # errConnectionError: no connection could be made
    109: errno.ECONNRESET,  # errInvalidSession: the handle's session died with its connection
    201: errno.EPROTO,  # errInvalidMessage: the server broke the protocol (a lying server)
    303: errno.EPROTO,  # errInvalidResponse: a reply of the wrong kind (a stat that is not one)
    206: errno.ETIMEDOUT,  # errOperationExpired
    207: errno.EINTR,  # errOperationInterrupted
}
#: A Linux server's strerror texts, lower-cased, -> errno.
_ERRNO_BY_TEXT = {os.strerror(code).lower(): code for code in sorted(errno.errorcode, reverse=True)}
_MESSAGE = re.compile(r"\[(\d+)\][^;]*;\s*(.+?)\s*$", re.S)


def errno_for_status(status: Any) -> int:
    """The errno an ``XRootDStatus`` means (0 when it is ambiguous: interview)."""
    if status.code != 400:  # errErrorResponse: the server answered; anything else is ours
        return ERRNO_BY_CLIENT_CODE.get(status.code, errno.EIO)
    match = _MESSAGE.search(str(status.message))
    if match:
        code = _ERRNO_BY_TEXT.get(match.group(2).lower())
        if code is not None:
            return code
    if status.errno == 3005:
        return 0
    return ERRNO_BY_KXR.get(status.errno, errno.EIO)


def stat_from_info(info: Any) -> StatResult:
    """The ``StatResult`` of a ``StatInfo`` reply (made-up fields named in ``synthesized``)."""
    synthesized = {"st_nlink", "st_blksize", "st_blocks"}
    flags = int(info.flags)
    kind = (
        stat_module.S_IFDIR if flags & IS_DIR else stat_module.S_IFCHR if flags & OTHER else 0
    ) or stat_module.S_IFREG
    mode_text = getattr(info, "mode", "") or ""
    if getattr(info, "extended", False) and mode_text:
        perms = int(mode_text, 8)
    else:  # an old server: only "readable/writable/executable by us" flags
        perms = (0o444 if flags & IS_READABLE else 0) | (0o200 if flags & IS_WRITABLE else 0)
        perms |= 0o111 if flags & X_BIT_SET else 0
        synthesized.add("st_mode")
    uid = _id_of(pwd.getpwnam, getattr(info, "owner", ""))
    gid = _id_of(grp.getgrnam, getattr(info, "group", ""))
    if uid is None:
        synthesized.add("st_uid")
    if gid is None:
        synthesized.add("st_gid")
    ident = int(info.id) if str(info.id).isdigit() else 0
    mtime = int(info.modtime) * 1_000_000_000
    times = {name: int(getattr(info, name, 0) or 0) * 1_000_000_000 for name in ("atime", "ctime")}
    for name, value in times.items():
        if not value:
            times[name] = mtime
            synthesized.add(f"st_{name}_ns")
    size = int(info.size)
    return StatResult(
        st_mode=kind | perms,
        st_ino=ident >> 32,  # the server's id is (st_ino << 32) | (st_dev & 0xffffffff)
        st_dev=ident & 0xFFFFFFFF,
        st_nlink=2 if flags & IS_DIR else 1,
        st_uid=uid or 0,
        st_gid=gid or 0,
        st_size=size,
        st_atime_ns=times["atime"],
        st_mtime_ns=mtime,
        st_ctime_ns=times["ctime"],
        st_blksize=BLOCK,
        st_blocks=(size + 511) // 512,
        synthesized=frozenset(synthesized),
    )


def _id_of(lookup: Callable[[str], Any], name: str) -> int | None:
    if not name:
        return None
    if name.isdigit():
        return int(name)
    try:
        found: int = lookup(name)[2]
    except KeyError:
        return None
    return found


def kind_of(info: Any) -> FileType:
    if info is None:
        return FileType.UNKNOWN
    flags = int(info.flags)
    if flags & IS_DIR:
        return FileType.DIRECTORY
    return FileType.UNKNOWN if flags & OTHER else FileType.REGULAR


def body_size(response: Any) -> int:
    """The size of a reply body, as the protocol would carry it."""
    if response is None:
        return 0
    if isinstance(response, bytes | bytearray):
        return len(response)
    entries = getattr(response, "dirlist", None)
    if entries is not None:
        return sum(len(e.name) + 1 + (64 if e.statinfo is not None else 0) for e in entries)
    return 64  # a stat or locate reply: about one line of text


def cut_by_listings(path: str) -> bool:
    """Whether listings would cut the last name of ``path`` (longer than LISTED_NAME_MAX)."""
    return len(os.fsencode(path.rstrip("/").rsplit("/", 1)[-1])) > LISTED_NAME_MAX
