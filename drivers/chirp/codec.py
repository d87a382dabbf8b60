"""The Chirp wire vocabulary shared by aviary's client and server.

Everything here is a pure function or a constant, taken from cctools' code
(chirp_protocol.h, chirp_server.c, chirp_client.c, url_encode.c), which is the
reference where it and the protocol manual disagree:

- error codes and their errno mappings, in both directions;
- path encoding: ``%XX`` for every byte <= 0x20, ``% \\ < > ' "`` and > 0x7a;
- the 13-field stat line and the 7-field statfs line (in the code's order);
- open flags as letters (``r w c t a x s``).
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
from enum import IntEnum

from drivers._interface import StatFS, StatResult

__all__ = [
    "CHIRP_PORT",
    "LINE_MAX",
    "MAX_BUFFER_SIZE",
    "PATH_MAX",
    "ChirpCode",
    "chirp_code_for_errno",
    "decode_path",
    "encode_path",
    "encode_stat",
    "encode_statfs",
    "encode_statfs_fields",
    "errno_for_chirp_code",
    "flags_from_letters",
    "letters_from_flags",
    "parse_stat_line",
    "parse_statfs_line",
]

CHIRP_PORT = 9094
#: Longest request line, including its LF (CHIRP_LINE_MAX).
LINE_MAX = 1024
#: Longest path (CHIRP_PATH_MAX).
PATH_MAX = 1024
#: Largest payload of one pread/pwrite (MAX_BUFFER_SIZE).
MAX_BUFFER_SIZE = 16 * 1024 * 1024


class ChirpCode(IntEnum):
    """Negative result codes (chirp_protocol.h)."""

    NOT_AUTHENTICATED = -1
    NOT_AUTHORIZED = -2
    DOESNT_EXIST = -3
    ALREADY_EXISTS = -4
    TOO_BIG = -5
    NO_SPACE = -6
    NO_MEMORY = -7
    INVALID_REQUEST = -8
    TOO_MANY_OPEN = -9
    BUSY = -10
    TRY_AGAIN = -11
    BAD_FD = -12
    IS_DIR = -13
    NOT_DIR = -14
    NOT_EMPTY = -15
    CROSS_DEVICE_LINK = -16
    OFFLINE = -17
    TIMED_OUT = -18
    DISCONNECTED = -19
    GRP_UNREACHABLE = -20
    NO_SUCH_JOB = -21
    IS_A_PIPE = -22
    NOT_SUPPORTED = -23
    NAME_TOO_LONG = -24
    UNKNOWN = -127


# Server side: errno -> code (errno_to_chirp in chirp_server.c).
_CODE_BY_ERRNO: dict[int, ChirpCode] = {
    errno.EACCES: ChirpCode.NOT_AUTHORIZED,
    errno.EPERM: ChirpCode.NOT_AUTHORIZED,
    errno.EROFS: ChirpCode.NOT_AUTHORIZED,
    errno.ENOENT: ChirpCode.DOESNT_EXIST,
    errno.EEXIST: ChirpCode.ALREADY_EXISTS,
    errno.EFBIG: ChirpCode.TOO_BIG,
    errno.ENOSPC: ChirpCode.NO_SPACE,
    errno.EDQUOT: ChirpCode.NO_SPACE,
    errno.ENOMEM: ChirpCode.NO_MEMORY,
    errno.ENODATA: ChirpCode.INVALID_REQUEST,  # ENOATTR on Linux
    errno.ENOSYS: ChirpCode.INVALID_REQUEST,
    errno.EINVAL: ChirpCode.INVALID_REQUEST,
    errno.EMFILE: ChirpCode.TOO_MANY_OPEN,
    errno.ENFILE: ChirpCode.TOO_MANY_OPEN,
    errno.EBUSY: ChirpCode.BUSY,
    errno.EAGAIN: ChirpCode.TRY_AGAIN,
    errno.EBADF: ChirpCode.BAD_FD,
    errno.EISDIR: ChirpCode.IS_DIR,
    errno.ENOTDIR: ChirpCode.NOT_DIR,
    errno.ENOTEMPTY: ChirpCode.NOT_EMPTY,
    errno.EXDEV: ChirpCode.CROSS_DEVICE_LINK,
    errno.EHOSTUNREACH: ChirpCode.GRP_UNREACHABLE,
    errno.ESRCH: ChirpCode.NO_SUCH_JOB,
    errno.ESPIPE: ChirpCode.IS_A_PIPE,
    errno.ENAMETOOLONG: ChirpCode.NAME_TOO_LONG,
    errno.ENOTSUP: ChirpCode.NOT_SUPPORTED,
}

# Client side: code -> errno. Unlike cctools' client, BAD_FD maps to EBADF
# (cctools leaves errno unchanged, i.e. garbage), OFFLINE to EHOSTDOWN and
# UNKNOWN (the server's "any other errno": ELOOP, EOVERFLOW...) to EIO.
_ERRNO_BY_CODE: dict[int, int] = {
    ChirpCode.NOT_AUTHENTICATED: errno.EACCES,
    ChirpCode.NOT_AUTHORIZED: errno.EACCES,
    ChirpCode.DOESNT_EXIST: errno.ENOENT,
    ChirpCode.ALREADY_EXISTS: errno.EEXIST,
    ChirpCode.TOO_BIG: errno.EFBIG,
    ChirpCode.NO_SPACE: errno.ENOSPC,
    ChirpCode.NO_MEMORY: errno.ENOMEM,
    ChirpCode.INVALID_REQUEST: errno.EINVAL,
    ChirpCode.TOO_MANY_OPEN: errno.EMFILE,
    ChirpCode.BUSY: errno.EBUSY,
    ChirpCode.TRY_AGAIN: errno.EAGAIN,
    ChirpCode.BAD_FD: errno.EBADF,
    ChirpCode.IS_DIR: errno.EISDIR,
    ChirpCode.NOT_DIR: errno.ENOTDIR,
    ChirpCode.NOT_EMPTY: errno.ENOTEMPTY,
    ChirpCode.CROSS_DEVICE_LINK: errno.EXDEV,
    ChirpCode.OFFLINE: errno.EHOSTDOWN,
    ChirpCode.TIMED_OUT: errno.ECONNRESET,
    ChirpCode.DISCONNECTED: errno.ECONNRESET,
    ChirpCode.GRP_UNREACHABLE: errno.ECONNRESET,
    ChirpCode.NO_SUCH_JOB: errno.ESRCH,
    ChirpCode.IS_A_PIPE: errno.ESPIPE,
    ChirpCode.NOT_SUPPORTED: errno.ENOTSUP,
    ChirpCode.NAME_TOO_LONG: errno.ENAMETOOLONG,
    ChirpCode.UNKNOWN: errno.EIO,  # cctools says ECONNRESET, which makes clients reconnect for nothing
}


def chirp_code_for_errno(code: int) -> int:
    """The result code a CCL server sends for a failed call with ``errno`` code."""
    return int(_CODE_BY_ERRNO.get(code, ChirpCode.UNKNOWN))


def errno_for_chirp_code(code: int) -> int:
    """The errno a client reports for a negative result; unknown codes are EIO."""
    return _ERRNO_BY_CODE.get(code, errno.EIO)


# -- paths ---------------------------------------------------------------------------

_SPECIAL = frozenset(b"%\\<>'\"")


def encode_path(path: str) -> str:
    """URL-encode a path the way cctools' ``url_encode`` does (bytes as UTF-8)."""
    out: list[str] = []
    for byte in os.fsencode(path):
        if byte <= 0x20 or byte > 0x7A or byte in _SPECIAL:
            out.append(f"%{byte:02X}")
        else:
            out.append(chr(byte))
    return "".join(out)


