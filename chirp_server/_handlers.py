"""What each Chirp request does: one small function per verb, as cctools does it.

Theory of operation
-------------------
``_server_verbs`` parses a request line, runs the generic checks its table
declares and calls the verb's ``rpc_*`` function here with the connection's
``Session`` and the parsed ``Request``. A function returns ``(result,
payload)``; the payload is sent only when the result is not negative. A
function that answers the client itself (listings, whole-file transfers)
returns ``None``, or ``CLOSE`` when the request consumes the connection
(getstream, putstream). A failure is an ``OSError``; its errno becomes the
Chirp code. Checks that cctools interleaves with other work (open, putfile,
mkdir, delete, ...) are done here, in cctools' order, so that every error
code matches.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as stat_module
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Final, Protocol

from chirp_server import _acl as acl
from chirp_server._acl import ChirpAcl
from chirp_server._descriptors import (
    OpenFiles,
    pread_full,
    pread_full_into,
    write_all,
    xattr_names,
)
from chirp_server._fs import ServerFS
from drivers.chirp.codec import (
    MAX_BUFFER_SIZE,
    encode_stat,
    encode_statfs_fields,
    flags_from_letters,
)

__all__ = ["CLOSE", "Close", "Link", "Reply", "Request", "Session"]


class Close(Enum):
    """The sentinel for "this request consumed the connection"."""

    CLOSE = "CLOSE"


CLOSE: Final = Close.CLOSE
#: A handler's answer: result and payload, None (already answered) or CLOSE.
Reply = tuple[int, bytes | memoryview] | Close | None
_CHUNK = 65536


class Link(Protocol):
    """The connection as handlers see it (the I/O shell in ``_server`` provides it)."""

    def read(self, size: int, deadline: float) -> bytes: ...
    def soak(self, size: int, deadline: float) -> int: ...
    def write(self, data: bytes, deadline: float) -> bool: ...


@dataclass(slots=True)
class Session:
    """One authenticated connection: who is asking, what is open, where to answer."""

    fs: ServerFS
    acl: ChirpAcl
    link: Link
    subject: str
    files: OpenFiles = field(default_factory=OpenFiles)
    stall_deadline: float = 0.0
    #: A pread's bytes, read in and sent out before the next request (fresh memory faults).
    _scratch: bytearray = field(default_factory=bytearray, repr=False)

    def scratch(self, size: int) -> memoryview:
        if len(self._scratch) < size:
            self._scratch = bytearray(size)
        return memoryview(self._scratch)[:size]

    def transfer_deadline(self, length: int) -> float:
        """Whole-file transfers get at least 1 KB/s plus 30 s (cctools' floor)."""
        return max(self.stall_deadline, time.monotonic() + length / 1024 + 30)


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request line: its verb and its arguments by name."""

    verb: str
    ints: dict[str, int]
    strs: dict[str, str]

    def i(self, name: str) -> int:
        return self.ints[name]

    def s(self, name: str) -> str:
        return self.strs[name]


def _fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


# -- helpers shared by handlers -----------------------------------------------------------------


def _either(*checks: Callable[[], None]) -> None:
    """Pass if any check passes; otherwise fail with the last check's error."""
    for check in checks[:-1]:
        try:
            check()
            return
        except OSError:
            pass
    checks[-1]()


def _passes(check: Callable[[], None]) -> bool:
    try:
        check()
    except OSError:
        return False
    return True


def _c_int(value: int) -> int:
    """A 64-bit request integer as C passes it to an ``int`` parameter."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _payload(s: Session, length: int, soak_overflow: bool) -> bytes:
    """Read a request's data (cctools' getvarstring): excess is soaked or refused."""
    if length < 0:
        raise _fail(errno.EINVAL)
    if length > MAX_BUFFER_SIZE and not soak_overflow:
        s.link.soak(length, s.stall_deadline)
        raise _fail(errno.ENOMEM)
    want = min(length, MAX_BUFFER_SIZE)
    data = s.link.read(want, s.stall_deadline)
    if len(data) != want:
        raise _fail(errno.EINVAL)
    if length > want:
        s.link.soak(length - want, s.stall_deadline)
    return data


def _data(data: bytes | memoryview) -> Reply:
    return len(data), data


def _stat_reply(st: os.stat_result) -> Reply:
    return 0, (encode_stat(st) + "\n").encode()


def _statfs_reply(fields: tuple[int, ...]) -> Reply:
    return 0, (encode_statfs_fields(*fields) + "\n").encode()


# -- open files ---------------------------------------------------------------------------------


def rpc_pread(s: Session, r: Request) -> Reply:
    fd, length, offset = s.files.get(r.i("fd")), r.i("length"), r.i("offset")
    if length < 0 or offset < 0:
        raise _fail(errno.EINVAL)
    view = s.scratch(min(length, MAX_BUFFER_SIZE))
    return _data(view[: pread_full_into(fd, view, offset)])


def rpc_sread(s: Session, r: Request) -> Reply:
    length, stride, skip, offset = (
        r.i("length"),
        r.i("stride_length"),
        r.i("stride_skip"),
        r.i("offset"),
    )
    if offset < 0:
        raise _fail(errno.EINVAL)
    length = min(length, MAX_BUFFER_SIZE)
    parts: list[bytes] = []
    while length >= stride:
        try:
            chunk = pread_full(s.files.get(r.i("fd")), stride, offset)
        except OSError:
            if parts:
                break
            raise
        if not chunk:
            break
        parts.append(chunk)
        length -= len(chunk)
        offset += skip
        if len(chunk) != stride:
            break
    return _data(b"".join(parts))


def rpc_pwrite(s: Session, r: Request) -> Reply:
    data = _payload(s, r.i("length"), soak_overflow=True)
    fd = s.files.get(r.i("fd"))
    os.fstat(fd)
    if r.i("offset") < 0:
        raise _fail(errno.EINVAL)
    return write_all(fd, data, r.i("offset")), b""


def rpc_swrite(s: Session, r: Request) -> Reply:
    data = _payload(s, r.i("length"), soak_overflow=True)
    stride, skip, offset = r.i("stride_length"), r.i("stride_skip"), r.i("offset")
    size = os.fstat(s.files.get(r.i("fd"))).st_size
    if offset < 0 or size < offset or stride < 0 or skip < 0:
        raise _fail(errno.EINVAL)
    length, total = len(data), 0
    while length >= stride:
        try:
            done = write_all(s.files.get(r.i("fd")), data[total : total + stride], offset)
        except OSError:
            if total:
                break
            raise
        if not done:
            break
        length -= done
        total += done
        offset += skip
        if done != stride:
            break
    return total, b""


def rpc_whoami(s: Session, r: Request) -> Reply:
    return _data(s.subject.encode("utf-8", "surrogateescape")[: r.i("length")])


def rpc_open(s: Session, r: Request) -> Reply:
    path, flags = r.s("path"), flags_from_letters(r.s("letters"))
    if not s.fs.isdir(path):
        try:
            s.acl.check(path, s.subject, acl.flags_from_open(flags))
        except OSError:
            s.acl.check(path, s.subject, acl.PUT)
            if not flags & os.O_CREAT:
                raise _fail(errno.EACCES) from None
            if s.fs.exists(path):
                raise _fail(errno.EEXIST) from None
    elif flags == os.O_RDONLY:
        s.acl.check_dir(path, s.subject, acl.LIST)
    else:
        raise _fail(errno.EISDIR)
    number = s.files.reserve()
    fd = s.fs.open(path, flags, r.i("mode"))
    s.files.add(number, fd, path)
    return number, (encode_stat(os.fstat(fd)) + "\n").encode()


def rpc_close(s: Session, r: Request) -> Reply:
    s.files.close(r.i("fd"))
    return 0, b""


def rpc_fchmod(s: Session, r: Request) -> Reply:
    s.fs.fchmod(s.files.get(r.i("fd")), r.i("mode"))
    return 0, b""


def rpc_fchown(s: Session, r: Request) -> Reply:
    return 0, b""  # ownership is the ACL's business; cctools does not even look at the fd


def rpc_fsync(s: Session, r: Request) -> Reply:
    os.fsync(s.files.get(r.i("fd")))
    return 0, b""


def rpc_ftruncate(s: Session, r: Request) -> Reply:
    os.ftruncate(s.files.get(r.i("fd")), r.i("length"))
    return 0, b""


def rpc_fgetxattr(s: Session, r: Request) -> Reply:
    return _data(os.getxattr(s.files.get(r.i("fd")), r.s("name")))


def rpc_flistxattr(s: Session, r: Request) -> Reply:
    return _data(xattr_names(os.listxattr(s.files.get(r.i("fd")))))


def rpc_fsetxattr(s: Session, r: Request) -> Reply:
    value = _payload(s, r.i("length"), soak_overflow=False)
    os.setxattr(s.files.get(r.i("fd")), r.s("name"), value, _c_int(r.i("flags")))
    return 0, b""


def rpc_fremovexattr(s: Session, r: Request) -> Reply:
    os.removexattr(s.files.get(r.i("fd")), r.s("name"))
    return 0, b""


def rpc_fstat(s: Session, r: Request) -> Reply:
    return _stat_reply(os.fstat(s.files.get(r.i("fd"))))


def rpc_fstatfs(s: Session, r: Request) -> Reply:
    # cctools asks statfs of the path the file was opened by: ENOTDIR for a plain file.
    return _statfs_reply(s.fs.statfs(s.files.path(r.i("fd"))))


# -- whole files and streams ----------------------------------------------------------------------


def rpc_getfile(s: Session, r: Request) -> Reply:
    path = r.s("path")
    s.fs.require_not_dir(path)
    s.acl.check(path, s.subject, acl.READ)
    s.files.reserve()
    fd = s.fs.open(path, os.O_RDONLY, 0)
    try:
        st = os.fstat(fd)
        if stat_module.S_ISDIR(st.st_mode):
            raise _fail(errno.EISDIR)
        deadline = s.transfer_deadline(st.st_size)
        if not s.link.write(f"{st.st_size}\n".encode(), deadline):
            return CLOSE
        offset = 0
        while offset < st.st_size:  # a file that shrinks just ends the data early
            chunk = os.pread(fd, min(_CHUNK, st.st_size - offset), offset)
            if not chunk:
                break
            if not s.link.write(chunk, deadline):
                return CLOSE
            offset += len(chunk)
    finally:
        os.close(fd)
    return None


def rpc_putfile(s: Session, r: Request) -> Reply:
    path, length = r.s("path"), r.i("length")
    s.fs.require_not_dir(path)
    flags = os.O_CREAT | os.O_WRONLY
    if not _passes(lambda: s.acl.check(path, s.subject, acl.WRITE)):
        s.acl.check(path, s.subject, acl.PUT)
        flags |= os.O_EXCL
    s.files.reserve()
    fd = s.fs.open(path, flags, r.i("mode"))
    try:
        os.ftruncate(fd, 0)
        deadline = s.transfer_deadline(length)
        if not s.link.write(b"0\n", deadline):
            return CLOSE
        total = 0
        while total < length:
            chunk = s.link.read(min(_CHUNK, length - total), deadline)
            try:
                if not chunk:  # the client left or stalled; cctools reports EAGAIN
                    raise _fail(errno.EAGAIN)
                write_all(fd, chunk, total, partial=False)
            except OSError:
                os.close(fd)
                fd = -1
                with contextlib.suppress(OSError):
                    s.fs.unlink(path)  # no partial files
                s.link.soak(length - total - len(chunk), deadline)
                raise
            total += len(chunk)
    finally:
        if fd >= 0:
            os.close(fd)
    return total, b""


def rpc_getstream(s: Session, r: Request) -> Reply:
    path = r.s("path")
    s.fs.require_not_dir(path)
    s.acl.check(path, s.subject, acl.READ)
    s.files.reserve()
    fd = s.fs.open(path, os.O_RDONLY, 0o700)
    try:
        if s.link.write(b"0\n", s.stall_deadline):
            offset = 0
            while chunk := os.pread(fd, _CHUNK, offset):
                if not s.link.write(chunk, s.stall_deadline):
                    break
                offset += len(chunk)
    finally:
        os.close(fd)
    return CLOSE  # the end of the data is the end of the connection


def rpc_putstream(s: Session, r: Request) -> Reply:
    path = r.s("path")
    s.fs.require_not_dir(path)
    if not _passes(lambda: s.acl.check(path, s.subject, acl.WRITE)):
        s.acl.check(path, s.subject, acl.PUT)
        if s.fs.exists(path):
            raise _fail(errno.EEXIST)
    s.files.reserve()
    fd = s.fs.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o700)
    try:
        if not s.link.write(b"0\n", s.stall_deadline):
            return CLOSE
        total = 0
        while chunk := s.link.read(_CHUNK, s.stall_deadline):
            total += write_all(fd, chunk, total, partial=False)
    finally:
        os.close(fd)
    # The client ends the data by closing its side; cctools then reports the
    # failed read it saw (EAGAIN, -11) to whoever still listens.
    raise _fail(errno.EAGAIN)


# -- namespace ------------------------------------------------------------------------------------


def rpc_readlink(s: Session, r: Request) -> Reply:
    return _data(s.fs.readlink(r.s("path"), min(r.i("length"), MAX_BUFFER_SIZE)))


def _listing(s: Session, r: Request, long: bool) -> Reply:
    lines = [b"0\n"]
    for name, st in s.fs.listdir(r.s("path")):
        if name.startswith(".__"):
            continue
        lines.append(os.fsencode(name) + b"\n")
        if long:
            lines.append((encode_stat(st) + "\n").encode())
    lines.append(b"\n")
    return CLOSE if not s.link.write(b"".join(lines), s.stall_deadline) else None


def rpc_getlongdir(s: Session, r: Request) -> Reply:
    return _listing(s, r, long=True)


def rpc_getdir(s: Session, r: Request) -> Reply:
    return _listing(s, r, long=False)


def rpc_getacl(s: Session, r: Request) -> Reply:
    # Anyone may read an ACL (cctools dropped the LIST check to ease debugging).
    entries = s.acl.effective(r.s("path"))
    return 0, (acl.format_acl(entries) + "\n").encode("utf-8", "surrogateescape")


def _delete_check(s: Session, path: str) -> None:
    _either(
        lambda: s.acl.check_link(path, s.subject, acl.DELETE),
        lambda: s.acl.check_dir(path, s.subject, acl.DELETE),
    )


def rpc_unlink(s: Session, r: Request) -> Reply:
    _delete_check(s, r.s("path"))
    s.fs.unlink(r.s("path"))
    return 0, b""


def rpc_rmdir(s: Session, r: Request) -> Reply:
    _delete_check(s, r.s("path"))
    s.fs.rmdir(r.s("path"))
    return 0, b""


def rpc_rmall(s: Session, r: Request) -> Reply:
    _delete_check(s, r.s("path"))
    s.fs.rmall(r.s("path"))
    return 0, b""


def rpc_access(s: Session, r: Request) -> Reply:
    path, mode = r.s("path"), r.i("mode")
    need = acl.flags_from_access(_c_int(mode))
    if need & acl.EXECUTE and s.fs.isdir(path):
        need = (need & ~acl.EXECUTE) | acl.LIST  # "x" on a directory means "may list"
    s.acl.check(path, s.subject, need)
    s.fs.access(path, mode)
    return 0, b""


def rpc_chmod(s: Session, r: Request) -> Reply:
    path = r.s("path")
    _either(
        lambda: s.acl.check_dir(path, s.subject, acl.WRITE),
        lambda: s.acl.check(path, s.subject, acl.WRITE),
    )
    s.fs.chmod(path, r.i("mode"))
    return 0, b""


def rpc_chown(s: Session, r: Request) -> Reply:
    return 0, b""  # checked for "w", otherwise ignored, as in cctools


def rpc_truncate(s: Session, r: Request) -> Reply:
    s.fs.truncate(r.s("path"), r.i("length"))
    return 0, b""


def rpc_rename(s: Session, r: Request) -> Reply:
    s.acl.check_link(r.s("old"), s.subject, acl.READ | acl.DELETE)
    s.acl.check(r.s("new"), s.subject, acl.WRITE)
    s.fs.rename(r.s("old"), r.s("new"))
    return 0, b""


def rpc_link(s: Session, r: Request) -> Reply:
    s.acl.check_link(r.s("old"), s.subject, acl.READ | acl.WRITE)
    s.acl.check(r.s("new"), s.subject, acl.WRITE)
    s.fs.link(r.s("old"), r.s("new"))
    return 0, b""


def rpc_symlink(s: Session, r: Request) -> Reply:
    # The target is stored as sent, still %-encoded: cctools does not decode it.
    s.fs.symlink(r.s("target"), r.s("path"))
    return 0, b""


def rpc_getxattr(s: Session, r: Request) -> Reply:
    return _data(s.fs.getxattr(r.s("path"), r.s("name"), follow=r.verb == "getxattr"))


def rpc_listxattr(s: Session, r: Request) -> Reply:
    return _data(s.fs.listxattr(r.s("path"), follow=r.verb == "listxattr"))


def rpc_setxattr(s: Session, r: Request) -> Reply:
    value = _payload(s, r.i("length"), soak_overflow=False)
    s.acl.check(r.s("path"), s.subject, acl.WRITE)
    s.fs.setxattr(
        r.s("path"), r.s("name"), value, _c_int(r.i("flags")), follow=r.verb == "setxattr"
    )
    return 0, b""


def rpc_removexattr(s: Session, r: Request) -> Reply:
    s.fs.removexattr(r.s("path"), r.s("name"), follow=r.verb == "removexattr")
    return 0, b""


def rpc_setacl(s: Session, r: Request) -> Reply:
    s.acl.set(r.s("path"), r.s("subject"), acl.text_to_flags(r.s("rights")))
    return 0, b""


def rpc_resetacl(s: Session, r: Request) -> Reply:
    s.acl.set(r.s("path"), s.subject, acl.text_to_flags(r.s("rights")) | acl.ADMIN, reset=True)
    return 0, b""


def rpc_mkdir(s: Session, r: Request) -> Reply:
    path = r.s("path")
    if _passes(lambda: s.acl.check(path, s.subject, acl.RESERVE)):
        s.fs.mkdir(path, r.i("mode"))
        initialized = s.acl.init_reserve(path, s.subject)
    elif _passes(lambda: s.acl.check(path, s.subject, acl.WRITE)):
        s.fs.mkdir(path, r.i("mode"))
        initialized = s.acl.init_copy(path)
    else:
        raise _fail(errno.EEXIST if s.fs.isdir(path) else errno.EACCES)
    if not initialized:
        with contextlib.suppress(OSError):
            s.fs.rmdir(path)
        raise _fail(errno.EACCES)
    return 0, b""


def rpc_utime(s: Session, r: Request) -> Reply:
    s.fs.utime(r.s("path"), r.i("atime"), r.i("mtime"))
    return 0, b""


def rpc_statfs(s: Session, r: Request) -> Reply:
    return _statfs_reply(s.fs.statfs(r.s("path")))


def rpc_stat(s: Session, r: Request) -> Reply:
    return _stat_reply(s.fs.stat(r.s("path")))


def rpc_lstat(s: Session, r: Request) -> Reply:
    return _stat_reply(s.fs.lstat(r.s("path")))


def rpc_md5(s: Session, r: Request) -> Reply:
    s.files.reserve()
    return _data(s.fs.hash(r.s("path"), "md5"))


def rpc_hash(s: Session, r: Request) -> Reply:
    s.files.reserve()
    return _data(s.fs.hash(r.s("path"), r.s("algorithm")))
