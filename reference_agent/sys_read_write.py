"""Handlers for the data on remote files: read and write, vectored and positioned, and lseek.

A descriptor of a remote file is a placeholder in the tracee (``files.py``);
these handlers move its bytes through the driver, at most ``MAX_IO`` per call,
and keep its offset in the agent.
"""

from __future__ import annotations

import errno
import os
import struct

from drivers.chirp.codec import MAX_BUFFER_SIZE
from reference_agent.agent import Agent
from reference_agent.call import Call, Outcome
from reference_agent.files import RemoteFile, Wrote
from reference_agent.process_facts import flags_and_position
from reference_agent.read_cache import MIRROR_MAX
from reference_agent.read_memory import Scratch

_IOVEC = struct.Struct("<QQ")
#: pwritev2's flag to append, whatever the offset says.
RWF_APPEND = 0x10
#: Agent-side bound on one emulated read, like a kernel's MAX_RW_COUNT.
MAX_IO = MAX_BUFFER_SIZE
#: Where reads land on their way into the program (the agent handles one call at a time).
_SCRATCH = Scratch()
#: The end of a directory for lseek: the largest offset (LLONG_MAX).
DIRECTORY_END = (1 << 63) - 1


# -- reads and writes ---------------------------------------------------------------------------------------


def read_refusal(
    remote: RemoteFile, call: Call, buffers: list[tuple[int, int]], position: int
) -> int | None:
    """The negative errno a read of ``remote`` gets before any I/O (None: it may read),
    in the kernel's order: the descriptor, a vector of no bytes (readv answers 0 even on
    a directory), a range past the largest offset (EINVAL: a directory read to its end
    sits there), then the kind of file."""
    if remote.flags & os.O_PATH or remote.flags & os.O_ACCMODE == os.O_WRONLY:
        return -errno.EBADF
    total = sum(length for _, length in buffers)
    if "readv" in call.name and total == 0:
        return 0
    if position + total > DIRECTORY_END:
        return -errno.EINVAL
    return -errno.EISDIR if remote.is_dir else None


def write_refusal(remote: RemoteFile) -> int | None:
    """The negative errno a write to ``remote`` gets before any I/O (None: it may write)."""
    if remote.flags & os.O_ACCMODE == os.O_RDONLY or remote.flags & os.O_PATH:
        return -errno.EBADF
    return None


def _read_into(call: Call, remote: RemoteFile, buffers: list[tuple[int, int]], offset: int) -> int:
    """Read into the program's buffers: received into reused memory (or the open's read
    buffer), then copied into the program with one process_vm_writev."""
    total = min(sum(length for _, length in buffers), MAX_IO)
    pieces = remote.read_views(total, offset, _SCRATCH)
    if len(pieces) == 1 and len(buffers) == 1:  # read and pread: the common case, kept short
        if pieces[0]:
            call.write(buffers[0][0], pieces[0])
        return len(pieces[0])
    count = sum(len(piece) for piece in pieces)
    ranges: list[tuple[int, int]] = []
    left = count
    for address, length in buffers:
        if left <= 0:
            break
        if length:  # a zero-length buffer takes nothing; the next one gets the bytes
            ranges.append((address, min(length, left)))
            left -= length
    call.write_scattered(list(pieces), ranges)
    return count


def _write_from(
    call: Call,
    remote: RemoteFile,
    buffers: list[tuple[int, int]],
    offset: int,
    *,
    kernel_follows: bool = False,
) -> Wrote:
    """Write the program's buffers through ``remote`` at ``offset``: what reached the file
    (``kernel_follows``: see ``RemoteFile.pwrite``)."""
    data = b"".join(call.read(address, length) for address, length in buffers if length)
    if not data:
        return Wrote(offset, b"")
    written = remote.pwrite(data[:MAX_IO], offset, kernel_follows=kernel_follows)
    return Wrote(offset, data[:written])


def _mirror_position(
    agent: Agent,
    call: Call,
    remote: RemoteFile,
    buffers: list[tuple[int, int]],
    position: int | None,
) -> int | None:
    """Where a write to a mirrored file (``RemoteFile.mirror``) lands: at ``position``, or
    at the descriptor's offset (None), which is the kernel's. None where the mirror must end
    first, the open handed back to the agent at that offset: O_APPEND set since the open
    (``fcntl``) puts every write, positioned ones too, at the server's end, and a mirror may
    not outgrow ``MIRROR_MAX``."""
    at = flags_and_position(call.pid, call.fd(0))[1] if position is None else position
    total = sum(length for _, length in buffers)
    if not remote.flags & os.O_APPEND and at + total <= MIRROR_MAX:
        return at
    handover = at if position is None else flags_and_position(call.pid, call.fd(0))[1]
    agent.files.unmirror(remote, handover)
    return None


