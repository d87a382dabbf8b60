"""A sandboxed call's arguments, each path read once and pinned.

Reading a path argument writes the string into the agent's scratch area and
points the argument at that copy (``pin``), so that what the kernel (or the
handler) uses is exactly what the guard checks, whatever another thread of
the program writes into the original buffer meanwhile. The syscall table's
entry of a call says which arguments are paths (``syscall_args.py``); an
open call's flags and an AF_UNIX socket's address are read and pinned alike,
and a checked local open is rewritten to an ``openat2`` of the checked path.
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from reference_agent import _ptrace
from reference_agent._abi import AT_FDCWD
from reference_agent._loop import Rewrite
from reference_agent.syscall_args import OpenArgs, SocketArg, Use

if TYPE_CHECKING:
    from reference_agent.call import Call
    from reference_agent.table import Entry

__all__ = ["Argument", "arguments", "open_pinned", "pin"]

RESOLVE_NO_MAGICLINKS: Final = 0x02
RESOLVE_NO_SYMLINKS: Final = 0x04
RESOLVE_IN_ROOT: Final = 0x10
OPEN_HOW: Final = struct.Struct("<QQQ")
_O_LARGEFILE: Final = 0o100000  # the kernel's value (Python's os.O_LARGEFILE is 0 on x86_64)
_O_ASYNC: Final = 0o20000
#: Flags openat2 accepts (it refuses unknown bits, where open ignores them).
_VALID_OPEN_FLAGS: Final = (
    os.O_ACCMODE | os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_TRUNC | os.O_APPEND
    | os.O_NONBLOCK | os.O_DSYNC | os.O_SYNC | _O_ASYNC | os.O_DIRECT | _O_LARGEFILE
    | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NOATIME | os.O_CLOEXEC | os.O_PATH | os.O_TMPFILE
)  # fmt: skip
#: The only flags openat2 takes with O_PATH.
_O_PATH_FLAGS: Final = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

AF_UNIX: Final = 1
SOCKADDR_UN_SIZE: Final = 110
MSGHDR: Final = struct.Struct("<QIxxxxQQQQi4x")
_SYS_OPENAT2: Final = _ptrace.syscall_number("openat2")


@dataclass(frozen=True, slots=True)
class Argument:
    """One path argument of one call, read once."""

    text: str
    dirfd: int
    use: Use
    follow: bool
    resolve: int = 0  # openat2's RESOLVE_* flags
    flags: int = 0  # the open flags, for the open family
    mode: int = 0
    itself: bool = False  # AT_EMPTY_PATH, a NULL path or an fd call: the descriptor's object
    index: int = -1  # the argument that holds the path, for pinning it

    @property
    def in_root(self) -> bool:
        return bool(self.resolve & RESOLVE_IN_ROOT)


def pin(call: Call, index: int) -> str:
    """Read path argument ``index`` once and point the call at the agent's copy of it."""
    raw = call.raw_string(index)
    address = call.pin_bytes(raw + b"\0")
    call.registers = call.registers.replace(
        args=[address if i == index else None for i in range(6)]
    )
    return os.fsdecode(raw)


def arguments(call: Call, entry: Entry) -> list[Argument]:
    """The path arguments ``entry`` names in ``call``, each read once and pinned."""
    if entry.opens is not None:
        return [_open_argument(call, entry.opens)]
    if entry.socket is not None:
        socket_path = _socket_argument(call, entry.socket)
        return [socket_path] if socket_path is not None else []
    if entry.fd is not None:
        return [Argument("", call.fd(entry.fd.fd), entry.fd.use, True, itself=True)]
    found = []
    for spec in entry.paths:
        dirfd = call.fd(spec.dirfd) if spec.dirfd is not None else AT_FDCWD
        if spec.optional and call.arg(spec.path) == 0:
            if spec.dirfd is not None:  # the descriptor itself: check its object
                found.append(Argument("", dirfd, spec.use, True, itself=True))
            continue
        flags = call.arg(spec.flags) if spec.flags is not None else 0
        text = pin(call, spec.path)
        if text == "" and flags & spec.empty_bit:
            found.append(Argument("", dirfd, spec.use, True, itself=True))
            continue
        follow = (spec.follow and not flags & spec.nofollow_bit) or bool(flags & spec.follow_bit)
        found.append(Argument(text, dirfd, spec.use, follow, index=spec.path))
    return found


