"""The WebDAV driver: files and directories on a DAV server, writes staged and sent on close.

``dav://USER:PASSWORD@HOST:PORT/path`` (HTTP Basic on every request); the
agent's prefix is ``/dav/USER:PASSWORD@HOST:PORT/path``.

How each call maps onto WebDAV (RFC 4918) over one kept-alive connection:

- ``stat``: ``PROPFIND`` Depth 0; ``readdir``: Depth 1 (see ``_multistatus``);
- reads on a read-only handle: ``GET`` with ``Range`` for each pread;
- the get/put model for writes, as the seeds describe it: a handle opened for
  writing holds a local copy (fetched whole at open unless O_TRUNC or new);
  preads and pwrites work on it, and close (or fsync) sends it back with one
  ``PUT``. O_CREAT makes the file at open with an empty PUT, so the name
  exists as POSIX says at once;
- ``mkdir``: ``MKCOL path/``; ``rename``: ``MOVE`` with ``Destination`` and
  ``Overwrite: T``, after checking what POSIX checks (EISDIR, ENOTDIR,
  ENOTEMPTY, EINVAL); ``unlink``/``rmdir``: ``DELETE``, after a PROPFIND, because
  DAV's DELETE of a collection is recursive (wsgidav even without the trailing
  slash, where nginx answers 409).

The errno interview: 404 becomes ENOENT or ENOTDIR after asking about the
ancestors; 405 on MKCOL is EEXIST; 409 (a missing parent collection) is ENOENT
or ENOTDIR after the same interview; 401/403 are EACCES (a wrong password
gives EACCES on the first request). Each question is a counted round trip.

What this driver cannot do, and why:

- no symlinks or hard links (DAV has neither): symlink and link answer EPERM,
  readlink EINVAL; servers follow links (nginx) or hide them (wsgidav: PROPFIND
  leaves them out, a request for one gets 403, so EACCES);
- stat: whole-second mtimes from getlastmodified; inode, owner, mode, link
  count, atime and ctime are synthesised and named so; chmod and utimens
  answer ENOTSUP (the properties are protected on both servers); modes of new
  files are the server's (nginx dav_access, wsgidav the umask);
- get/put: writes reach the server at close or fsync, not at pwrite; a handle
  is bound to its path, so a rename or unlink of an open file is not seen by
  the handle (reads fail with ENOENT after an unlink; close after a rename
  writes to the old name);
- a file replaced under a read-only handle (another file renamed or put over
  its name) is ESTALE where the server gives a strong ETag: the handle keeps
  the ETag of open (PROPFIND's getetag: wsgidav) or, where PROPFIND has none,
  of its first read (nginx's GET), and sends each ranged GET with ``If-Match``;
  the server's 412 is ESTALE (no extra round trip). A new version this driver
  sends itself (another handle's write-back, a truncate) holds the handles reading
  the file to that version instead, where they held the one it was made from: a
  program reads its own changes, as on a local disk. The ETag is the server's
  judgement: nginx's is the mtime and the size, so a file replaced by one of
  the same size within the same second is not seen; a weak ETag (``W/``)
  cannot be matched and is not used;
- checks and changes are separate requests: a concurrent client can slip in
  between (rmdir's emptiness check and its DELETE, for instance);
- nginx's PROPFIND hides dotfiles: they are missing from listings, and rmdir of
  a directory holding only dotfiles deletes them with it; nginx also answers a
  listing of a directory holding a dangling symlink with 500 (EIO);
- statfs needs RFC 4331 quota properties (wsgidav has them, nginx does not:
  ENOTSUP).
"""

from __future__ import annotations

import errno
import os
import tempfile
from base64 import b64encode
from dataclasses import dataclass, replace
from typing import IO, ClassVar, Self

from drivers._http._files import (
    errno_for_status,
    interview_missing,
    parent_of,
    pinned_read,
    strong_etag,
    synthesize_stat,
    url_path,
)
from drivers._http._shell import MAX_LISTING_BYTES, HttpClient, HttpReply
from drivers._interface import (
    Capabilities,
    DirEntry,
    Driver,
    FileType,
    Handle,
    StatFS,
    StatResult,
    handle_entry,
    raise_errno,
)
from drivers._url import Location
from drivers.webdav._multistatus import PROPFIND_BODY, DavResource, parse_multistatus

__all__ = ["DAV_PORT", "WebDavDriver"]

DAV_PORT = 80
_FILE_MODE = 0o644
_DIR_MODE = 0o755
_MAX_READ = 16 << 20
_COPY_CHUNK = 1 << 20


