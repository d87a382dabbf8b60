"""The Chirp server's confined view of its root directory.

Theory of operation
-------------------
A request names a path as the client sees it ("/dir/file"). ``fix_path`` turns
the request token into that form exactly as cctools' server does: undo the
``%XX`` escapes, anchor at ``/`` and collapse ``.``, ``..`` and ``//``
lexically, so no path ever starts above the root.

Symbolic links can still point anywhere, so ``ServerFS`` never hands a path to
the kernel. It walks each path one component at a time from a directory
descriptor on the root, as if the server were chrooted there (the walk of
cctools' ``chirp_fs_local``):

- a component that is a symlink is replaced by the link's text, and an
  absolute link text starts again from the root descriptor;
- ``..`` at the root stays at the root;
- each directory is opened with ``O_NOFOLLOW|O_DIRECTORY`` relative to the
  previous one, so the walk never leaves the tree; after 100 steps the walk
  gives up with ELOOP;
- the walk ends with a descriptor on the containing directory and the final
  name, and every operation is then a ``*at`` call on that pair. Whether the
  final name is itself followed is the caller's choice (stat vs lstat).

Modes follow chirp_fs_local: a client may choose only the owner-execute,
group and other bits of a new file (owner read/write are always set), only
the group and other bits of a new directory (owner rwx always set), and the
server's umask (cctools hard-codes 077, here a setting) is applied on top.

Open files are numbered per connection by ``OpenFiles`` (in ``_descriptors``).

Everything here reports failure as ``OSError`` with the errno the kernel (or
cctools) gives; the request layer turns errno values into Chirp codes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat as stat_module
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chirp_server import _posix
from chirp_server._descriptors import MAX_OPEN_FILES, OpenFiles, read_all, write_all, xattr_names
from drivers.chirp.codec import PATH_MAX, decode_path

__all__ = [
    "MAX_OPEN_FILES",
    "OpenFiles",
    "ServerFS",
    "collapse_path",
    "dirname",
    "fix_path",
]

#: Symlink expansions and directory steps before a walk fails with ELOOP.
_MAX_STEPS = 100
#: Flags for opening a directory during a walk.
_DIR_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NOCTTY
#: Flags for opening any entry to read its metadata (xattrs, chmod). O_NONBLOCK is ours:
#: cctools would block forever on a FIFO here.
_META_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK
_HASHES = {"md5": hashlib.md5, "sha1": hashlib.sha1}
_CHUNK = 65536


def _fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


# -- request paths -------------------------------------------------------------------------


def collapse_path(path: str) -> str:
    """Remove ``//``, ``/./`` and ``/..`` the way cctools' ``path_collapse`` does."""
    out: list[str] = []
    i, n = 0, len(path)
    while i < n:
        if path.startswith("//", i):
            i += 1
        elif path.startswith("/.", i) and i + 2 == n:
            out.append("/")  # a final "/." keeps its slash and drops the dot
            break
        elif path.startswith("/./", i):
            i += 2
        elif path.startswith("/..", i) and (i + 3 == n or path[i + 3] == "/"):
            # Drop the last component written so far; at the start this is a no-op.
            k = len(out) - 1 if out else 0
            while k > 0 and out[k] != "/":
                k -= 1
            del out[k:]
            i += 3
        else:
            out.append(path[i])
            i += 1
    result = "".join(out) or "/"
    if result == "./":
        return "."
    if result == "../":
        return ".."
    if len(result) > 4 and result.endswith("/../"):
        return result[:-1]
    return result


def fix_path(token: str | bytes) -> str:
    """A request's path argument as the server uses it: decoded, anchored, collapsed.

    The decoded name stops at a NUL byte and at 1022 bytes, as in cctools' fixed buffers.
    """
    raw = os.fsencode(decode_path(token)).split(b"\0", 1)[0][: PATH_MAX - 2]
    return collapse_path("/" + os.fsdecode(raw))


def dirname(path: str) -> str:
    """cctools' ``path_dirname``: trailing slashes ignored, ``/`` for top-level names."""
    trimmed = path.rstrip("/") or path[:1]
    slash = trimmed.rfind("/")
    if slash < 0:
        return "."
    return trimmed[:slash].rstrip("/") or "/"


# -- the confined tree -------------------------------------------------------------------------