def decode_path(text: str | bytes) -> str:
    """Undo ``%XX`` escapes (either case); a malformed escape stays literal."""
    raw = os.fsencode(text) if isinstance(text, str) else text
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x25 and _is_hex(raw[i + 1 : i + 3]):
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def _is_hex(two: bytes) -> bool:
    return len(two) == 2 and all(c in b"0123456789abcdefABCDEF" for c in two)


# -- stat lines ------------------------------------------------------------------------

_SECOND = 1_000_000_000


def encode_stat(st: os.stat_result | None) -> str:
    """``dev ino mode nlink uid gid rdev size blksize blocks atime mtime ctime``.

    ``None`` gives the all-zero line that getlongdir sends when an lstat failed.
    """
    if st is None:
        return " ".join(["0"] * 13)
    fields = (
        st.st_dev,
        st.st_ino,
        st.st_mode,
        st.st_nlink,
        st.st_uid,
        st.st_gid,
        st.st_rdev,
        st.st_size,
        st.st_blksize,
        st.st_blocks,
        st.st_atime_ns // _SECOND,  # floor, as C's time_t, also before 1970
        st.st_mtime_ns // _SECOND,
        st.st_ctime_ns // _SECOND,
    )
    return " ".join(str(f) for f in fields)


def parse_stat_line(line: str) -> StatResult:
    """Parse a stat line; times carry whole seconds only.

    Raises:
        ValueError: not 13 integers.
    """
    v = _integers(line, 13, "stat")
    return StatResult(
        st_dev=v[0],
        st_ino=v[1],
        st_mode=v[2],
        st_nlink=v[3],
        st_uid=v[4],
        st_gid=v[5],
        st_rdev=v[6],
        st_size=v[7],
        st_blksize=v[8],
        st_blocks=v[9],
        st_atime_ns=v[10] * _SECOND,
        st_mtime_ns=v[11] * _SECOND,
        st_ctime_ns=v[12] * _SECOND,
    )


