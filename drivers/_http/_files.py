"""What the HTTP-based file drivers share: paths in URLs, statuses as errno, stat synthesis.

Strategy for errno: an HTTP status is rarely a whole answer. 404 says "no such
resource", which POSIX splits into ENOENT (the parent directory exists) and
ENOTDIR (some ancestor is a file): :func:`interview_missing` asks the server
about the ancestors, nearest first, before answering. Other statuses have one
meaning wherever they appear (:data:`ERRNO_BY_STATUS`); the ones whose meaning
depends on the method (405, 409 for WebDAV) are resolved by the driver that
sent it.

Stat results carry what HTTP says (size, Last-Modified, file or directory) and
synthesise the rest, naming each synthesised field in ``synthesized``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import re
import stat as stat_module
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Protocol
from urllib.parse import quote, unquote, urlsplit

from drivers._http._shell import HttpClient, HttpReply
from drivers._interface import StatResult, raise_errno

__all__ = [
    "ERRNO_BY_STATUS",
    "SYNTHESIZED_FIELDS",
    "PinnedFile",
    "errno_for_status",
    "http_date_ns",
    "interview_missing",
    "parent_of",
    "path_from_href",
    "pinned_read",
    "ranged_body",
    "ranged_get",
    "ranged_request",
    "strong_etag",
    "synthesize_stat",
    "url_path",
]

#: Statuses with one meaning whatever the method.
ERRNO_BY_STATUS: dict[int, int] = {
    400: errno.EINVAL,
    401: errno.EACCES,  # no or a wrong login
    403: errno.EACCES,
    404: errno.ENOENT,
    405: errno.EPERM,  # the method is not allowed on this resource
    408: errno.ETIMEDOUT,
    409: errno.ENOENT,  # WebDAV: a parent collection is missing
    411: errno.EINVAL,
    412: errno.EEXIST,  # Overwrite: F and the destination exists
    413: errno.EFBIG,
    414: errno.ENAMETOOLONG,
    415: errno.EINVAL,
    416: errno.EINVAL,
    423: errno.EBUSY,  # locked
    424: errno.EIO,
    429: errno.EAGAIN,
    500: errno.EIO,
    501: errno.ENOTSUP,
    502: errno.EIO,
    503: errno.EAGAIN,
    504: errno.ETIMEDOUT,
    507: errno.ENOSPC,
}

#: The stat fields an HTTP server never tells: always synthesised.
SYNTHESIZED_FIELDS = frozenset(
    {"st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_atime_ns", "st_ctime_ns"}
    | {"st_blksize", "st_blocks", "st_mode"}
)
_BLOCK = 4096
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

# Characters left alone in a URL path: RFC 3986 "pchar" less those some servers
# treat specially ("+" as a space in form-style decoders, ";" as a parameter start).
_SAFE = "/-._~!$&'()*,=:@"


def url_path(path: str, *, directory: bool = False) -> str:
    """The percent-encoded request target for a driver path ("/a b" -> "/a%20b")."""
    target = quote(path.encode("utf-8", "surrogateescape"), safe=_SAFE)
    if directory and not target.endswith("/"):
        target += "/"
    return target


def path_from_href(href: str) -> str:
    """The driver path named by an href (absolute URL or absolute path), no trailing slash."""
    raw = urlsplit(href).path if "://" in href else href.split("?", 1)[0]
    path = unquote(raw, errors="surrogateescape")
    path = "/" + path.strip("/")
    return posixpath.normpath(path) if path != "/" else "/"


def parent_of(path: str) -> str:
    return posixpath.dirname(path.rstrip("/")) or "/"


def errno_for_status(status: int) -> int:
    """The errno a status means when nothing more is known (EIO for the unknown ones)."""
    if status in ERRNO_BY_STATUS:
        return ERRNO_BY_STATUS[status]
    return errno.EIO if status >= 400 else errno.EPROTO


def http_date_ns(value: str | None) -> int | None:
    """An HTTP date (Last-Modified, getlastmodified) in nanoseconds since the epoch."""
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return int(when.timestamp()) * 1_000_000_000


def _stable_number(text: str) -> int:
    """A 63-bit number that is the same for the same text in every process."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


def synthesize_stat(
    endpoint: str,
    path: str,
    *,
    is_dir: bool,
    size: int | None,
    mtime_ns: int | None,
    file_mode: int,
    dir_mode: int,
) -> StatResult:
    """A stat result from what HTTP said; every field it did not say is named synthesised.

    Args:
        endpoint: "host:port", so two servers never share an st_dev.
        path: the driver path, the source of a stable st_ino.
        is_dir: the resource is a directory (collection, or listing behind a slash).
        size: the body size, if the server gave one.
        mtime_ns: Last-Modified in nanoseconds, if the server gave one.
        file_mode, dir_mode: permission bits to show for files and directories.
    """
    synthesized = set(SYNTHESIZED_FIELDS)
    if size is None:
        size = 0
        synthesized.add("st_size")
    if mtime_ns is None:
        mtime_ns = 0
        synthesized.add("st_mtime_ns")
    mode = (stat_module.S_IFDIR | dir_mode) if is_dir else (stat_module.S_IFREG | file_mode)
    return StatResult(
        st_mode=mode,
        st_ino=_stable_number(f"{endpoint}{path}") or 1,
        st_dev=_stable_number(endpoint) & 0xFFFFFFFF,
        st_nlink=2 if is_dir else 1,
        st_uid=os.getuid(),
        st_gid=os.getgid(),
        st_size=size,
        st_atime_ns=mtime_ns,
        st_mtime_ns=mtime_ns,
        st_ctime_ns=mtime_ns,
        st_blksize=_BLOCK,
        st_blocks=(size + 511) // 512,
        synthesized=frozenset(synthesized),
    )