def _socket_argument(call: Call, socket: SocketArg) -> Argument | None:
    """The path of an AF_UNIX socket address, pinned like a path (None: no path in it)."""
    address_at, length_at, use = socket.address, socket.length, socket.use
    if length_at is None:  # sendmsg: the address is msg_name of a struct msghdr
        header = call.read(call.arg(address_at), MSGHDR.size)
        name_address, name_length = struct.unpack_from("<QI", header)
    else:
        name_address, name_length = call.arg(address_at), call.arg(length_at) & 0xFFFFFFFF
    if name_address == 0 or not 2 < name_length <= SOCKADDR_UN_SIZE:
        return None
    address = call.read(name_address, name_length)
    if struct.unpack_from("<H", address)[0] != AF_UNIX or address[2] == 0:
        return None  # another family, or an abstract name: no file
    copy = call.pin_bytes(address)
    if length_at is None:
        header = struct.pack("<Q", copy) + header[8:]
        replaced = call.pin_bytes(header)
    else:
        replaced = copy
    call.registers = call.registers.replace(
        args=[replaced if i == address_at else None for i in range(6)]
    )
    text = os.fsdecode(address[2:].split(b"\0", 1)[0])
    return Argument(text, AT_FDCWD, use, follow=use != Use.WRITE)


def _open_argument(call: Call, opens: OpenArgs) -> Argument:
    path, dirfd, flags_at = opens.path, opens.dirfd, opens.flags
    resolve = 0
    if flags_at is None:  # openat2: flags in a struct open_how, pinned like the path
        size = call.arg(3)
        if not OPEN_HOW.size <= size <= 4096:
            raise OSError(errno.EINVAL if size < OPEN_HOW.size else errno.E2BIG, "open_how")
        how = call.read(call.arg(2), size)
        address = call.pin_bytes(how)
        call.registers = call.registers.replace(args=[None, None, address])
        flags, mode, resolve = OPEN_HOW.unpack_from(how)
    else:
        flags = call.arg(flags_at) & 0xFFFFFFFF
        mode = call.arg(flags_at + 1)
    text = pin(call, path)
    access = flags & os.O_ACCMODE
    use = Use.LOOK
    if not flags & os.O_PATH:
        if access in (os.O_RDONLY, os.O_RDWR):
            use |= Use.READ
        if access in (os.O_WRONLY, os.O_RDWR) or flags & (os.O_CREAT | os.O_TRUNC):
            use |= Use.WRITE
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            use |= Use.WRITE
    exclusive = flags & os.O_CREAT and flags & os.O_EXCL
    follow = not (flags & os.O_NOFOLLOW or exclusive)
    fd = call.fd(dirfd) if dirfd is not None else AT_FDCWD
    return Argument(text, fd, use, follow, resolve, flags, mode)


def open_pinned(call: Call, arg: Argument, pinned: str) -> Rewrite:
    """The checked open as an ``openat2`` of ``pinned``, the symlink-free path that was
    checked, with ``RESOLVE_NO_SYMLINKS``: a symlink swapped in after the check fails it."""
    flags = arg.flags & _VALID_OPEN_FLAGS
    if flags & os.O_PATH:
        flags &= _O_PATH_FLAGS
    creates = flags & os.O_CREAT or flags & os.O_TMPFILE == os.O_TMPFILE
    how = OPEN_HOW.pack(
        flags,
        arg.mode & 0o7777 if creates else 0,
        arg.resolve | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    )
    registers = call.registers.replace(
        nr=_SYS_OPENAT2,
        args=(AT_FDCWD, call.scratch_string(pinned), call.pin_bytes(how), OPEN_HOW.size),
    )
    return Rewrite(registers)
