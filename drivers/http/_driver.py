"""The HTTP driver: read-only files and directory listings from a plain web server.

``http://HOST:PORT/path``; the agent's prefix is ``/http/HOST:PORT/path``.

How each call maps onto HTTP (one kept-alive connection, see ``drivers._http``):

- ``stat``/``lstat``/``fstat``: ``HEAD path``. 200 is a file (size from
  Content-Length, mtime from Last-Modified); a redirect to ``path/`` is a
  directory. Everything else in the result is synthesised and named so.
- ``pread``: ``GET`` with ``Range: bytes=OFFSET-END``. A 206 is checked against
  its Content-Range; a 416 is end of file; a 200 means the server ignores
  Range (Python's http.server does): the body is then read from its start,
  ``OFFSET`` bytes are skipped and the connection is dropped once the wanted
  bytes are in, so a wrong byte is never returned, at the cost of transfer.
- ``readdir``: ``GET path/`` and the server's own listing page (nginx autoindex,
  JSON or HTML; Python's http.server), see ``_listing``.
- errors: 404 is ENOENT or, after asking about the ancestors, ENOTDIR; 403 is
  EACCES; see ``drivers._http._files`` for the rest.

What this driver cannot do, and why:

- every call that would change the server fails with EROFS: plain HTTP has no
  write methods that web servers enable (open for writing, mkdir, unlink,
  rename, chmod, utimens, truncate, link, symlink...). Where Linux on a
  read-only mount reports another error first, so does this driver (mkdir of an
  existing name is EEXIST, opening a missing file without O_CREAT is ENOENT);
- symlinks are invisible: servers follow them, so ``lstat`` is ``stat`` and
  ``readlink`` answers EINVAL (or ENOENT);
- stat carries whole seconds of mtime (HTTP dates), no inode, owner, mode or
  link count: those are synthesised; directories have no size or mtime;
- a directory holding a page the server prefers to its listing (index.html on
  Python's http.server) cannot be listed: ENOTSUP, never a made-up listing;
- nginx leaves dotfiles out of its listings; Python's http.server lists them;
- statfs has no HTTP equivalent: ENOTSUP;
- a file replaced under an open handle is ESTALE where the server sends a
  strong ETag (nginx): the handle keeps its first read's ETag and sends every
  later ranged GET with ``If-Match`` (412 is ESTALE). Python's http.server
  sends none: its handles read whatever the path holds. nginx's ETag is the
  mtime and the size, so a replacement of the same size within the same
  second is not seen.
"""

from __future__ import annotations

import errno
import os
import posixpath
from dataclasses import dataclass, replace
from typing import ClassVar, Self
from urllib.parse import urlsplit

from drivers._http._files import (
    errno_for_status,
    http_date_ns,
    interview_missing,
    pinned_read,
    synthesize_stat,
    url_path,
)
from drivers._http._shell import MAX_LISTING_BYTES, HttpClient, HttpReply
from drivers._interface import (
    Capabilities,
    DirEntry,
    Driver,
    Handle,
    StatFS,
    StatResult,
    handle_entry,
    raise_errno,
)
from drivers._url import Location
from drivers.http._listing import parse_listing

__all__ = ["HTTP_PORT", "HttpDriver"]

HTTP_PORT = 80
_FILE_MODE = 0o444
_DIR_MODE = 0o555
#: What a read-only mount refuses with EROFS in an open of an existing file (O_CREAT and
#: O_APPEND ask for nothing there).
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC
_REDIRECTS = (301, 302, 303, 307, 308)
#: The most one pread asks for: a Range of a sane size.
MAX_READ = 16 << 20


@dataclass(slots=True)
class _OpenFile:
    path: str
    is_dir: bool
    etag: str | None = None  # the file's strong ETag at the first read, sent as If-Match