def _write_mirrored(
    agent: Agent,
    call: Call,
    remote: RemoteFile,
    buffers: list[tuple[int, int]],
    at: int,
    *,
    moves_offset: bool,
) -> Outcome:
    """A write at ``at`` to a mirrored file: the server takes the bytes first; then the
    kernel makes the same write to the placeholder and, for a write at the descriptor's
    offset (``moves_offset``), moves that offset. A short write is the agent's alone (after
    one at the offset, the agent keeps the offset from then on)."""
    wrote = _write_from(call, remote, buffers, at, kernel_follows=True)
    agent.files.changed(remote.driver, remote.remote_path, by=remote, change=wrote)
    if len(wrote.data) == sum(length for _, length in buffers):
        return None  # the kernel's own write now makes the same change to the placeholder
    if moves_offset:
        agent.files.unmirror(remote, at + len(wrote.data))
    else:
        remote.follow(wrote)  # still a mirror: the placeholder takes what the server took
    return len(wrote.data)


def _iovecs(call: Call, address: int, count: int) -> list[tuple[int, int]]:
    if count < 0 or count > 1024:
        raise OSError(errno.EINVAL, "iovcnt")
    raw = call.read(address, count * _IOVEC.size) if count else b""
    return [_IOVEC.unpack_from(raw, i * _IOVEC.size) for i in range(count)]


def _kernel_reads(agent: Agent, call: Call, remote: RemoteFile) -> bool:
    """Whether the kernel answers this read (or seek) of ``remote``: its placeholder holds
    the file's bytes, filled now if this is the first read of a small read-only file
    (``--cache cto``)."""
    return remote.filled or (
        remote.reader is not None and agent.files.fill(call.pid, call.fd(0), remote)
    )


def _sequential(agent: Agent, call: Call, buffers: list[tuple[int, int]], writing: bool) -> Outcome:
    remote = agent.remote_file(call, call.fd(0))
    if remote is None or (not writing and _kernel_reads(agent, call, remote)):
        return None
    refusal = (
        write_refusal(remote) if writing else read_refusal(remote, call, buffers, remote.offset)
    )
    if refusal is not None:
        return refusal
    if writing and remote.filled:
        at = _mirror_position(agent, call, remote, buffers, None)
        if at is not None:
            return _write_mirrored(agent, call, remote, buffers, at, moves_offset=True)
    if writing:
        if remote.flags & os.O_APPEND:
            remote.offset = _end_for_append(remote)
        wrote = _write_from(call, remote, buffers, remote.offset)
        agent.files.changed(remote.driver, remote.remote_path, by=remote, change=wrote)
        count = len(wrote.data)
    else:
        count = _read_into(call, remote, buffers, remote.offset)
        agent.files.read_directly(remote)
    remote.offset += count
    return count


def _end_for_append(remote: RemoteFile) -> int:
    """Where a write to an O_APPEND open lands: the file's end, as the server has it now."""
    end = remote.driver.fstat(remote.handle).st_size
    if remote.reader is not None and remote.reader.size != end:
        remote.reader.forget()  # grown by another client: its bytes are not ours to guess
    return end


def _write_offset(remote: RemoteFile, offset: int) -> int:
    """Where a positioned write lands: at ``offset``, but on an O_APPEND open at the end
    (Linux appends whatever offset pwrite names)."""
    return _end_for_append(remote) if remote.flags & os.O_APPEND else offset


def _positioned(
    agent: Agent, call: Call, buffers: list[tuple[int, int]], offset: int, writing: bool
) -> Outcome:
    remote = agent.remote_file(call, call.fd(0))
    if remote is None or (not writing and _kernel_reads(agent, call, remote)):
        return None
    if offset < 0:
        return -errno.EINVAL  # the kernel checks the offset before it looks at the descriptor
    refusal = write_refusal(remote) if writing else read_refusal(remote, call, buffers, offset)
    if refusal is not None:
        return refusal
    if not writing:
        count = _read_into(call, remote, buffers, offset)
        agent.files.read_directly(remote)
        return count
    if remote.filled and _mirror_position(agent, call, remote, buffers, offset) is not None:
        return _write_mirrored(agent, call, remote, buffers, offset, moves_offset=False)
    wrote = _write_from(call, remote, buffers, _write_offset(remote, offset))
    agent.files.changed(remote.driver, remote.remote_path, by=remote, change=wrote)
    return len(wrote.data)


