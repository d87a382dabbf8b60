"""Handlers for looking at paths: stat, lstat, newfstatat, statx, access, readlink, statfs."""

from __future__ import annotations

import errno
import os
import stat as stat_module

from drivers import Driver, StatResult
from reference_agent._abi import (
    AT_FDCWD,
    AT_SYMLINK_NOFOLLOW,
    EXECUTE_BITS,
    pack_stat,
    pack_statx,
)
from reference_agent._common import path_call
from reference_agent.agent import Agent
from reference_agent.call import Call, Outcome, Resolved
from reference_agent.namespace import RemoteTarget
from reference_agent.sys_file import empty_path_fd, pack_statfs, with_block_size_hint

_SERVICE_DIR_DEV = os.makedev(0xA5, 0)


def _service_directory_stat() -> StatResult:
    """``/chirp`` itself: an empty, read-only directory (it asks no catalog)."""
    return StatResult(
        st_mode=stat_module.S_IFDIR | 0o555,
        st_ino=1,
        st_dev=_SERVICE_DIR_DEV,
        st_nlink=2,
        st_uid=0,
        st_gid=0,
        st_size=0,
        st_atime_ns=0,
        st_mtime_ns=0,
        st_ctime_ns=0,
        st_blksize=4096,
        st_blocks=0,
        synthesized=frozenset(
            {"st_ino", "st_uid", "st_gid", "st_atime_ns", "st_mtime_ns", "st_ctime_ns"}
        ),
    )


def _stat_into(
    agent: Agent, call: Call, dirfd: int, path_index: int, buffer: int, follow: bool, packer: str
) -> Outcome:
    pack = pack_stat if packer == "stat" else pack_statx

    def remote(driver: Driver, target: RemoteTarget, resolved: Resolved) -> int:
        st = driver.stat(target.path) if follow else driver.lstat(target.path)
        call.write(buffer, pack(with_block_size_hint(agent, st), agent.remote_dev(target.endpoint)))
        return 0

    def service(call_: Call, resolved: Resolved) -> int:
        call.write(buffer, pack(_service_directory_stat(), _SERVICE_DIR_DEV))
        return 0

    return path_call(agent, call, dirfd, path_index, remote, service=service)


def _fd_stat_into(agent: Agent, call: Call, fd: int, buffer: int, packer: str) -> Outcome:
    remote = agent.remote_file(call, fd)
    if remote is None:
        return None
    pack = pack_stat if packer == "stat" else pack_statx
    call.write(buffer, pack(with_block_size_hint(agent, remote.stat()), remote.dev))
    return 0


def sys_stat(agent: Agent, call: Call) -> Outcome:
    """Stat implements Linux syscall stat(2)."""
    return _stat_into(agent, call, AT_FDCWD, 0, call.arg(1), True, "stat")


def sys_lstat(agent: Agent, call: Call) -> Outcome:
    """Lstat implements Linux syscall lstat(2)."""
    return _stat_into(agent, call, AT_FDCWD, 0, call.arg(1), False, "stat")


def sys_newfstatat(agent: Agent, call: Call) -> Outcome:
    """Newfstatat implements Linux syscall newfstatat(2) (glibc's fstat, too)."""
    dirfd, flags = call.fd(0), call.fd(3)
    if empty_path_fd(call, flags, 1):
        return _fd_stat_into(agent, call, dirfd, call.arg(2), "stat")
    return _stat_into(agent, call, dirfd, 1, call.arg(2), not flags & AT_SYMLINK_NOFOLLOW, "stat")


def sys_statx(agent: Agent, call: Call) -> Outcome:
    """Statx implements Linux syscall statx(2)."""
    dirfd, flags = call.fd(0), call.fd(2)
    if empty_path_fd(call, flags, 1):
        return _fd_stat_into(agent, call, dirfd, call.arg(4), "statx")
    return _stat_into(agent, call, dirfd, 1, call.arg(4), not flags & AT_SYMLINK_NOFOLLOW, "statx")


def _access(agent: Agent, call: Call, dirfd: int, path_index: int, mode: int) -> Outcome:
    def remote(driver: Driver, target: RemoteTarget, resolved: Resolved) -> int:
        asked = mode
        st = driver.stat(target.path) if mode & os.X_OK else None
        if st is not None and not st.is_dir():
            # A remote program runs from a local copy whose mode bits the kernel checks,
            # made if an x bit is set (``sys_process``): X_OK asks what that exec needs,
            # an x bit and the right to read the file, not the server's own execute right
            # (Chirp's ACL "x", which is about running programs on the server).
            if not st.st_mode & EXECUTE_BITS:
                return -errno.EACCES
            asked = (asked & ~os.X_OK) | os.R_OK
        driver.access(target.path, asked)
        return 0

    def service(call_: Call, resolved: Resolved) -> int:
        return -errno.EACCES if mode & os.W_OK else 0

    return path_call(agent, call, dirfd, path_index, remote, service=service)


def sys_access(agent: Agent, call: Call) -> Outcome:
    """Access implements Linux syscall access(2)."""
    return _access(agent, call, AT_FDCWD, 0, call.fd(1))


def sys_faccessat(agent: Agent, call: Call) -> Outcome:
    """Faccessat implements Linux syscalls faccessat(2) and faccessat2(2)."""
    return _access(agent, call, call.fd(0), 1, call.fd(2))


def _answer_link(call: Call, text: str, buffer: int, size: int) -> int:
    if size <= 0:
        return -errno.EINVAL
    data = os.fsencode(text)[:size]
    call.write(buffer, data)
    return len(data)


def _readlink(
    agent: Agent, call: Call, dirfd: int, path_index: int, buffer: int, size: int
) -> Outcome:
    path = call.string(path_index)
    if path == "" and dirfd >= 0:
        link = agent.remote_file(call, dirfd)
        if link is not None:  # readlinkat(fd, "") on O_PATH|O_NOFOLLOW of a remote link
            if not link.is_link:
                return -errno.EINVAL
            return _answer_link(call, link.driver.readlink(link.remote_path), buffer, size)
    behind = agent.files.behind_proc_link(call.pid, path) if path.startswith("/proc/") else None
    if behind is not None and not behind[1]:
        # The program's own name (the kernel would show the placeholder's "/memfd:...").
        return _answer_link(call, behind[0].logical, buffer, size)

    def remote(driver: Driver, target: RemoteTarget, resolved: Resolved) -> int:
        if size <= 0:
            return -errno.EINVAL
        text = os.fsencode(driver.readlink(target.path))[:size]
        call.write(buffer, text)
        return len(text)

    return path_call(
        agent, call, dirfd, path_index, remote, service=lambda c, r: -errno.EINVAL, path=path
    )


def sys_readlink(agent: Agent, call: Call) -> Outcome:
    """Readlink implements Linux syscall readlink(2)."""
    return _readlink(agent, call, AT_FDCWD, 0, call.arg(1), call.sarg(2))


def sys_readlinkat(agent: Agent, call: Call) -> Outcome:
    """Readlinkat implements Linux syscall readlinkat(2)."""
    return _readlink(agent, call, call.fd(0), 1, call.arg(2), call.sarg(3))


def sys_statfs(agent: Agent, call: Call) -> Outcome:
    """Statfs implements Linux syscall statfs(2)."""

    def remote(driver: Driver, target: RemoteTarget, resolved: Resolved) -> int:
        call.write(call.arg(1), pack_statfs(driver.statfs(target.path)))
        return 0

    return path_call(agent, call, AT_FDCWD, 0, remote)