class HttpDriver(Driver):
    """A read-only client of a web server's files and directory listings.

    Args:
        host: server address.
        port: server port (80 by default).
        timeout: seconds to wait for any one network event.
    """

    name = "http"
    url_schemes = ("http",)
    capabilities = Capabilities(
        writable=False,
        # Every read is a GET of the path: a handle opened before the file changed behind the
        # server reads the new bytes (Python's http.server) or ESTALE (nginx's ETag), never
        # the old ones: what close-to-open leaves open to a reader opened before a change.
        consistency="close-to-open",
        handle_binding="path",
        symlinks=False,  # the server follows them on its disk
        hard_links=False,
        chmod=False,
        create_modes=False,
        utimens=False,
        time_resolution_ns=1_000_000_000,
        link_counts=False,
    )
    server_capabilities: ClassVar[dict[str, Capabilities]] = {
        "nginx": replace(capabilities, lists_dotfiles=False)
    }
    default_port = HTTP_PORT

    def __init__(self, host: str, port: int = HTTP_PORT, *, timeout: float = 30.0) -> None:
        super().__init__()
        self.host, self.port, self.timeout = host, port, timeout
        self._client = HttpClient(host, port, self.counters, timeout=timeout, label=self.describe())
        self._files: dict[int, _OpenFile] = {}
        self._next_handle = 3
        #: Which listing format the server answered last (for messages and reports).
        self.listing_format: str | None = None

    @classmethod
    def from_location(cls, location: Location, *, timeout: float = 30.0) -> Self:
        if not location.host:
            raise ValueError(f"http URL needs a host: {location}")
        return cls(location.host, location.port or HTTP_PORT, timeout=timeout)

    def describe(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close_driver(self) -> None:
        self._files.clear()
        self._client.close()

    # -- requests ---------------------------------------------------------------------

    def _request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        stop_after: int | None = None,
        limit: int | None = None,
    ) -> HttpReply:
        return self._client.request(
            method, target, headers or [], stop_after=stop_after, limit=limit
        )

    def _kind(self, path: str) -> bool | None:
        """True for a directory, False for a file, None when missing (one HEAD)."""
        if path == "/":
            return True
        reply = self._request("HEAD", url_path(path))
        if reply.status == 200:
            return False
        if reply.status in _REDIRECTS and self._redirects_to_directory(path, reply):
            return True
        if reply.status in (404, 410):
            return None
        raise_errno(errno_for_status(reply.status), path)
        raise AssertionError("unreachable")

    @staticmethod
    def _redirects_to_directory(path: str, reply: HttpReply) -> bool:
        location = reply.header("location") or ""
        target = urlsplit(location).path if "://" in location else location
        return target.split("?", 1)[0] == url_path(path, directory=True)

    def _fail(self, path: str, reply: HttpReply) -> None:
        """Raise the errno for a failed request about ``path``, interviewing for 404."""
        if reply.status in (404, 410):
            interview_missing(path, self._kind)
        raise_errno(errno_for_status(reply.status), path)

    def _stat(self, path: str) -> StatResult:
        endpoint = f"{self.host}:{self.port}"
        target = url_path(path, directory=path == "/")
        reply = self._request("HEAD", target)
        if reply.status == 200 and path != "/":
            length = reply.header("content-length")
            return synthesize_stat(
                endpoint,
                path,
                is_dir=False,
                size=int(length) if length and length.isdigit() else None,
                mtime_ns=http_date_ns(reply.header("last-modified")),
                file_mode=_FILE_MODE,
                dir_mode=_DIR_MODE,
            )
        is_dir = (reply.status == 200 and path == "/") or (
            reply.status in _REDIRECTS and self._redirects_to_directory(path, reply)
        )
        if not is_dir:
            self._fail(path, reply)
        return synthesize_stat(
            endpoint,
            path,
            is_dir=True,
            size=None,
            mtime_ns=None,
            file_mode=_FILE_MODE,
            dir_mode=_DIR_MODE,
        )

    # -- metadata ---------------------------------------------------------------------

    def stat(self, path: str) -> StatResult:
        with self.counters.operation("stat"):
            return self._stat(path)

    def lstat(self, path: str) -> StatResult:
        with self.counters.operation("lstat"):
            return self._stat(path)  # servers follow symlinks: we never see one

    def fstat(self, handle: Handle) -> StatResult:
        with self.counters.operation("fstat"):
            return self._stat(self._open_file(handle).path)

    def access(self, path: str, mode: int) -> None:
        with self.counters.operation("access"):
            st = self._stat(path)
            if mode & os.W_OK:
                raise_errno(errno.EROFS, path)
            if mode & os.X_OK and not st.is_dir():
                raise_errno(errno.EACCES, path)

    def statfs(self, path: str) -> StatFS:
        with self.counters.operation("statfs"):
            raise OSError(errno.ENOTSUP, "HTTP has no statfs", path)

    def chmod(self, path: str, mode: int) -> None:
        with self.counters.operation("chmod"):
            self._read_only(path, must_exist=True)

    def utimens(self, path: str, times_ns: tuple[int, int] | None = None) -> None:
        with self.counters.operation("utimens"):
            self._read_only(path, must_exist=True)

    def _read_only(self, path: str, *, must_exist: bool = False, new: bool = False) -> None:
        """Fail as Linux does on a read-only mount: lookup errors first, then EROFS."""
        if must_exist:
            self._stat(path)
        elif new:
            self._parent_lookup(path)
            if self._kind(path) is not None:
                raise_errno(errno.EEXIST, path)
        raise_errno(errno.EROFS, path)

    def _parent_lookup(self, path: str) -> None:
        """The lookup Linux makes of a new name's directory before it asks for write access."""
        parent = posixpath.dirname(path.rstrip("/")) or "/"
        kind = self._kind(parent)
        if kind is None:
            interview_missing(parent, self._kind, filename=path)  # ENOENT, or ENOTDIR above
        if kind is False:
            raise_errno(errno.ENOTDIR, path)

    # -- open files -------------------------------------------------------------------

    def open(self, path: str, flags: int, mode: int = 0o666) -> Handle:
        with self.counters.operation("open"):
            if flags & os.O_CREAT:
                kind = self._kind(path)
                if kind is not None and flags & os.O_EXCL:
                    raise_errno(errno.EEXIST, path)
                if kind is True:
                    raise_errno(errno.EISDIR, path)
                if kind is None:
                    self._parent_lookup(path)
                    raise_errno(errno.EROFS, path)
                # An existing file: O_CREAT asks for nothing, so reading it is allowed.
            st = self._stat(path)
            if st.is_dir() and flags & (os.O_WRONLY | os.O_RDWR):
                raise_errno(errno.EISDIR, path)
            if flags & _WRITE_FLAGS:
                raise_errno(errno.EROFS, path)
            if flags & os.O_DIRECTORY and not st.is_dir():
                raise_errno(errno.ENOTDIR, path)
            handle = self._next_handle
            self._next_handle += 1
            self._files[handle] = _OpenFile(path, st.is_dir())
            return Handle(handle)

    def _open_file(self, handle: Handle) -> _OpenFile:
        return handle_entry(self._files, handle)

    def close(self, handle: Handle) -> None:
        with self.counters.operation("close"):
            self._open_file(handle)
            del self._files[int(handle)]

    def pread(self, handle: Handle, size: int, offset: int) -> bytes:
        with self.counters.operation("pread"):
            entry = self._open_file(handle)
            if size < 0 or offset < 0:
                raise_errno(errno.EINVAL)
            if entry.is_dir:
                raise_errno(errno.EISDIR, entry.path)
            size = min(size, MAX_READ)
            if size == 0:
                return b""
            result = pinned_read(self._client, entry, offset, size, self.describe())
            if isinstance(result, bytes):
                return result
            self._fail(entry.path, result)
            raise AssertionError("unreachable")

    def pwrite(self, handle: Handle, data: bytes, offset: int) -> int:
        with self.counters.operation("pwrite"):
            entry = self._open_file(handle)
            raise OSError(errno.EBADF, "opened read-only (HTTP is read-only)", entry.path)

    def fsync(self, handle: Handle) -> None:
        with self.counters.operation("fsync"):
            self._open_file(handle)  # nothing was written: nothing to make durable

    def ftruncate(self, handle: Handle, length: int) -> None:
        with self.counters.operation("ftruncate"):
            entry = self._open_file(handle)
            raise OSError(errno.EBADF, "opened read-only (HTTP is read-only)", entry.path)

    def truncate(self, path: str, length: int) -> None:
        with self.counters.operation("truncate"):
            st = self._stat(path)
            if st.is_dir():
                raise_errno(errno.EISDIR, path)
            raise_errno(errno.EROFS, path)

    def read_file(self, path: str, chunk: int = 1 << 20) -> bytes:
        """One GET of the whole file (a directory redirects: EISDIR)."""
        with self.counters.operation("getfile"):
            reply = self._request("GET", url_path(path))
            if reply.status == 200 and path != "/":
                return reply.body
            if path == "/" or (
                reply.status in _REDIRECTS and self._redirects_to_directory(path, reply)
            ):
                raise_errno(errno.EISDIR, path)
            self._fail(path, reply)
            raise AssertionError("unreachable")

    # -- the namespace ----------------------------------------------------------------

    def readdir(self, path: str) -> list[DirEntry]:
        with self.counters.operation("readdir"):
            reply = self._request("GET", url_path(path, directory=True), limit=MAX_LISTING_BYTES)
            if reply.status != 200:
                if reply.status in (404, 410) and self._kind(path) is False:
                    raise_errno(errno.ENOTDIR, path)
                self._fail(path, reply)
            self.listing_format, entries = parse_listing(
                path, reply.header("content-type"), reply.body
            )
            return entries

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        with self.counters.operation("mkdir"):
            self._read_only(path, new=True)

    def rmdir(self, path: str) -> None:
        with self.counters.operation("rmdir"):
            self._parent_lookup(path)
            raise_errno(errno.EROFS, path)

    def unlink(self, path: str) -> None:
        with self.counters.operation("unlink"):
            self._parent_lookup(path)
            raise_errno(errno.EROFS, path)

    def rename(self, old: str, new: str) -> None:
        with self.counters.operation("rename"):
            self._parent_lookup(old)
            self._parent_lookup(new)
            raise_errno(errno.EROFS, old, new)

    def link(self, old: str, new: str) -> None:
        with self.counters.operation("link"):
            self._read_only(new, new=True)

    def symlink(self, target: str, linkpath: str) -> None:
        with self.counters.operation("symlink"):
            self._read_only(linkpath, new=True)

    def readlink(self, path: str) -> str:
        with self.counters.operation("readlink"):
            self._stat(path)
            raise OSError(errno.EINVAL, "not a symlink (HTTP servers follow them)", path)