def sys_read(agent: Agent, call: Call) -> Outcome:
    """Read implements Linux syscall read(2)."""
    return _sequential(agent, call, [(call.arg(1), call.arg(2))], writing=False)


def sys_write(agent: Agent, call: Call) -> Outcome:
    """Write implements Linux syscall write(2)."""
    return _sequential(agent, call, [(call.arg(1), call.arg(2))], writing=True)


def sys_readv(agent: Agent, call: Call) -> Outcome:
    """Readv implements Linux syscall readv(2)."""
    if agent.remote_file(call, call.fd(0)) is None:
        return None
    return _sequential(agent, call, _iovecs(call, call.arg(1), call.fd(2)), writing=False)


def sys_writev(agent: Agent, call: Call) -> Outcome:
    """Writev implements Linux syscall writev(2)."""
    if agent.remote_file(call, call.fd(0)) is None:
        return None
    return _sequential(agent, call, _iovecs(call, call.arg(1), call.fd(2)), writing=True)


def sys_pread64(agent: Agent, call: Call) -> Outcome:
    """Pread64 implements Linux syscall pread64(2)."""
    return _positioned(agent, call, [(call.arg(1), call.arg(2))], call.sarg(3), writing=False)


def sys_pwrite64(agent: Agent, call: Call) -> Outcome:
    """Pwrite64 implements Linux syscall pwrite64(2)."""
    return _positioned(agent, call, [(call.arg(1), call.arg(2))], call.sarg(3), writing=True)


def _vectored_at(agent: Agent, call: Call, writing: bool) -> Outcome:
    remote = agent.remote_file(call, call.fd(0))
    if remote is None or (not writing and _kernel_reads(agent, call, remote)):
        return None
    buffers = _iovecs(call, call.arg(1), call.fd(2))
    offset = call.sarg(3)
    appending = writing and call.name.endswith("2") and call.arg(5) & RWF_APPEND
    if appending and write_refusal(remote) is None:
        if remote.filled:  # a mirror ends here: the agent puts the bytes at the server's end
            agent.files.unmirror(remote, flags_and_position(call.pid, call.fd(0))[1])
        # pwritev2 with RWF_APPEND appends whatever offset it names; at -1 (the descriptor's
        # offset) that offset moves past the bytes, as O_APPEND would.
        end = _end_for_append(remote)
        if offset == -1:
            remote.offset = end
        else:
            offset = end
    if call.name.endswith("2") and offset == -1:
        return _sequential(agent, call, buffers, writing)
    return _positioned(agent, call, buffers, offset, writing)


def sys_preadv(agent: Agent, call: Call) -> Outcome:
    """Preadv implements Linux syscalls preadv(2) and preadv2(2)."""
    return _vectored_at(agent, call, writing=False)


def sys_pwritev(agent: Agent, call: Call) -> Outcome:
    """Pwritev implements Linux syscalls pwritev(2) and pwritev2(2)."""
    return _vectored_at(agent, call, writing=True)


def sys_lseek(agent: Agent, call: Call) -> Outcome:
    """Lseek implements Linux syscall lseek(2)."""
    remote = agent.content_file(call, call.fd(0))  # a --cache whole copy: the kernel's
    if remote is None or remote.filled:
        return None
    if remote.flags & os.O_PATH:
        return -errno.EBADF  # an O_PATH descriptor has no offset
    offset, whence = call.sarg(1), call.fd(2)
    if whence == os.SEEK_SET:
        position = offset
    elif whence == os.SEEK_CUR:
        position = remote.offset + offset
    elif whence in (os.SEEK_END, os.SEEK_DATA, os.SEEK_HOLE):
        # A directory's offsets are positions in its listing; its end is the largest
        # offset there is (as ext4 answers), so SEEK_END past it is EINVAL.
        size = DIRECTORY_END if remote.is_dir else remote.driver.fstat(remote.handle).st_size
        if whence == os.SEEK_END:
            position = size + offset
        elif offset >= size:
            return -errno.ENXIO
        else:  # no holes are visible through the protocol: all data, one hole at the end
            position = offset if whence == os.SEEK_DATA else size
    else:
        return -errno.EINVAL
    if position < 0 or (remote.is_dir and position > DIRECTORY_END):
        return -errno.EINVAL
    if remote.is_dir and position == 0:
        remote.listing = None  # rewinddir: the next getdents64 lists the directory afresh
    remote.offset = position
    return position
