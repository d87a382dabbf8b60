"""Handlers for in-kernel copies touching remote files: copy_file_range and sendfile.

A copy between two descriptors the agent does not serve runs natively. A remote
file is on a file system of its own (its endpoint), so copy_file_range between
it and a local file, or a file of another endpoint, answers EXDEV, as Linux does
between file systems since 5.19; cp then moves the bytes with read and write
(which is also what the block-size hint acts on). Within one endpoint, and for
sendfile in either direction, the agent moves the bytes itself, one bounded
chunk per call (a short count, which Linux also allows and every caller loops
over), and keeps offsets as Linux does: an offset pointer is read and advanced,
and without one the descriptor's own offset moves. A local descriptor's offset
lives in the kernel, so the agent moves it by turning the call into an
``lseek`` whose result it replaces with the byte count.

sendfile from a remote file to a local descriptor of any kind (a socket, a
pipe) runs natively from the remote file's placeholder: the agent puts the
chunk there first, at the same offset, and empties the placeholder afterwards
(a filled placeholder, ``RemoteFile.fill``, holds the whole file already, and
its offset is the kernel's, as a local descriptor's is).
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from dataclasses import dataclass

from reference_agent import _ptrace
from reference_agent._loop import Rewrite
from reference_agent.agent import Agent
from reference_agent.call import Call, Outcome
from reference_agent.files import RemoteFile, Wrote
from reference_agent.process_facts import flags_and_position

__all__ = ["sys_copy_file_range", "sys_sendfile"]

#: One call moves at most this much; callers loop (Linux's own copies are bounded too).
CHUNK = 1 << 20
_OFFSET = struct.Struct("<q")
_SYS_LSEEK = _ptrace.syscall_number("lseek")
_SYS_SENDFILE = _ptrace.syscall_number("sendfile")


@dataclass(slots=True)
class _Side:
    """One end of a copy: a remote file, or a local descriptor of the caller."""

    fd: int
    remote: RemoteFile | None
    pointer: int  # the caller's loff_t*, 0 for "use the descriptor's offset"
    flags: int  # open flags (local: from fdinfo)
    mode: int  # st_mode of the file behind it


def _side(agent: Agent, call: Call, fd: int, pointer: int) -> _Side:
    remote = agent.content_file(call, fd)
    if remote is not None:
        mode = stat.S_IFDIR if remote.is_dir else stat.S_IFREG
        return _Side(fd, remote, pointer, remote.flags, mode)
    try:
        flags, _ = flags_and_position(call.pid, fd)
        mode = os.stat(f"/proc/{call.pid}/fd/{fd}").st_mode
    except FileNotFoundError:
        raise OSError(errno.EBADF, "not an open descriptor") from None
    return _Side(fd, None, pointer, flags, mode)


def _start(call: Call, side: _Side) -> int:
    if side.pointer:
        offset = int(_OFFSET.unpack(call.read(side.pointer, _OFFSET.size))[0])
        if offset < 0:
            raise OSError(errno.EINVAL, "negative offset")
        return offset
    if side.remote is not None and not side.remote.filled:
        return side.remote.offset
    return flags_and_position(call.pid, side.fd)[1]  # a filled one's is the kernel's


def _read(call: Call, side: _Side, offset: int, count: int) -> bytes:
    if side.remote is not None:
        return side.remote.pread(count, offset)
    with open(f"/proc/{call.pid}/fd/{side.fd}", "rb", buffering=0) as local:
        return os.pread(local.fileno(), count, offset)


def _write(call: Call, side: _Side, data: bytes, offset: int) -> int:
    if side.remote is not None:
        return side.remote.pwrite(data, offset)
    with open(f"/proc/{call.pid}/fd/{side.fd}", "r+b", buffering=0) as local:
        return os.pwrite(local.fileno(), data, offset)


def _copy_to(agent: Agent, call: Call, target: _Side, data: bytes, start: int) -> int:
    """Write ``data`` at ``start`` of the target; other opens of a remote target see it."""
    written = _write(call, target, data, start) if data else 0
    if written and target.remote is not None:
        remote = target.remote
        change = Wrote(start, data[:written])
        agent.files.changed(remote.driver, remote.remote_path, by=remote, change=change)
    return written


def _finish(call: Call, sides: list[tuple[_Side, int]], count: int) -> Outcome:
    """Advance each side's offset by ``count``; return the count (through lseek if local)."""
    moved_local: tuple[int, int] | None = None
    for side, start in sides:
        if side.pointer:
            call.write(side.pointer, _OFFSET.pack(start + count))
        elif side.remote is not None and not side.remote.filled:
            side.remote.offset = start + count
        else:
            moved_local = (side.fd, start + count)
    if moved_local is None or count == 0:
        return count
    fd, position = moved_local
    registers = call.registers.replace(nr=_SYS_LSEEK, args=(fd, position, os.SEEK_SET, 0, 0, 0))
    return Rewrite(registers, lambda result: count if result >= 0 else result)