class ServerFS:
    """A directory tree seen as if chrooted at ``root``.

    All methods take fixed paths (``fix_path``) and raise ``OSError`` on failure.
    One instance is shared by all connections: it holds only the root descriptor.
    """

    def __init__(self, root: Path, umask: int = 0o077) -> None:
        self.umask = umask & 0o777
        self._process_umask = _posix.process_umask()
        made = False
        try:
            os.makedirs(root, self._masked(0o711))
            made = True
        except FileExistsError:
            pass
        self._root = os.open(root, _DIR_FLAGS)
        if made:
            self._fix_mode(self._root, self._masked(0o711))
        st = os.fstat(self._root)
        self._root_id = (st.st_dev, st.st_ino)

    def close(self) -> None:
        if self._root >= 0:
            os.close(self._root)
            self._root = -1

    # -- the walk

    @contextmanager
    def resolve(self, path: str, follow: bool) -> Iterator[tuple[int, str]]:
        """Yield ``(directory descriptor, final name)`` for ``path`` inside the root."""
        dirfd, name = self._walk(path, follow)
        try:
            yield dirfd, name
        finally:
            os.close(dirfd)

    def _walk(self, path: str, follow: bool) -> tuple[int, str]:
        if not path:
            raise _fail(errno.EINVAL)
        if len(os.fsencode(path)) >= PATH_MAX:
            raise _fail(errno.ENAMETOOLONG)
        fd = os.dup(self._root)
        try:
            working = path
            for _ in range(_MAX_STEPS):
                final = ""
                if "/" in working:
                    cut = working.index("/")
                    if cut == 0:
                        working = working.lstrip("/")
                        os.dup2(self._root, fd)
                        continue
                    component, working = working[:cut], working[cut:].lstrip("/")
                else:
                    final = working or "."
                    if not follow:
                        return fd, final
                    component, working = working, ""
                if component == "..":
                    if self._is_root(fd):
                        continue
                elif component == ".":
                    continue
                else:
                    target = self._link_text(fd, component)
                    if target is not None:
                        working = f"{target}/{working}"
                        if len(os.fsencode(working)) >= PATH_MAX:
                            raise _fail(errno.ENAMETOOLONG)
                        continue
                if final:
                    return fd, final
                if not working:
                    # "dir/" names dir itself once its trailing slash is stripped.
                    return fd, component
                nfd = os.open(component, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nfd
            raise _fail(errno.ELOOP)
        except BaseException:
            os.close(fd)
            raise

    def _is_root(self, fd: int) -> bool:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) == self._root_id

    @staticmethod
    def _link_text(fd: int, name: str) -> str | None:
        try:
            target = os.readlink(name, dir_fd=fd)
        except OSError:
            return None
        if len(os.fsencode(target)) >= PATH_MAX:
            raise _fail(errno.ENAMETOOLONG)
        return target

    # -- modes

    def _masked(self, mode: int) -> int:
        return mode & ~self.umask & 0o7777

    def file_mode(self, mode: int) -> int:
        """The mode a new file gets: client's owner-x/group/other bits, owner rw, umask."""
        return self._masked((mode & 0o177) | 0o600)

    def dir_mode(self, mode: int) -> int:
        """The mode a new directory gets: client's group/other bits, owner rwx, umask."""
        return self._masked((mode & 0o077) | 0o700)

    def _fix_mode(self, fd: int, wanted: int) -> None:
        # The kernel applied the process umask too; only our own umask should count.
        st = os.fstat(fd)
        if stat_module.S_IMODE(st.st_mode) & 0o777 != wanted:
            os.fchmod(fd, (stat_module.S_IMODE(st.st_mode) & 0o7000) | wanted)

    # -- whole-path operations

    def stat(self, path: str) -> os.stat_result:
        with self.resolve(path, True) as (d, name):
            return os.stat(name, dir_fd=d, follow_symlinks=False)

    def lstat(self, path: str) -> os.stat_result:
        with self.resolve(path, False) as (d, name):
            return os.stat(name, dir_fd=d, follow_symlinks=False)

    def isdir(self, path: str) -> bool:
        """cctools' ``cfs_isdir``: stat follows links; any failure is False."""
        try:
            return stat_module.S_ISDIR(self.stat(path).st_mode)
        except OSError:
            return False

    def require_not_dir(self, path: str) -> None:
        """cctools' ``cfs_isnotdir``: EISDIR for a directory, nothing otherwise."""
        if self.isdir(path):
            raise _fail(errno.EISDIR)

    def exists(self, path: str) -> bool:
        try:
            self.lstat(path)
        except OSError:
            return False
        return True

    def open(self, path: str, flags: int, mode: int) -> int:
        """Open with the client's flags; the final name is never followed (O_NOFOLLOW)."""
        wanted = self.file_mode(mode)
        with self.resolve(path, True) as (d, name):
            flags |= os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
            if not flags & os.O_CREAT or not wanted & self._process_umask:
                return os.open(name, flags, wanted, dir_fd=d)
            while True:  # we must know whether we created the file to fix its mode
                try:
                    fd = os.open(name, flags | os.O_EXCL, wanted, dir_fd=d)
                except FileExistsError:
                    if flags & os.O_EXCL:
                        raise
                else:
                    self._fix_mode(fd, wanted)
                    return fd
                try:
                    return os.open(name, flags & ~os.O_CREAT, wanted, dir_fd=d)
                except FileNotFoundError:
                    continue

    def statfs(self, path: str) -> tuple[int, ...]:
        """``type bsize blocks bfree bavail files ffree``; ENOTDIR unless a directory."""
        with self.resolve(path, True) as (d, name):
            fd = os.open(name, _DIR_FLAGS, dir_fd=d)
        try:
            return _posix.fstatfs(fd)
        finally:
            os.close(fd)

    def access(self, path: str, mode: int) -> None:
        with self.resolve(path, True) as (d, name):
            _posix.faccessat(d, name, mode)

    def unlink(self, path: str) -> None:
        with self.resolve(path, False) as (d, name):
            try:
                os.unlink(name, dir_fd=d)
            except PermissionError:
                # Some systems say EPERM for a directory; clients want EISDIR.
                st = os.stat(name, dir_fd=d, follow_symlinks=False)
                if stat_module.S_ISDIR(st.st_mode):
                    raise _fail(errno.EISDIR) from None
                raise

    def rmall(self, path: str) -> None:
        """Delete a file or a whole tree; a missing path is ENOENT (Debian's chirp_server)."""
        with self.resolve(path, False) as (d, name):
            _remove_tree(d, name)

    def rmdir(self, path: str) -> None:
        """Remove a directory that is empty apart from ``.__*`` files (ACLs), with them."""
        with self.resolve(path, False) as (d, name):
            st = os.stat(name, dir_fd=d, follow_symlinks=False)
            if stat_module.S_ISLNK(st.st_mode):
                raise _fail(errno.ENOTDIR)
            fd = os.open(name, _DIR_FLAGS, dir_fd=d)
            try:
                names = _posix.list_names(fd)
            finally:
                os.close(fd)
            if any(n not in (".", "..") and not n.startswith(".__") for n in names):
                raise _fail(errno.ENOTEMPTY)
            _remove_tree(d, name)

    def rename(self, old: str, new: str) -> None:
        with self.resolve(old, False) as (od, oname), self.resolve(new, False) as (nd, nname):
            os.rename(oname, nname, src_dir_fd=od, dst_dir_fd=nd)

    def link(self, old: str, new: str) -> None:
        with self.resolve(old, False) as (od, oname), self.resolve(new, False) as (nd, nname):
            os.link(oname, nname, src_dir_fd=od, dst_dir_fd=nd, follow_symlinks=False)

    def symlink(self, target: str, path: str) -> None:
        with self.resolve(path, False) as (d, name):
            os.symlink(target, name, dir_fd=d)

    def readlink(self, path: str, length: int) -> bytes:
        """At most ``length`` bytes of the link text; EINVAL for 0 or for a non-link."""
        with self.resolve(path, False) as (d, name):
            if length <= 0:
                raise _fail(errno.EINVAL)
            return os.fsencode(os.readlink(name, dir_fd=d))[:length]

    def mkdir(self, path: str, mode: int) -> None:
        wanted = self.dir_mode(mode)
        with self.resolve(path, False) as (d, name):
            os.mkdir(name, wanted, dir_fd=d)
            if wanted & self._process_umask:
                fd = os.open(name, _DIR_FLAGS, dir_fd=d)
                try:
                    self._fix_mode(fd, wanted)
                finally:
                    os.close(fd)

    def chmod(self, path: str, mode: int) -> None:
        with self.resolve(path, True) as (d, name):
            fd = os.open(name, _META_FLAGS, dir_fd=d)
        try:
            self.fchmod(fd, mode)
        finally:
            os.close(fd)

    @staticmethod
    def fchmod(fd: int, mode: int) -> None:
        """Keep owner-x/group/other bits of ``mode``; owner rw (files) or rwx (dirs) forced."""
        owner = 0o700 if stat_module.S_ISDIR(os.fstat(fd).st_mode) else 0o600
        os.fchmod(fd, (mode & 0o177) | owner)

    def truncate(self, path: str, length: int) -> None:
        with self.resolve(path, True) as (d, name):
            fd = os.open(name, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY, dir_fd=d)
        try:
            os.ftruncate(fd, length)
        finally:
            os.close(fd)

    def utime(self, path: str, atime: int, mtime: int) -> None:
        with self.resolve(path, True) as (d, name):
            try:
                ns = (atime * 1_000_000_000, mtime * 1_000_000_000)
                os.utime(name, ns=ns, dir_fd=d, follow_symlinks=False)
            except OverflowError:
                raise _fail(errno.EINVAL) from None

    def listdir(self, path: str) -> list[tuple[str, os.stat_result | None]]:
        """Entries in the kernel's readdir order, ``.`` and ``..`` included, with lstat."""
        with self.resolve(path, True) as (d, name):
            fd = os.open(name, _DIR_FLAGS, dir_fd=d)
        try:
            entries: list[tuple[str, os.stat_result | None]] = []
            for entry in _posix.list_names(fd):
                try:
                    entries.append((entry, os.stat(entry, dir_fd=fd, follow_symlinks=False)))
                except OSError:
                    entries.append((entry, None))
            return entries
        finally:
            os.close(fd)

    def hash(self, path: str, algorithm: str) -> bytes:
        """Digest of a file's contents: ``md5`` or ``sha1``; EINVAL for others."""
        factory = _HASHES.get(algorithm)
        if factory is None:
            raise _fail(errno.EINVAL)
        st = self.stat(path)
        if stat_module.S_ISDIR(st.st_mode):
            raise _fail(errno.EISDIR)
        fd = self.open(path, os.O_RDONLY, 0)
        try:
            digest = factory()
            offset = 0
            while offset < st.st_size:
                chunk = os.pread(fd, min(_CHUNK, st.st_size - offset), offset)
                if not chunk:
                    break
                digest.update(chunk)
                offset += len(chunk)
            return digest.digest()
        finally:
            os.close(fd)

    # -- extended attributes (by path: opened first, as cctools does)

    def _meta_open(self, path: str, follow: bool) -> int:
        with self.resolve(path, follow) as (d, name):
            try:
                return os.open(name, _META_FLAGS, dir_fd=d)
            except OSError as exc:
                if not follow and exc.errno == errno.ELOOP:
                    raise _fail(errno.ENOTSUP) from None  # symlinks carry no xattrs here
                raise

    def getxattr(self, path: str, attr: str, follow: bool) -> bytes:
        fd = self._meta_open(path, follow)
        try:
            return os.getxattr(fd, attr)
        finally:
            os.close(fd)

    def listxattr(self, path: str, follow: bool) -> bytes:
        fd = self._meta_open(path, follow)
        try:
            return xattr_names(os.listxattr(fd))
        finally:
            os.close(fd)

    def setxattr(self, path: str, attr: str, value: bytes, flags: int, follow: bool) -> None:
        fd = self._meta_open(path, follow)
        try:
            os.setxattr(fd, attr, value, flags)
        finally:
            os.close(fd)

    def removexattr(self, path: str, attr: str, follow: bool) -> None:
        fd = self._meta_open(path, follow)
        try:
            os.removexattr(fd, attr)
        finally:
            os.close(fd)

    # -- small whole files (ACLs)

    def read_file(self, path: str) -> bytes:
        fd = self.open(path, os.O_RDONLY, 0o600)
        try:
            return read_all(fd)
        finally:
            os.close(fd)

    def write_file(self, path: str, data: bytes) -> None:
        fd = self.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            write_all(fd, data, 0)
        finally:
            os.close(fd)

    def ensure_uuid(self, text: str) -> None:
        """Create ``/.__uuid`` (the server's identity, as chirp_fs_local writes it)."""
        if not self.exists("/.__uuid"):
            self.write_file("/.__uuid", text.encode())


def _remove_tree(dirfd: int, name: str) -> None:
    """Unlink ``name``, or empty and remove it if it is a directory (stops at the first error)."""
    try:
        os.unlink(name, dir_fd=dirfd)
        return
    except OSError as exc:
        if exc.errno not in (errno.EISDIR, errno.EPERM, errno.ENOTEMPTY):
            raise
    sub = os.open(name, _DIR_FLAGS, dir_fd=dirfd)
    try:
        for entry in _posix.list_names(sub):
            if entry not in (".", ".."):
                _remove_tree(sub, entry)
    finally:
        os.close(sub)
    os.rmdir(name, dir_fd=dirfd)