def encode_statfs(sv: os.statvfs_result, f_type: int = 0) -> str:
    """``type bsize blocks bfree bavail files ffree`` (the code's order, not the manual's)."""
    # statfs' f_bsize is statvfs' f_frsize on Linux: the unit of the block counts.
    fields = (f_type, sv.f_frsize, sv.f_blocks, sv.f_bfree, sv.f_bavail, sv.f_files, sv.f_ffree)
    return " ".join(str(f) for f in fields)


def encode_statfs_fields(
    f_type: int,
    f_bsize: int,
    f_blocks: int,
    f_bfree: int,
    f_bavail: int,
    f_files: int,
    f_ffree: int,
) -> str:
    """The statfs line from raw ``statfs(2)`` fields (what cctools' server sends)."""
    return " ".join(
        str(f) for f in (f_type, f_bsize, f_blocks, f_bfree, f_bavail, f_files, f_ffree)
    )


def parse_statfs_line(line: str) -> StatFS:
    """Parse a statfs line.

    Raises:
        ValueError: not 7 integers.
    """
    return StatFS(*_integers(line, 7, "statfs"))  # the line's order is StatFS' own


def _integers(line: str, count: int, what: str) -> list[int]:
    """The first ``count`` integers of a reply line (servers may append more fields)."""
    parts = line.split()
    if len(parts) < count:
        raise ValueError(f"{what} line has {len(parts)} fields, expected {count}: {line!r}")
    return [int(p) for p in parts[:count]]


# -- open flags --------------------------------------------------------------------------

#: Flags that only matter to the client's own kernel or descriptor table.
CLIENT_SIDE_FLAGS = (
    os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK | getattr(os, "O_LARGEFILE", 0) | os.O_NOATIME
)


def letters_from_flags(flags: int) -> str:
    """cctools' client encoding: ``r``/``w``/``rw`` then ``c t a x s``."""
    access = flags & os.O_ACCMODE
    text = "w" if access == os.O_WRONLY else "rw" if access == os.O_RDWR else "r"
    for bit, letter in ((os.O_CREAT, "c"), (os.O_TRUNC, "t"), (os.O_APPEND, "a"), (os.O_EXCL, "x")):
        if flags & bit:
            text += letter
    if flags & os.O_SYNC == os.O_SYNC:
        text += "s"
    return text


def flags_from_letters(letters: str) -> int:
    """The server's decoding (chirp_server.c): neither r nor w means O_RDONLY."""
    if "r" in letters:
        flags = os.O_RDWR if "w" in letters else os.O_RDONLY
    elif "w" in letters:
        flags = os.O_WRONLY
    else:
        flags = os.O_RDONLY
    for letter, bit in (("c", os.O_CREAT), ("t", os.O_TRUNC), ("a", os.O_APPEND), ("x", os.O_EXCL)):
        if letter in letters:
            flags |= bit
    if "s" in letters:
        flags |= os.O_SYNC
    return flags


def mode_is_dir(mode: int) -> bool:
    return stat_module.S_ISDIR(mode)
