"""Handlers for processes: execve of remote programs, the working directory, refusals."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os

from drivers import Driver
from reference_agent import _ptrace
from reference_agent._abi import AT_FDCWD, EXECUTE_BITS
from reference_agent._common import path_call, rewrite_args
from reference_agent._exec_rewrite import exec_through_namespace
from reference_agent._loop import Rewrite
from reference_agent.agent import Agent
from reference_agent.call import NATIVE, Call, Outcome, Resolved
from reference_agent.namespace import LocalTarget, Refused, RemoteTarget, ServiceDirectory

_SYS_CHDIR = _ptrace.syscall_number("chdir")


def _local_copy(agent: Agent, driver: Driver, target: RemoteTarget) -> str:
    """Fetch a remote executable into the cache: the kernel can only exec a local file."""
    assert agent.options.cache_dir is not None
    st = driver.stat(target.path)
    if not st.is_reg():
        raise OSError(errno.EACCES, "not a regular file", target.path)
    if agent.whole_cache is not None:
        return agent.whole_cache.copy_of(driver, target, st)  # shared with other runs
    key = hashlib.sha256(
        f"{target.url}\0{st.st_ino}\0{st.st_mtime_ns}\0{st.st_size}".encode()
    ).hexdigest()[:24]
    name = os.path.basename(target.path) or "program"
    local = agent.options.cache_dir / f"{key}-{name}"
    if not local.exists():
        partial = local.with_suffix(".partial")
        partial.write_bytes(driver.read_file(target.path))
        partial.chmod(0o755 if st.st_mode & EXECUTE_BITS else 0o644)
        partial.rename(local)
    return str(local)


def _exec(agent: Agent, call: Call, dirfd: int, index: int) -> Outcome:
    moved = exec_through_namespace(agent, call, dirfd, index)
    if moved is not None:
        return moved  # an interpreter the namespace moves (a package's loader)

    def remote(driver: Driver, target: RemoteTarget, resolved: Resolved) -> Outcome:
        return rewrite_args(call, {index: _local_copy(agent, driver, target)})

    return path_call(agent, call, dirfd, index, remote, service=lambda c, r: -errno.EACCES)


def sys_execve(agent: Agent, call: Call) -> Outcome:
    """Execve implements Linux syscall execve(2) for local and remote programs."""
    return _exec(agent, call, AT_FDCWD, 0)


def sys_execveat(agent: Agent, call: Call) -> Outcome:
    """Execveat implements Linux syscall execveat(2)."""
    return _exec(agent, call, call.fd(0), 1)


def _enter_remote(agent: Agent, call: Call, logical: str) -> Outcome:
    """Make ``logical`` (a remote directory) the task's working directory.

    The agent resolves relative paths against ``logical`` with its remote links followed
    (so that ".." in it is the kernel's ".."); the kernel's working directory moves into
    a directory removed right after, so that a relative path the agent does not see (an
    untrapped call) fails with ENOENT instead of reaching the previous local directory.
    """
    physical = agent.physical(call, logical)
    if isinstance(physical, int):
        return -physical
    placeholder = agent.cwd_placeholder()
    pid = call.pid

    def entered(result: int) -> int | None:
        with contextlib.suppress(OSError):
            os.rmdir(placeholder)
        if result == 0:
            agent.set_cwd(pid, physical)
        return None

    registers = call.registers.replace(nr=_SYS_CHDIR, args=(call.scratch_string(placeholder),))
    return Rewrite(registers, entered)


def sys_chdir(agent: Agent, call: Call) -> Outcome:
    """Chdir implements Linux syscall chdir(2); the agent keeps the logical directory."""
    resolved = agent.resolve(call, AT_FDCWD, call.string(0))
    target = resolved.target
    pid = call.pid
    if isinstance(target, Refused):
        return -target.errno
    if isinstance(target, RemoteTarget):
        st = agent.driver_for(call, target).stat(target.path)
        if not st.is_dir():
            return -errno.ENOTDIR
        return _enter_remote(agent, call, resolved.logical)
    if isinstance(target, ServiceDirectory):
        return _enter_remote(agent, call, resolved.logical)

    def moved(result: int) -> int | None:
        if result == 0:
            agent.set_cwd(pid, resolved.logical)
        return None

    if target is NATIVE:
        return Rewrite(call.registers, moved)
    assert isinstance(target, LocalTarget)
    rewrite = rewrite_args(call, {0: target.path})
    return Rewrite(rewrite.registers, moved)


def sys_fchdir(agent: Agent, call: Call) -> Outcome:
    """Fchdir implements Linux syscall fchdir(2)."""
    remote = agent.remote_file(call, call.fd(0))
    pid = call.pid
    if remote is not None:
        if not remote.is_dir:
            return -errno.ENOTDIR
        return _enter_remote(agent, call, remote.logical)
    stand_in = agent.stand_in_of(pid, call.fd(0))
    if stand_in is not None:
        return _enter_remote(agent, call, stand_in)  # a descriptor of /chirp

    def moved(result: int) -> int | None:
        if result == 0:
            agent.set_cwd(pid, os.readlink(f"/proc/{pid}/cwd"))
        return None

    return Rewrite(call.registers, moved)


def sys_getcwd(agent: Agent, call: Call) -> Outcome:
    """Getcwd implements Linux syscall getcwd(2) from the logical working directory."""
    text = os.fsencode(agent.cwd_of(call.pid)) + b"\0"  # ENOENT when unknown, as Linux
    if len(text) > call.arg(1):
        return -errno.ERANGE
    call.write(call.arg(0), text)
    return len(text)


def sys_refuse_eperm(agent: Agent, call: Call) -> Outcome:
    """Ptrace: a traced program may not trace (the agent is its tracer)."""
    return -errno.EPERM


def sys_refuse_enosys(agent: Agent, call: Call) -> Outcome:
    """io_uring: its requests would bypass the agent, so it is absent."""
    return -errno.ENOSYS
