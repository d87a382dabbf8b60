"""Handlers for record locks on remote files: fcntl's lock commands and flock.

The locks themselves live in the agent's :class:`~reference_agent.locks.LockTable`
(Linux's rules between the processes of one run); these handlers decode the
``struct flock`` of the caller, answer F_GETLK, take or drop locks, and park a
caller whose F_SETLKW or blocking flock has to wait until a release lets it in.
"""

from __future__ import annotations

import errno
import os
import struct

from reference_agent._loop import Park
from reference_agent.agent import Agent
from reference_agent.call import Call, Outcome
from reference_agent.files import RemoteFile
from reference_agent.locks import (
    F_RDLCK,
    F_UNLCK,
    F_WRLCK,
    LOCK_EX,
    LOCK_SH,
    LOCK_UN,
    OFFSET_MAX,
    FileKey,
    Owner,
    Waiter,
    lock_range,
)
from reference_agent.process_facts import flags_and_position
from reference_agent.real_path import thread_group

__all__ = ["LOCK_COMMANDS", "fcntl_lock", "release_on_close", "sys_flock"]

F_GETLK, F_SETLK, F_SETLKW = 5, 6, 7
F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW = 36, 37, 38
LOCK_COMMANDS = frozenset({F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW})
LOCK_NB = 4
#: struct flock on x86_64: short l_type, l_whence; off_t l_start, l_len; pid_t l_pid.
_FLOCK = struct.Struct("<hh4xqqi4x")


def file_key(remote: RemoteFile) -> FileKey:
    """The file a lock is on, whatever descriptor, open or name reaches it: the server's
    inode number where the protocol has one (a lock then follows its file through a
    rename, and a new file made under an unlinked name is another file), else the path."""
    return (id(remote.driver), remote.identity())


def _process(pid: int) -> Owner:
    return Owner("process", thread_group(pid))  # byte-range locks are the process's


def _description(remote: RemoteFile) -> Owner:
    return Owner("description", remote.key)


def fcntl_lock(agent: Agent, call: Call, remote: RemoteFile, command: int) -> Outcome:
    """The lock commands of fcntl(2) on a remote file (F_GETLK, F_SETLK(W), F_OFD_*)."""
    address = call.arg(2)
    l_type, l_whence, l_start, l_len, l_pid = _FLOCK.unpack(call.read(address, _FLOCK.size))
    ofd = command in (F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW)
    if l_type not in (F_RDLCK, F_WRLCK, F_UNLCK) or (ofd and l_pid != 0):
        return -errno.EINVAL
    if remote.flags & os.O_PATH:
        return -errno.EBADF
    if l_whence == os.SEEK_SET:
        base = 0
    elif l_whence == os.SEEK_CUR:
        base = flags_and_position(call.pid, call.fd(0))[1] if remote.filled else remote.offset
    elif l_whence == os.SEEK_END:
        base = remote.driver.fstat(remote.handle).st_size
    else:
        return -errno.EINVAL
    span = lock_range(base + l_start, l_len)
    if span is None:
        return -errno.EINVAL
    start, end = span
    owner = _description(remote) if ofd else _process(call.pid)
    key = file_key(remote)
    if command in (F_GETLK, F_OFD_GETLK):
        if l_type == F_UNLCK:
            return -errno.EINVAL
        conflict = agent.locks.test_range(key, owner, l_type, start, end)
        if conflict is None:
            reply = (F_UNLCK, l_whence, l_start, l_len, l_pid)
        else:
            length = 0 if conflict.end == OFFSET_MAX else conflict.end - conflict.start + 1
            reply = (conflict.type, os.SEEK_SET, conflict.start, length, conflict.owner.pid)
        call.write(address, _FLOCK.pack(*reply))
        return 0
    access = remote.flags & os.O_ACCMODE
    if (l_type == F_RDLCK and access == os.O_WRONLY) or (
        l_type == F_WRLCK and access == os.O_RDONLY
    ):
        return -errno.EBADF
    conflict = agent.locks.set_range(key, owner, l_type, start, end)
    if conflict is None:
        agent.wake_lock_waiters(agent.locks.grant_waiters())
        return 0
    if command in (F_SETLK, F_OFD_SETLK):
        return -errno.EAGAIN
    if not ofd and agent.locks.would_deadlock(owner, conflict.owner):
        return -errno.EDEADLK
    agent.locks.enqueue(Waiter(call.pid, key, owner, l_type, start, end))
    return Park()


def sys_flock(agent: Agent, call: Call) -> Outcome:
    """Flock implements Linux syscall flock(2) on remote files (native on local ones, and on
    a ``--cache whole`` copy, which every open of the file in this run shares)."""
    remote = agent.content_file(call, call.fd(0))
    if remote is None:
        return None
    operation = call.fd(1)
    wanted = operation & ~LOCK_NB
    if wanted not in (LOCK_SH, LOCK_EX, LOCK_UN):
        return -errno.EINVAL
    if remote.flags & os.O_PATH:
        return -errno.EBADF
    owner, key = _description(remote), file_key(remote)
    in_the_way = agent.locks.set_flock(key, owner, wanted)
    agent.wake_lock_waiters(agent.locks.grant_waiters())
    if in_the_way is None:
        return 0
    if operation & LOCK_NB:
        return -errno.EWOULDBLOCK
    agent.locks.enqueue(Waiter(call.pid, key, owner, wanted, flock=True))
    return Park()


def release_on_close(agent: Agent, call: Call, remote: RemoteFile) -> None:
    """Closing any descriptor of a file drops the calling process's byte-range locks on it."""
    if agent.locks.is_empty():
        return  # no lock anywhere: no need to know which file this is
    key = file_key(remote)
    if agent.locks.has_locks(key):
        agent.wake_lock_waiters(agent.locks.release(_process(call.pid), key))