def _check(source: _Side, target: _Side) -> int | None:
    """The errno copy_file_range answers before moving anything, as Linux checks them."""
    if source.flags & os.O_PATH or target.flags & os.O_PATH:
        return errno.EBADF
    if source.flags & os.O_ACCMODE == os.O_WRONLY or target.flags & os.O_ACCMODE == os.O_RDONLY:
        return errno.EBADF
    if target.flags & os.O_APPEND:
        return errno.EBADF
    if stat.S_ISDIR(source.mode) or stat.S_ISDIR(target.mode):
        return errno.EISDIR
    if not stat.S_ISREG(source.mode) or not stat.S_ISREG(target.mode):
        return errno.EINVAL
    return None


def sys_copy_file_range(agent: Agent, call: Call) -> Outcome:
    """Copy_file_range implements Linux syscall copy_file_range(2) when a side is remote."""
    fd_in, fd_out = call.fd(0), call.fd(2)
    if agent.content_file(call, fd_in) is None and agent.content_file(call, fd_out) is None:
        return None
    if call.arg(5) != 0:
        return -errno.EINVAL
    source = _side(agent, call, fd_in, call.arg(1))
    target = _side(agent, call, fd_out, call.arg(3))
    refusal = _check(source, target)
    if refusal is not None:
        return -refusal
    if (
        source.remote is None
        or target.remote is None
        or (source.remote.driver is not target.remote.driver)
    ):
        return -errno.EXDEV  # two file systems, as Linux answers them
    start_in, start_out = _start(call, source), _start(call, target)
    count = min(call.arg(4), CHUNK)
    same_file = (
        source.remote is not None
        and target.remote is not None
        and source.remote.driver is target.remote.driver
        and source.remote.remote_path == target.remote.remote_path
    )
    if same_file and start_in < start_out + count and start_out < start_in + count:
        return -errno.EINVAL  # overlapping ranges of one file, as Linux refuses them
    data = _read(call, source, start_in, count) if count else b""
    written = _copy_to(agent, call, target, data, start_out)
    return _finish(call, [(source, start_in), (target, start_out)], written)


def sys_sendfile(agent: Agent, call: Call) -> Outcome:
    """Sendfile implements Linux syscall sendfile(2) when a side is remote."""
    fd_out, fd_in = call.fd(0), call.fd(1)
    remote_in = agent.content_file(call, fd_in)
    remote_out = agent.content_file(call, fd_out)
    if remote_in is None and remote_out is None:
        return None
    if remote_out is None and remote_in is not None and remote_in.filled:
        return None  # its placeholder holds the file: the kernel sends it, offsets and all
    source = _side(agent, call, fd_in, call.arg(2))
    target = _side(agent, call, fd_out, 0)
    if source.flags & os.O_PATH or target.flags & os.O_PATH:
        return -errno.EBADF
    if source.flags & os.O_ACCMODE == os.O_WRONLY or target.flags & os.O_ACCMODE == os.O_RDONLY:
        return -errno.EBADF
    if target.flags & os.O_APPEND:
        return -errno.EINVAL
    if not stat.S_ISREG(source.mode):
        return -errno.EINVAL
    start_in = _start(call, source)
    count = min(call.arg(3), CHUNK)
    if remote_in is not None and remote_out is None:
        return _sendfile_from_placeholder(call, source, remote_in, start_in, count)
    start_out = _start(call, target)
    data = _read(call, source, start_in, count) if count else b""
    written = _copy_to(agent, call, target, data, start_out)
    return _finish(call, [(source, start_in), (target, start_out)], written)


def _sendfile_from_placeholder(
    call: Call, source: _Side, remote: RemoteFile, start: int, count: int
) -> Outcome:
    """Remote to a local descriptor of any kind: the kernel sends from the filled placeholder."""
    data = remote.pread(count, start) if count else b""
    placeholder_path = f"/proc/{call.pid}/fd/{source.fd}"
    if not remote.materialized:
        with open(placeholder_path, "r+b", buffering=0) as placeholder:
            os.pwrite(placeholder.fileno(), data, start)
    offset_at = source.pointer or call.scratch_bytes(_OFFSET.pack(start))
    registers = call.registers.replace(
        nr=_SYS_SENDFILE, args=(call.fd(0), source.fd, offset_at, len(data), 0, 0)
    )

    def sent(result: int) -> int | None:
        if not remote.materialized:
            with open(placeholder_path, "r+b", buffering=0) as placeholder:
                placeholder.truncate(0)
        if result > 0 and not source.pointer:
            remote.offset = start + result
        return None

    return Rewrite(registers, sent)