def interview_missing(
    path: str, kind_of: Callable[[str], bool | None], filename: str | None = None
) -> None:
    """The server said a path does not exist: find out whether POSIX would say ENOTDIR.

    Walks up the ancestors of ``path``, nearest first, asking ``kind_of`` (one
    round trip each; True for a directory, False for a file, None for missing).
    The first ancestor that exists decides: a file means ENOTDIR, a directory
    ENOENT.

    Raises:
        OSError: always, ENOENT or ENOTDIR.
    """
    ancestor = parent_of(path)
    while ancestor != "/":
        kind = kind_of(ancestor)
        if kind is False:
            raise_errno(errno.ENOTDIR, filename or path)
        if kind is True:
            break
        ancestor = parent_of(ancestor)
    raise_errno(errno.ENOENT, filename or path)


def ranged_get(
    client: HttpClient,
    target: str,
    path: str,
    offset: int,
    size: int,
    headers: list[tuple[str, str]] | None = None,
) -> bytes | HttpReply:
    """pread over HTTP: ``size`` bytes at ``offset`` with one Range GET.

    A 206 must start where we asked (else EIO); 416 means the offset is at or
    past the end (b""); a 200 means the server ignores Range and sends the file
    from its first byte: the wanted slice is cut out of it, and the connection
    is dropped once it is in rather than read to the end.

    Returns:
        the bytes, or the reply of a failed request for the caller to map.

    Raises:
        OSError: EIO for a 206 of the wrong range; network errors.
    """
    return ranged_body(ranged_request(client, target, offset, size, headers), path, offset, size)


def ranged_request(
    client: HttpClient,
    target: str,
    offset: int,
    size: int,
    headers: list[tuple[str, str]] | None = None,
) -> HttpReply:
    """The Range GET of :func:`ranged_get`, its reply whole (headers such as ETag included)."""
    ranged = [*(headers or []), ("Range", f"bytes={offset}-{offset + size - 1}")]
    return client.request("GET", target, ranged, stop_after=offset + size)


def strong_etag(etag: str | None) -> str | None:
    """A strong ETag, or None: a weak one (``W/"..."``) never satisfies If-Match."""
    if not etag or etag.startswith("W/"):
        return None
    return etag


class PinnedFile(Protocol):
    """An open file as :func:`pinned_read` sees it."""

    path: str
    etag: str | None  # the file's strong ETag, held from its first successful read


def pinned_read(
    client: HttpClient,
    entry: PinnedFile,
    offset: int,
    size: int,
    who: str,
    headers: list[tuple[str, str]] | None = None,
) -> bytes | HttpReply:
    """pread of an open file held to the ETag it had when first read.

    With an ETag the Range GET carries ``If-Match``, so a file replaced since
    is not read as a mix of two versions; without one, the strong ETag of the
    first successful reply becomes the entry's.

    Args:
        who: the driver's description, for the ESTALE message.
        headers: sent before the condition (a login, for instance).

    Returns:
        what :func:`ranged_body` returns.

    Raises:
        OSError: ESTALE when the server says the file is no longer the one
            that was opened (412); what :func:`ranged_body` raises; network errors.
    """
    condition = [("If-Match", entry.etag)] if entry.etag else []
    reply = ranged_request(
        client, url_path(entry.path), offset, size, [*(headers or []), *condition]
    )
    if reply.status == 412 and entry.etag:
        raise OSError(
            errno.ESTALE,
            f"{who}: {entry.path} is no longer the file that was opened "
            f"(ETag {entry.etag}, now {reply.header('etag') or 'none'})",
            entry.path,
        )
    if entry.etag is None and reply.status in (200, 206):
        entry.etag = strong_etag(reply.header("etag"))
    return ranged_body(reply, entry.path, offset, size)


def ranged_body(reply: HttpReply, path: str, offset: int, size: int) -> bytes | HttpReply:
    """The bytes a :func:`ranged_request` reply holds, as :func:`ranged_get` returns them."""
    if reply.status == 206:
        match = _CONTENT_RANGE.fullmatch((reply.header("content-range") or "").strip())
        if match is None or int(match.group(1)) != offset:
            raise OSError(
                errno.EIO,
                f"206 for the wrong range (asked {offset}, got {reply.header('content-range')!r})",
                path,
            )
        return reply.body[:size]
    if reply.status == 416:
        return b""
    if reply.status == 200:
        return reply.body[offset : offset + size]
    return reply