@dataclass(slots=True)
class _OpenFile:
    path: str
    flags: int
    is_dir: bool
    staged: IO[bytes] | None = None  # the local copy of a handle open for writing
    dirty: bool = False
    etag: str | None = None  # read-only: the file's strong ETag, sent as If-Match
    #: Writing: the strong ETag of the version this handle started from (None: unknown).
    base: str | None = None


class WebDavDriver(Driver):
    """A client of a WebDAV server (RFC 4918), with HTTP Basic login.

    Args:
        host: server address.
        port: server port (80 by default).
        user, password: the Basic login, or None for none.
        timeout: seconds to wait for any one network event.
        recovery: seconds spent reconnecting after a connection that worked broke
            (None: ``$AVIARY_HTTP_RECOVERY``, else 60; 0: fail at once); GET,
            PROPFIND and the whole-file PUT of a staged handle are sent again.
    """

    name = "webdav"
    url_schemes = ("dav",)
    capabilities = Capabilities(
        consistency="close-to-open",  # get/put: PUT at close or fsync
        handle_binding="path",
        symlinks=False,
        hard_links=False,
        chmod=False,
        create_modes=False,
        utimens=False,  # getlastmodified is protected
        time_resolution_ns=1_000_000_000,
        link_counts=False,
        # MOVE answers a missing source (404) before the destination's parent (Linux
        # reports a parent that is a file, ENOTDIR, first).
        errno_precedence=False,
    )
    server_capabilities: ClassVar[dict[str, Capabilities]] = {
        "nginx": replace(capabilities, lists_dotfiles=False)
    }
    service = "dav"
    default_port = DAV_PORT

    def __init__(
        self,
        host: str,
        port: int = DAV_PORT,
        *,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        recovery: float | None = None,
    ) -> None:
        super().__init__()
        self.host, self.port, self.user, self.timeout = host, port, user, timeout
        self._client = HttpClient(
            host, port, self.counters, timeout=timeout, label=self.describe(), recovery=recovery
        )
        self._auth: list[tuple[str, str]] = []
        if user is not None:
            token = b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
            self._auth = [("Authorization", f"Basic {token}")]
        self._files: dict[int, _OpenFile] = {}
        self._next_handle = 3

    @classmethod
    def from_location(cls, location: Location, *, timeout: float = 30.0) -> Self:
        if not location.host:
            raise ValueError(f"dav URL needs a host: {location}")
        return cls(
            location.host,
            location.port or DAV_PORT,
            user=location.user,
            password=location.password,
            timeout=timeout,
        )

    def describe(self) -> str:
        login = f"{self.user}@" if self.user else ""
        return f"dav://{login}{self.host}:{self.port}"

    def close_driver(self) -> None:
        for entry in self._files.values():
            if entry.staged is not None:
                entry.staged.close()
        self._files.clear()
        self._client.close()

    # -- requests and the interview -------------------------------------------------------

    def _request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        limit: int | None = None,
    ) -> HttpReply:
        reply = self._client.request(
            method, target, [*self._auth, *(headers or [])], body, limit=limit
        )
        if reply.status == 401:
            raise OSError(errno.EACCES, f"{self.describe()} refused the login (401)")
        return reply

    def _propfind(self, path: str, depth: int) -> list[DavResource] | None:
        """The resources of a PROPFIND, or None when the path does not exist (404)."""
        headers = [("Depth", str(depth)), ("Content-Type", 'application/xml; charset="utf-8"')]
        reply = self._request(
            "PROPFIND", url_path(path), headers, PROPFIND_BODY, limit=MAX_LISTING_BYTES
        )
        if reply.status in (404, 410):
            return None
        if reply.status != 207:
            raise OSError(
                errno_for_status(reply.status), f"PROPFIND gave {reply.status} {reply.reason}", path
            )
        resources = parse_multistatus(reply.body, path)
        if not resources:
            raise OSError(errno.EPROTO, "PROPFIND reply names no resource", path)
        return resources

    def _resource(self, path: str) -> DavResource | None:
        """What the server says about ``path`` (one PROPFIND), None if it does not exist."""
        resources = self._propfind(path, 0)
        if resources is None:
            return None
        own = next((r for r in resources if r.path == path), resources[0])
        if own.status in (404, 410):
            return None
        if own.status != 200:
            raise_errno(errno_for_status(own.status), path)
        return own

    def _kind(self, path: str) -> bool | None:
        if path == "/":
            return True
        resource = self._resource(path)
        return None if resource is None else resource.is_dir

    def _existing(self, path: str) -> DavResource:
        """The resource at ``path``; ENOENT or ENOTDIR (interviewed) when missing."""
        resource = self._resource(path)
        if resource is None:
            interview_missing(path, self._kind)
        assert resource is not None
        return resource

    def _missing_parent(self, path: str) -> None:
        """A 409 for a new name: its parent is missing or a file. Raises ENOENT/ENOTDIR."""
        parent = parent_of(path)
        kind = self._kind(parent)
        if kind is False:
            raise_errno(errno.ENOTDIR, path)
        if kind is None:
            interview_missing(parent, self._kind, path)
        raise_errno(errno.ENOENT, path)

    def _parent_must_exist(self, path: str) -> None:
        """Before making a name: nginx's create_full_put_path would make missing parents."""
        parent = parent_of(path)
        if parent != "/" and self._kind(parent) is not True:
            self._missing_parent(path)

    def _check(self, reply: HttpReply, path: str, *ok: int) -> None:
        if reply.status in ok:
            return
        if reply.status == 409:
            self._missing_parent(path)
        if reply.status in (404, 410):
            interview_missing(path, self._kind)
        raise OSError(
            errno_for_status(reply.status), f"{reply.status} {reply.reason}".strip(), path
        )

    def _stat_of(self, resource: DavResource) -> StatResult:
        return synthesize_stat(
            f"{self.host}:{self.port}",
            resource.path,
            is_dir=resource.is_dir,
            size=resource.size if not resource.is_dir else None,
            mtime_ns=resource.mtime_ns,
            file_mode=_FILE_MODE,
            dir_mode=_DIR_MODE,
        )

    # -- metadata ----------------------------------------------------------------------------

    def stat(self, path: str) -> StatResult:
        with self.counters.operation("stat"):
            return self._stat_of(self._existing(path))

    def lstat(self, path: str) -> StatResult:
        with self.counters.operation("lstat"):
            return self._stat_of(self._existing(path))  # DAV has no symlinks to show

    def fstat(self, handle: Handle) -> StatResult:
        with self.counters.operation("fstat"):
            entry = self._open_file(handle)
            if entry.staged is None:
                return self._stat_of(self._existing(entry.path))
            size = entry.staged.seek(0, os.SEEK_END)
            resource = DavResource(entry.path, 200, is_dir=False, size=size)
            return self._stat_of(resource)

    def access(self, path: str, mode: int) -> None:
        with self.counters.operation("access"):
            resource = self._existing(path)
            if mode & os.X_OK and not resource.is_dir:
                raise_errno(errno.EACCES, path)

    def statfs(self, path: str) -> StatFS:
        with self.counters.operation("statfs"):
            resource = self._existing(path)
            if resource.quota_available is None:
                raise OSError(errno.ENOTSUP, "the server reports no quota (RFC 4331)", path)
            free = resource.quota_available // 4096
            used = (resource.quota_used or 0) // 4096
            return StatFS(0x6461_7600, 4096, used + free, free, free, 0, 0)

    def chmod(self, path: str, mode: int) -> None:
        with self.counters.operation("chmod"):
            self._existing(path)
            raise OSError(errno.ENOTSUP, "WebDAV cannot change modes", path)

    def utimens(self, path: str, times_ns: tuple[int, int] | None = None) -> None:
        with self.counters.operation("utimens"):
            self._existing(path)
            raise OSError(errno.ENOTSUP, "getlastmodified is protected on WebDAV servers", path)

    # -- whole files ---------------------------------------------------------------------------

    def _get(self, path: str) -> bytes:
        reply = self._request("GET", url_path(path))
        if reply.status == 200:
            return reply.body
        resource = self._resource(path)
        if resource is not None and resource.is_dir:
            raise_errno(errno.EISDIR, path)
        self._check(reply, path)
        raise AssertionError("unreachable")

    def _put(self, path: str, data: bytes) -> None:
        reply = self._request("PUT", url_path(path), body=data)
        if reply.status in (405, 500) and self._kind(path) is True:
            raise_errno(errno.EISDIR, path)  # wsgidav 405, nginx 500 for a collection
        self._check(reply, path, 200, 201, 204)

    def read_file(self, path: str, chunk: int = 1 << 20) -> bytes:
        """One GET (plus the interview when it fails)."""
        with self.counters.operation("getfile"):
            return self._get(path)

    def write_file(self, path: str, data: bytes, mode: int = 0o666, chunk: int = 1 << 20) -> None:
        """One PROPFIND (a directory must not be replaced) and one PUT."""
        with self.counters.operation("putfile"):
            resource = self._resource(path)
            if resource is not None and resource.is_dir:
                raise_errno(errno.EISDIR, path)
            if resource is None:
                self._parent_must_exist(path)
            self._put(path, data)

    # -- open files ----------------------------------------------------------------------------

    def open(self, path: str, flags: int, mode: int = 0o666) -> Handle:
        with self.counters.operation("open"):
            writing = flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
            resource = self._resource(path)
            created = False
            if resource is None:
                if not flags & os.O_CREAT:
                    interview_missing(path, self._kind)
                self._parent_must_exist(path)
                self._put(path, b"")
                created = True
            elif flags & os.O_CREAT and flags & os.O_EXCL:
                raise_errno(errno.EEXIST, path)
            elif resource.is_dir:
                if writing or flags & os.O_CREAT:
                    raise_errno(errno.EISDIR, path)
            elif flags & os.O_DIRECTORY:
                raise_errno(errno.ENOTDIR, path)
            is_dir = resource is not None and resource.is_dir
            entry = _OpenFile(path, flags, is_dir)
            if resource is not None and not writing:
                entry.etag = strong_etag(resource.etag)
            if resource is not None and writing:
                entry.base = strong_etag(resource.etag)
            if writing or (flags & os.O_TRUNC and not is_dir):
                initial = b""
                if flags & os.O_TRUNC and not created and resource is not None and resource.size:
                    self._put_version(path, b"", strong_etag(resource.etag))  # truncated, visibly
                    entry.base = None
                elif not created and not flags & os.O_TRUNC:
                    initial = self._get(path)
                # The local copy lives as long as the handle: closed by close().
                entry.staged = tempfile.TemporaryFile(prefix="aviary-dav-")  # noqa: SIM115
                # Written past Python's buffer: reads and writes use the descriptor itself.
                os.pwrite(entry.staged.fileno(), initial, 0)
            handle = self._next_handle
            self._next_handle += 1
            self._files[handle] = entry
            return Handle(handle)

    def _open_file(self, handle: Handle) -> _OpenFile:
        return handle_entry(self._files, handle)

    def _send_back(self, entry: _OpenFile) -> None:
        if entry.staged is None or not entry.dirty:
            return
        entry.staged.seek(0)
        self._put_version(entry.path, entry.staged.read(), entry.base)
        entry.base = None  # the server's version now is the one just sent: unknown here
        entry.dirty = False

    def _put_version(self, path: str, data: bytes, base: str | None) -> None:
        """PUT a new version of the file at ``path``, changed through this driver from the
        version ``base`` (None: unknown). The other handles reading it are held to the
        new version from now on: a program reading a file while writing it through another
        descriptor reads its own change, as on a local disk, where the ESTALE meant for a
        file replaced under a handle would be wrong. A handle held to another version than
        ``base`` saw a replacement by someone else: it stays held to what it had."""
        self._put(path, data)
        for other in self._files.values():
            if other.path == path and other.etag is not None and base in (None, other.etag):
                other.etag = None  # its next read holds it to the version it gets

    def close(self, handle: Handle) -> None:
        with self.counters.operation("close"):
            entry = self._open_file(handle)
            del self._files[int(handle)]  # released even when the PUT fails
            try:
                self._send_back(entry)
            finally:
                if entry.staged is not None:
                    entry.staged.close()

    def pread(self, handle: Handle, size: int, offset: int) -> bytes:
        with self.counters.operation("pread"):
            entry = self._open_file(handle)
            if size < 0 or offset < 0:
                raise_errno(errno.EINVAL)
            if entry.flags & os.O_ACCMODE == os.O_WRONLY:
                raise_errno(errno.EBADF, entry.path)
            if entry.is_dir:
                raise_errno(errno.EISDIR, entry.path)
            size = min(size, _MAX_READ)
            if entry.staged is not None:
                return os.pread(entry.staged.fileno(), size, offset)
            if size == 0:
                return b""
            result = pinned_read(self._client, entry, offset, size, self.describe(), self._auth)
            if isinstance(result, bytes):
                return result
            self._check(result, entry.path)
            raise AssertionError("unreachable")

    def pwrite(self, handle: Handle, data: bytes, offset: int) -> int:
        with self.counters.operation("pwrite"):
            entry = self._open_file(handle)
            if offset < 0:
                raise_errno(errno.EINVAL)
            if entry.staged is None or entry.flags & os.O_ACCMODE == os.O_RDONLY:
                raise_errno(errno.EBADF, entry.path)
            assert entry.staged is not None
            if entry.flags & os.O_APPEND:
                offset = entry.staged.seek(0, os.SEEK_END)
            written = os.pwrite(entry.staged.fileno(), data, offset)
            entry.dirty = True
            return written

    def fsync(self, handle: Handle) -> None:
        with self.counters.operation("fsync"):
            self._send_back(self._open_file(handle))

    def ftruncate(self, handle: Handle, length: int) -> None:
        with self.counters.operation("ftruncate"):
            entry = self._open_file(handle)
            if length < 0 or entry.staged is None:
                raise_errno(errno.EINVAL, entry.path)
            assert entry.staged is not None
            entry.staged.truncate(length)
            entry.dirty = True

    def truncate(self, path: str, length: int) -> None:
        with self.counters.operation("truncate"):
            if length < 0:
                raise_errno(errno.EINVAL, path)
            resource = self._existing(path)
            if resource.is_dir:
                raise_errno(errno.EISDIR, path)
            data = self._get(path) if length else b""
            base = strong_etag(resource.etag)
            self._put_version(path, data[:length] + b"\0" * (length - len(data)), base)

    # -- the namespace -------------------------------------------------------------------------

    def _members(self, path: str) -> tuple[DavResource, list[DavResource]]:
        resources = self._propfind(path, 1)
        if resources is None:
            interview_missing(path, self._kind)
        assert resources is not None
        own = next((r for r in resources if r.path == path), None)
        if own is None or not own.is_dir:
            raise_errno(errno.ENOTDIR, path)
        assert own is not None
        members = [r for r in resources if r is not own and parent_of(r.path) == path]
        return own, members

    def readdir(self, path: str) -> list[DirEntry]:
        with self.counters.operation("readdir"):
            _, members = self._members(path)
            return [
                DirEntry(r.name, FileType.DIRECTORY if r.is_dir else FileType.REGULAR)
                for r in members
                if r.status == 200
            ]

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        with self.counters.operation("mkdir"):
            if path == "/":
                raise_errno(errno.EEXIST, path)
            reply = self._request("MKCOL", url_path(path, directory=True))
            if reply.status == 405:
                raise_errno(errno.EEXIST, path)  # MKCOL on an existing resource
            self._check(reply, path, 201)

    def rmdir(self, path: str) -> None:
        with self.counters.operation("rmdir"):
            if path == "/":
                raise_errno(errno.EBUSY, path)
            _, members = self._members(path)
            if members:
                raise_errno(errno.ENOTEMPTY, path)
            reply = self._request("DELETE", url_path(path, directory=True))
            self._check(reply, path, 200, 204)

    def unlink(self, path: str) -> None:
        with self.counters.operation("unlink"):
            if self._existing(path).is_dir:
                raise_errno(errno.EISDIR, path)
            reply = self._request("DELETE", url_path(path))
            self._check(reply, path, 200, 204)

    def rename(self, old: str, new: str) -> None:
        with self.counters.operation("rename"):
            source = self._existing(old)
            if old == new:
                return
            if new.startswith(old.rstrip("/") + "/") or old == "/":
                if not source.is_dir:  # a file as the new name's directory: Linux says ENOTDIR
                    raise_errno(errno.ENOTDIR, old, new)
                raise_errno(errno.EINVAL, old, new)
            target = self._resource(new)
            if target is not None:
                if source.is_dir and not target.is_dir:
                    raise_errno(errno.ENOTDIR, old, new)
                if target.is_dir and not source.is_dir:
                    raise_errno(errno.EISDIR, old, new)
                if target.is_dir and self._members(new)[1]:
                    raise_errno(errno.ENOTEMPTY, old, new)
            else:
                self._parent_must_exist(new)
            destination = (
                f"http://{self._client.host_header}{url_path(new, directory=source.is_dir)}"
            )
            headers = [("Destination", destination), ("Overwrite", "T")]
            reply = self._request("MOVE", url_path(old, directory=source.is_dir), headers)
            self._check(reply, new, 201, 204)

    def link(self, old: str, new: str) -> None:
        with self.counters.operation("link"):
            self._existing(old)
            if self._kind(new) is not None:
                raise_errno(errno.EEXIST, new)
            raise OSError(errno.EPERM, "WebDAV has no hard links", new)

    def symlink(self, target: str, linkpath: str) -> None:
        with self.counters.operation("symlink"):
            if self._kind(linkpath) is not None:
                raise_errno(errno.EEXIST, linkpath)
            raise OSError(errno.EPERM, "WebDAV has no symlinks", linkpath)

    def readlink(self, path: str) -> str:
        with self.counters.operation("readlink"):
            self._existing(path)
            raise OSError(errno.EINVAL, "not a symlink (WebDAV has none)", path)
