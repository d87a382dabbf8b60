"""Handlers for open files: open, close, fstat, getdents, mmap, fcntl (read/write and seek:
``sys_read_write.py``).

Remote files are held in the tracee by memfd placeholders (see ``files.py``),
so descriptor numbering, dup and fork are the kernel's; these handlers answer
the data and metadata calls on placeholders through the driver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import struct

from drivers import Driver, FileType, Handle, StatResult
from reference_agent import _ptrace, sys_lock
from reference_agent._abi import AT_EMPTY_PATH, AT_FDCWD, pack_dirent64, pack_stat
from reference_agent._common import last_component, must_be_directory, rewrite_args
from reference_agent._loop import Rewrite
from reference_agent.agent import Agent
from reference_agent.call import NATIVE, Call, Outcome, Resolved
from reference_agent.files import RemoteFile, Truncated, held_elsewhere
from reference_agent.namespace import LocalTarget, Refused, RemoteTarget, ServiceDirectory
from reference_agent.read_cache import ReadBuffer
from reference_agent.sys_read_write import DIRECTORY_END, write_refusal
from reference_agent.whole_cache import read_only_open

MFD_CLOEXEC = 0x0001
MEMFD_NAME_MAX = 249
MAP_SHARED = 0x01
PROT_WRITE = 0x2
#: Bytes from which a remote file's reads are handed to the compiled loop at its open,
#: so that its first read is answered there too; a smaller file's after its first read.
#: Handing them over costs the agent about 20 us, paid back by one read (a stop in Python
#: and the driver), but many opens never read (make's and the shell's checks).
DIRECT_AT_OPEN = 64 * 1024
_SYS_MEMFD_CREATE = _ptrace.syscall_number("memfd_create")
_SYS_OPENAT = _ptrace.syscall_number("openat")
_F_GETFL, _F_SETFL = 3, 4
_SETFL_BITS = (
    os.O_APPEND | os.O_NONBLOCK | os.O_DIRECT | os.O_NOATIME | getattr(os, "O_ASYNC", 0o20000)
)


# -- open ------------------------------------------------------------------------------------


def _open(agent: Agent, call: Call, dirfd: int, path_index: int, flags: int, mode: int) -> Outcome:
    path = call.string(path_index)
    resolved = agent.resolve(call, dirfd, path)
    target = resolved.target
    if target is NATIVE:
        return None
    if isinstance(target, Refused):
        return -target.errno
    if isinstance(target, LocalTarget):
        assert resolved.rewrite is not None
        return rewrite_args(call, {path_index: resolved.rewrite})
    if isinstance(target, ServiceDirectory):
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_CREAT:
            return -errno.EROFS
        return rewrite_args(call, {path_index: agent.service_placeholder(target.service)})
    assert isinstance(target, RemoteTarget)
    driver = agent.driver_for(call, target)
    refusal = _kernel_checks(driver, target, path, flags)
    if refusal is not None:
        return refusal
    if flags & os.O_NOFOLLOW:
        try:
            if driver.lstat(target.path).is_lnk():
                if not flags & os.O_PATH:
                    return -errno.ELOOP
                return _link_descriptor(agent, call, path_index, path, flags, resolved, target)
        except FileNotFoundError:
            pass  # a new file (made below with O_CREAT, else the open's own ENOENT)
        # Checked above; the protocol is not asked to apply it (some servers refuse it).
        flags &= ~os.O_NOFOLLOW
    if agent.files.mapped(driver, target.path):
        # A shared mapping whose descriptors are closed sends its stores when it is released,
        # once unmapped: before this open reads the file, not at some later close.
        agent.collect_files()
    whole = agent.options.cache == "whole"
    live = agent.files.live_copy(driver, target.path) if whole else None
    if live is not None:
        return _open_live_copy(agent, call, live, flags, mode)
    if whole and agent.whole_cache is not None and read_only_open(flags):
        st_remote = driver.stat(target.path)
        # Served from the copy --cache-dir keeps across runs, unless the file (reached by
        # another name) has a copy open in this run.
        if st_remote.is_reg() and agent.files.live_copy(driver, target.path, st_remote) is None:
            copy = agent.whole_cache.copy_of(driver, target, st_remote)
            return _open_cached_copy(agent, call, path_index, driver, resolved, st_remote, copy)
    open_flags = flags & ~os.O_PATH if flags & os.O_PATH else flags
    if whole and open_flags & os.O_ACCMODE == os.O_WRONLY and not open_flags & os.O_TRUNC:
        open_flags = (open_flags & ~os.O_ACCMODE) | os.O_RDWR  # the copy must be read first
    if whole:
        open_flags &= ~os.O_APPEND  # the local copy appends; write-back rewrites from offset 0
    handle = driver.open(target.path, open_flags, mode)
    try:
        st = driver.stat_at_open(handle)
    except OSError:
        driver.close(handle)
        raise
    live = agent.files.live_copy(driver, target.path, st) if whole and st.is_reg() else None
    if live is not None:  # the file has a copy open under another name (a link to it)
        return _open_live_copy(agent, call, live, flags, mode, handle)
    remote = RemoteFile(
        driver,
        handle,
        resolved.logical,
        target.path,
        flags,
        st.is_dir(),
        agent.remote_dev(target.endpoint),
    )
    if "st_ino" not in st.synthesized:
        remote.inode = st.st_ino  # the file's other opens, by any name, hear of its changes
    if agent.options.cache == "cto" and st.is_reg():
        remote.reader = ReadBuffer(st.st_size, spares=agent.read_spares)
    if flags & os.O_TRUNC:
        agent.files.changed(driver, target.path, change=Truncated(0), inode=remote.inode)
    pid = call.pid

    def placed(result: int) -> int | None:
        if result < 0:
            with contextlib.suppress(OSError):
                driver.close(handle)
            return None
        agent.files.add(pid, result, remote)
        agent.files.mirror(pid, result, remote)  # an empty file opened read-write, under cto
        if st.st_size >= DIRECT_AT_OPEN:
            agent.files.read_directly(remote)  # its first read too (smaller: after one)
        return None

    if whole and not remote.is_dir:
        # The program works on a local copy with its own flags (O_APPEND, O_TRUNC...);
        # close sends the copy back.
        try:
            local = _whole_copy(agent, remote, truncate=bool(flags & os.O_TRUNC))
        except OSError:
            driver.close(handle)
            raise
        remote.materialized = True
        remote.local_copy = local
        st_local = os.stat(local)
        remote.synced = None if flags & os.O_TRUNC else (st_local.st_mtime_ns, st_local.st_size)
        local_flags = flags & ~(os.O_EXCL | os.O_PATH)
        registers = call.registers.replace(
            nr=_SYS_OPENAT, args=(AT_FDCWD, call.scratch_string(local), local_flags, 0o600)
        )
        # Another process's open of the file before this one is made shares this copy.
        agent.files.copy_opening(remote)

        def copy_placed(result: int) -> None:
            agent.files.copy_opened(remote, pid, result)

        return Rewrite(registers, copy_placed)
    # The placeholder's name is the tail of the path the program gave (a label only).
    name_address = call.arg(path_index) + max(0, len(os.fsencode(path)) - MEMFD_NAME_MAX)
    memfd_flags = MFD_CLOEXEC if flags & os.O_CLOEXEC else 0
    registers = call.registers.replace(nr=_SYS_MEMFD_CREATE, args=(name_address, memfd_flags))
    return Rewrite(registers, placed)


def _open_cached_copy(
    agent: Agent,
    call: Call,
    path_index: int,
    driver: Driver,
    resolved: Resolved,
    st_remote: StatResult,
    copy: str,
) -> Outcome:
    """--cache-dir: the program opens the copy runs share, read-only; the agent keeps it as
    the remote file (no handle), so that fstat of the descriptor tells the remote file's
    device, inode, owner and mode, as stat of its name does: a program comparing the two
    (cp: "replaced while being copied") sees one file."""
    target = resolved.target
    assert isinstance(target, RemoteTarget)
    remote = RemoteFile(
        driver,
        Handle(-1),
        resolved.logical,
        target.path,
        os.O_RDONLY,
        False,
        agent.remote_dev(target.endpoint),
        materialized=True,
        local_copy=copy,
        cached=st_remote,
        inode=None if "st_ino" in st_remote.synthesized else st_remote.st_ino,
    )
    pid = call.pid

    def placed(result: int) -> int | None:
        if result >= 0 and agent.files.lookup(pid, result) is None:
            agent.files.add(pid, result, remote)  # other opens of the copy share this one
        return None

    return Rewrite(rewrite_args(call, {path_index: copy}).registers, placed)


def _open_live_copy(
    agent: Agent,
    call: Call,
    live: RemoteFile,
    flags: int,
    mode: int,
    handle: Handle | None = None,
) -> Outcome:
    """--cache whole: another open of a file whose copy is open in this run opens that copy
    too, so every descriptor of the file sees the same bytes, as on a local disk (each with
    its own offset and flags, the kernel's); two copies would lose the writes of the one
    written back first. The server still says whether this open may happen (its
    permissions); a copy opened read-only so far is written back from now on, through a
    handle opened for writing (``handle``: the one this open already has, else one is
    opened)."""
    checked = flags & ~(os.O_CREAT | os.O_TRUNC | os.O_EXCL | os.O_PATH | os.O_APPEND)
    if handle is None:
        handle = live.driver.open(live.remote_path, checked, mode)
    assert live.local_copy is not None
    if checked & os.O_ACCMODE != os.O_RDONLY and live.read_only:
        agent.files.opened_for_writing(live, handle, checked)
    else:
        live.driver.close(handle)
    local_flags = flags & ~(os.O_EXCL | os.O_PATH)
    registers = call.registers.replace(
        nr=_SYS_OPENAT, args=(AT_FDCWD, call.scratch_string(live.local_copy), local_flags, 0o600)
    )
    agent.files.copy_opening(live)  # held until the kernel has made this open
    pid = call.pid

    def opened(result: int) -> None:
        agent.files.copy_opened(live, pid, result)

    return Rewrite(registers, opened)


def _kernel_checks(driver: Driver, target: RemoteTarget, path: str, flags: int) -> int | None:
    """The kernel's answers a remote open must give before the server is asked to open.

    "dir/." or "x/" with O_CREAT is EISDIR, "file/" is ENOTDIR, and O_CREAT|O_EXCL
    fails on any existing name, a dangling symlink included (servers follow it).
    """
    ending = last_component(path)
    if flags & os.O_CREAT and ending:
        return -errno.EISDIR
    if ending == "/":
        return must_be_directory(driver, target, path)
    if flags & os.O_CREAT and flags & os.O_EXCL:
        try:
            driver.lstat(target.path)
            return -errno.EEXIST
        except FileNotFoundError:
            pass
    return None


def _link_descriptor(
    agent: Agent,
    call: Call,
    path_index: int,
    path: str,
    flags: int,
    resolved: Resolved,
    target: RemoteTarget,
) -> Outcome:
    """O_PATH|O_NOFOLLOW on a remote symlink: a descriptor that names the link itself."""
    driver = agent.driver_for(call, target)
    remote = RemoteFile(
        driver,
        Handle(-1),
        resolved.logical,
        target.path,
        os.O_PATH | os.O_NOFOLLOW,
        False,
        agent.remote_dev(target.endpoint),
        is_link=True,
    )
    pid = call.pid

    def placed(result: int) -> int | None:
        if result >= 0:
            agent.files.add(pid, result, remote)
        return None

    name_address = call.arg(path_index) + max(0, len(os.fsencode(path)) - MEMFD_NAME_MAX)
    memfd_flags = MFD_CLOEXEC if flags & os.O_CLOEXEC else 0
    registers = call.registers.replace(nr=_SYS_MEMFD_CREATE, args=(name_address, memfd_flags))
    return Rewrite(registers, placed)


def _whole_copy(agent: Agent, remote: RemoteFile, truncate: bool) -> str:
    """A fresh local copy of a remote file for ``--cache whole``."""
    assert agent.options.cache_dir is not None
    agent.copies += 1
    local = agent.options.cache_dir / f"whole-{agent.copies}"
    with open(local, "wb") as copy:
        if not truncate:
            remote.copy_whole(copy.fileno())
    return str(local)


def _materialize(pid: int, fd: int, remote: RemoteFile) -> None:
    """Copy the whole remote file into its placeholder (for mmap and the whole-file cache)."""
    if remote.materialized:
        return
    with open(f"/proc/{pid}/fd/{fd}", "r+b", buffering=0) as placeholder:
        remote.copy_whole(placeholder.fileno())
    remote.materialized = True


def sys_open(agent: Agent, call: Call) -> Outcome:
    """Open implements Linux syscall open(2)."""
    return _open(agent, call, AT_FDCWD, 0, call.fd(1), call.arg(2))


def sys_creat(agent: Agent, call: Call) -> Outcome:
    """Creat implements Linux syscall creat(2)."""
    return _open(agent, call, AT_FDCWD, 0, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, call.arg(1))


def sys_openat(agent: Agent, call: Call) -> Outcome:
    """Openat implements Linux syscall openat(2)."""
    return _open(agent, call, call.fd(0), 1, call.fd(2), call.arg(3))


def sys_openat2(agent: Agent, call: Call) -> Outcome:
    """Openat2 implements Linux syscall openat2(2); RESOLVE_* flags apply only locally."""
    flags, mode, _resolve = struct.unpack("<QQQ", call.read(call.arg(2), 24))
    return _open(agent, call, call.fd(0), 1, flags, mode)


# -- close and descriptor bookkeeping --------------------------------------------------------------


def sys_close(agent: Agent, call: Call) -> Outcome:
    """Close implements Linux syscall close(2)."""
    fd = call.fd(0)
    remote = agent.remote_file(call, fd)
    if remote is None:
        return None
    failure: int | None = None
    sys_lock.release_on_close(agent, call, remote)
    if remote.reader is not None:
        # The open may outlive this descriptor (a dup, a fork) or not: its block goes to the
        # next open either way; a read through another descriptor fetches again.
        remote.reader.set_aside()
    # A whole copy that other descriptors still hold is rewritten in place: for them it
    # stays the same file (RemoteFile.sync).
    in_place = remote.copy_changed() and held_elsewhere(agent.live_pids(), remote.key, call.pid, fd)
    try:
        remote.send_back(in_place)  # close reports whether the bytes reached the server
    except OSError as exc:
        failure = -(exc.errno or errno.EIO)  # the descriptor still closes, as POSIX says
    if failure is None and agent.defer_release():
        # Nothing to release until a later collection, which sees this descriptor gone:
        # the close is the kernel's, without a stop at its exit (a compiler's headers).
        return None

    def closed(result: int) -> int | None:
        agent.release_unheld()
        return failure

    return Rewrite(call.registers, closed)


def sys_dup_onto(agent: Agent, call: Call) -> Outcome:
    """Dup2/dup3/close_range: native, then release remote files left without a descriptor."""
    if not len(agent.files):
        return None
    if call.name != "close_range":  # dup2 onto a remote descriptor closes it
        replaced = agent.remote_file(call, call.fd(1))
        if replaced is not None and call.fd(0) != call.fd(1):
            sys_lock.release_on_close(agent, call, replaced)
    if agent.defer_release():  # as for a close: counted now, no stop at the exit
        return None

    def done(result: int) -> int | None:
        agent.release_unheld()
        return None

    return Rewrite(call.registers, done)


# -- metadata on descriptors ---------------------------------------------------------------------


def with_block_size_hint(agent: Agent, st: StatResult) -> StatResult:
    """``st`` with the agent's block-size hint as st_blksize, when one is set.

    Why: programs such as cp size their buffers by st_blksize; the seeds tuned
    remote throughput through this hint (their Figure 6).
    """
    size = agent.options.block_size
    return st if size is None else dataclasses.replace(st, st_blksize=size)


def fd_stat_bytes(agent: Agent, call: Call, remote: RemoteFile) -> bytes:
    st = with_block_size_hint(agent, remote.stat())
    return pack_stat(st, remote.dev)


def sys_fstat(agent: Agent, call: Call) -> Outcome:
    """Fstat implements Linux syscall fstat(2)."""
    remote = agent.remote_file(call, call.fd(0))
    if remote is None:
        return None
    call.write(call.arg(1), fd_stat_bytes(agent, call, remote))
    return 0


def sys_getdents64(agent: Agent, call: Call) -> Outcome:
    """Getdents64 implements Linux syscall getdents64(2)."""
    remote = agent.remote_file(call, call.fd(0))
    if remote is None:
        return None
    if not remote.is_dir:
        return -errno.ENOTDIR
    if remote.listing is None:
        remote.listing = remote.driver.readdir(remote.remote_path)
    names = [(b".", FileType.DIRECTORY, 0), (b"..", FileType.DIRECTORY, 0)]
    names += [(os.fsencode(e.name), e.type, e.ino) for e in remote.listing]
    capacity = call.arg(2)
    out = bytearray()
    index = remote.offset
    while index < len(names):
        name, kind, ino = names[index]
        # d_ino is the entry's stat inode where the listing gives it (ls -i, scandir's
        # inode()); the offset is the entry's place in the listing.
        record = pack_dirent64(ino or index + 1, index + 1, kind, name)
        if len(out) + len(record) > capacity:
            if not out:
                return -errno.EINVAL
            break
        out += record
        index += 1
    if out:
        call.write(call.arg(1), bytes(out))
    # At the end, the offset is the directory's end, as ext4 leaves it (a read then is EINVAL).
    remote.offset = index if index < len(names) else DIRECTORY_END
    return len(out)


def sys_fsync(agent: Agent, call: Call) -> Outcome:
    """Fsync implements Linux syscalls fsync(2) and fdatasync(2)."""
    remote = agent.remote_file(call, call.fd(0))
    if remote is None:
        return None
    remote.send_back(in_place=True)  # the descriptor stays open: the file stays the same one
    remote.driver.fsync(remote.handle)
    return 0


def sys_ftruncate(agent: Agent, call: Call) -> Outcome:
    """Ftruncate implements Linux syscall ftruncate(2)."""
    remote = agent.content_file(call, call.fd(0))
    if remote is None:
        return None
    refusal = write_refusal(remote)
    if refusal is not None:
        return -errno.EINVAL if refusal == -errno.EBADF else refusal
    remote.ftruncate(call.sarg(1))
    agent.files.changed(
        remote.driver, remote.remote_path, by=remote, change=Truncated(call.sarg(1))
    )
    return 0


def sys_fchmod(agent: Agent, call: Call) -> Outcome:
    """Fchmod implements Linux syscall fchmod(2)."""
    remote = agent.remote_file(call, call.fd(0))
    if remote is None:
        return None
    if remote.flags & os.O_PATH:
        return -errno.EBADF  # as Linux: fchmod needs a descriptor opened for I/O
    remote.chmod(call.arg(1))
    return 0


def sys_fcntl(agent: Agent, call: Call) -> Outcome:
    """Fcntl implements Linux syscall fcntl(2): flags and locks of remote files."""
    command = call.fd(1)
    if command not in sys_lock.LOCK_COMMANDS and command not in (_F_GETFL, _F_SETFL):
        return None  # F_DUPFD, F_GETFD, F_SETFD ...: the kernel's descriptor table
    # Flags and locks of a --cache whole copy are the kernel's: its description takes
    # O_APPEND, and every open of the file in this run opens the same copy, whose locks the
    # kernel keeps between them.
    remote = agent.content_file(call, call.fd(0))
    if remote is None:
        return None
    if command == _F_GETFL:
        return remote.flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_NOCTTY | os.O_CLOEXEC)
    if command == _F_SETFL:
        remote.flags = (remote.flags & ~_SETFL_BITS) | (call.arg(2) & _SETFL_BITS)
        return 0
    return sys_lock.fcntl_lock(agent, call, remote, command)


def sys_mmap(agent: Agent, call: Call) -> Outcome:
    """Mmap implements Linux syscall mmap(2) of remote files through their placeholder."""
    fd = call.fd(4)
    remote = agent.remote_file(call, fd)
    if remote is None:
        return None
    if remote.is_dir:
        return -errno.ENODEV
    shared_write = call.arg(3) & MAP_SHARED and call.arg(2) & PROT_WRITE
    if shared_write and remote.flags & os.O_ACCMODE != os.O_RDWR:
        return -errno.EACCES  # as the kernel answers for a descriptor not open for both
    if shared_write and agent.files.mapped_elsewhere(remote, agent.live_pids()) is not None:
        # Two placeholders would hold two diverging copies (sqlite's WAL index in two
        # processes): refuse the second rather than let one overwrite the other.
        return agent.hole(
            call, f"remote file {remote.logical} (a second shared writable open)", errno.EOPNOTSUPP
        )
    _materialize(call.pid, fd, remote)
    if shared_write and remote.local_copy is None and remote.mapping is None:
        agent.files.map_shared(remote, call.pid, fd)
    return None


#: Where the descriptors of calls with two are: splice and copy_file_range pass an offset
#: pointer after each (their output descriptor is the third argument).
_DESCRIPTOR_ARGUMENTS = {
    "sendfile": (0, 1),
    "tee": (0, 1),
    "copy_file_range": (0, 2),
    "splice": (0, 2),
}


def sys_fd_hole(agent: Agent, call: Call) -> Outcome:
    """Calls the agent does not emulate: native on local descriptors, refused on remote ones
    (either side of a call that moves bytes between two)."""
    for index in _DESCRIPTOR_ARGUMENTS.get(call.name, (0,)):
        remote = agent.content_file(call, call.fd(index))
        if remote is not None:
            return agent.hole(call, f"remote file {remote.logical}")
    return None


#: struct iocb of Linux AIO: data, key, rw_flags, opcode, reqprio, fildes, buf, nbytes,
#: offset, reserved2, flags, resfd.
_IOCB = struct.Struct("<QIIHhIQQqQII")
_IOCB_FILDES = 5
#: Requests one io_submit may carry that the agent looks at (the kernel's default aio-max-nr).
_IOCB_MAX = 65536


def sys_io_submit(agent: Agent, call: Call) -> Outcome:
    """Io_submit implements Linux syscall io_submit(2): native, unless a request names a
    remote file, whose bytes the kernel would move to and from its placeholder (a write
    reported done that never reaches the server): then the whole call is refused before
    anything is submitted (ENOSYS, named once; programs fall back to plain I/O)."""
    count = call.sarg(1)
    if not len(agent.files) or count <= 0:
        return None
    count = min(count, _IOCB_MAX)
    pointers = struct.unpack(f"<{count}Q", call.read(call.arg(2), 8 * count))
    for address in pointers:
        descriptor = _IOCB.unpack(call.read(address, _IOCB.size))[_IOCB_FILDES]
        remote = agent.content_file(call, descriptor)
        if remote is not None:
            return agent.hole(call, f"remote file {remote.logical} (Linux AIO)")
    return None


def sys_fstatfs(agent: Agent, call: Call) -> Outcome:
    """Fstatfs implements Linux syscall fstatfs(2)."""
    remote = agent.remote_file(call, call.fd(0))
    if remote is None:
        return None
    call.write(call.arg(1), pack_statfs(remote.driver.statfs(remote.remote_path)))
    return 0


def pack_statfs(fs: object) -> bytes:
    from drivers import StatFS

    assert isinstance(fs, StatFS)
    return struct.pack(
        "<qqQQQQQiiqqq4q",
        fs.f_type,
        fs.f_bsize,
        fs.f_blocks,
        fs.f_bfree,
        fs.f_bavail,
        fs.f_files,
        fs.f_ffree,
        0,
        0,
        255,
        fs.f_bsize,
        0,
        0,
        0,
        0,
        0,
    )


def empty_path_fd(call: Call, flags: int, path_index: int) -> bool:
    """newfstatat/statx with AT_EMPTY_PATH and "": an operation on the descriptor."""
    return (
        bool(flags & AT_EMPTY_PATH)
        and call.arg(path_index) != 0
        and call.read(call.arg(path_index), 1) == b"\0"
    )
