"""The syscall table: the agent's dispatcher and its compatibility report in one.

Every syscall the agent traps has one entry: its handler and how completely
the agent supports it on remote objects (``full``, ``partial`` with a note, or
``refused`` with the errno it answers). Syscalls not listed run natively and
never stop in the tracer: the seccomp filter is built from this table, so
trapping only what the namespace needs is a property of this file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Set
from dataclasses import dataclass
from typing import Literal

from reference_agent import (
    _ptrace,
    sandbox,
    sys_copy,
    sys_file,
    sys_identity,
    sys_lock,
    sys_owner,
    sys_path,
    sys_process,
    sys_socket,
    sys_stat,
)
from reference_agent.agent import Agent
from reference_agent.call import Call, Outcome
from reference_agent.identity import HOSTNAME_FEATURE, IDENTITY_FEATURE

__all__ = ["SYSCALL_TABLE", "Entry", "dispatch_table", "trapped_numbers"]

Support = Literal["full", "partial", "refused"]


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    handler: Callable[[Agent, Call], Outcome]
    support: Support
    note: str = ""
    #: Calls on the data path that "--cache whole" leaves to the kernel.
    data_path: bool = False
    #: A run feature this entry is trapped for ("identity", "hostname"); "" is always.
    needs: str = ""


def _entries() -> list[Entry]:
    f, s, p, x = sys_file, sys_stat, sys_path, sys_process
    return [
        # open files
        Entry("open", f.sys_open, "full"),
        Entry("creat", f.sys_creat, "full"),
        Entry("openat", f.sys_openat, "full"),
        Entry(
            "openat2", f.sys_openat2, "partial", "RESOLVE_* flags are not applied to remote paths"
        ),
        Entry("close", f.sys_close, "full"),
        Entry("dup2", f.sys_dup_onto, "full"),
        Entry("dup3", f.sys_dup_onto, "full"),
        Entry("close_range", f.sys_dup_onto, "full"),
        Entry("read", f.sys_read, "full", data_path=True),
        Entry("write", f.sys_write, "full", data_path=True),
        Entry("readv", f.sys_readv, "full", data_path=True),
        Entry("writev", f.sys_writev, "full", data_path=True),
        Entry("pread64", f.sys_pread64, "full", data_path=True),
        Entry("pwrite64", f.sys_pwrite64, "full", data_path=True),
        Entry("preadv", f.sys_preadv, "full", data_path=True),
        Entry("pwritev", f.sys_pwritev, "full", data_path=True),
        Entry("preadv2", f.sys_preadv, "partial", "RWF_* flags are ignored", data_path=True),
        Entry("pwritev2", f.sys_pwritev, "partial", "RWF_* flags are ignored", data_path=True),
        Entry("lseek", f.sys_lseek, "full", data_path=True),
        Entry("fstat", f.sys_fstat, "full"),
        Entry("fstatfs", f.sys_fstatfs, "full"),
        Entry("getdents64", f.sys_getdents64, "full"),
        Entry("fsync", f.sys_fsync, "full"),
        Entry("fdatasync", f.sys_fsync, "full"),
        Entry("ftruncate", f.sys_ftruncate, "full"),
        Entry("fchmod", f.sys_fchmod, "full"),
        Entry(
            "fcntl",
            f.sys_fcntl,
            "partial",
            "record locks on remote files are the agent's: other clients do not see them",
        ),
        Entry(
            "flock",
            sys_lock.sys_flock,
            "partial",
            "locks on remote files are the agent's: other clients do not see them",
        ),
        Entry(
            "mmap",
            f.sys_mmap,
            "partial",
            "remote files are copied whole; a shared writable map goes back at close and fsync",
        ),
        Entry("fallocate", f.sys_fd_hole, "refused", "ENOSYS on remote files"),
        Entry(
            "sendfile", sys_copy.sys_sendfile, "partial", "moves at most 1 MiB per call when remote"
        ),
        Entry(
            "copy_file_range",
            sys_copy.sys_copy_file_range,
            "partial",
            "within one endpoint, at most 1 MiB per call; EXDEV across file systems, as Linux",
        ),
        Entry("splice", f.sys_fd_hole, "refused", "ENOSYS on remote files"),
        Entry("fchown", sys_owner.sys_fchown, "partial", "EPERM (--chown ignore: dropped)"),
        Entry(
            "getdents",
            f.sys_fd_hole,
            "refused",
            "the 32-bit-era call: ENOSYS on remote directories",
        ),
        # looking at paths
        Entry("stat", s.sys_stat, "full"),
        Entry("lstat", s.sys_lstat, "full"),
        Entry("newfstatat", s.sys_newfstatat, "full"),
        Entry("statx", s.sys_statx, "partial", "no birth time; mask is always the basic set"),
        Entry("access", s.sys_access, "full"),
        Entry("faccessat", s.sys_faccessat, "full"),
        Entry(
            "faccessat2",
            s.sys_faccessat,
            "partial",
            "AT_EACCESS and AT_SYMLINK_NOFOLLOW ignored remotely",
        ),
        Entry("readlink", s.sys_readlink, "full"),
        Entry("readlinkat", s.sys_readlinkat, "full"),
        Entry("statfs", s.sys_statfs, "full"),
        # changing the namespace
        Entry("mkdir", p.sys_mkdir, "full"),
        Entry("mkdirat", p.sys_mkdirat, "full"),
        Entry("rmdir", p.sys_rmdir, "full"),
        Entry("unlink", p.sys_unlink, "full"),
        Entry("unlinkat", p.sys_unlinkat, "full"),
        Entry("rename", p.sys_rename, "full"),
        Entry("renameat", p.sys_renameat, "full"),
        Entry(
            "renameat2",
            p.sys_renameat,
            "partial",
            "RENAME_NOREPLACE is checked then renamed (not atomic)",
        ),
        Entry("link", p.sys_link, "full"),
        Entry("linkat", p.sys_linkat, "partial", "AT_SYMLINK_FOLLOW is not applied remotely"),
        Entry("symlink", p.sys_symlink, "full"),
        Entry("symlinkat", p.sys_symlinkat, "full"),
        Entry("truncate", p.sys_truncate, "full"),
        Entry("chmod", p.sys_chmod, "full"),
        Entry("fchmodat", p.sys_fchmodat, "full"),
        Entry(
            "fchmodat2",
            p.sys_fchmodat,
            "partial",
            "AT_SYMLINK_NOFOLLOW on a remote symlink: EOPNOTSUPP, as Linux",
        ),
        Entry(
            "chown",
            sys_owner.sys_chown,
            "partial",
            "EPERM on remote paths: servers keep their own owners (--chown ignore: dropped)",
        ),
        Entry("lchown", sys_owner.sys_chown, "partial", "EPERM (--chown ignore: dropped)"),
        Entry("fchownat", sys_owner.sys_chown, "partial", "EPERM (--chown ignore: dropped)"),
        Entry(
            "utimensat",
            p.sys_utimensat,
            "partial",
            "Chirp stores whole seconds; a remote symlink's own times: EOPNOTSUPP",
        ),
        Entry("utime", p.sys_utimes, "full"),
        Entry("utimes", p.sys_utimes, "full"),
        Entry("getxattr", p.sys_xattr_path, "partial", "remote files have no attributes: ENODATA"),
        Entry("lgetxattr", p.sys_xattr_path, "partial", "ENODATA"),
        Entry("listxattr", p.sys_xattr_path, "partial", "an empty list"),
        Entry("llistxattr", p.sys_xattr_path, "partial", "an empty list"),
        Entry("setxattr", p.sys_xattr_path, "refused", "ENOTSUP"),
        Entry("lsetxattr", p.sys_xattr_path, "refused", "ENOTSUP"),
        Entry("removexattr", p.sys_xattr_path, "partial", "ENODATA"),
        Entry("lremovexattr", p.sys_xattr_path, "partial", "ENODATA"),
        Entry("fgetxattr", p.sys_xattr_fd, "partial", "ENODATA"),
        Entry("flistxattr", p.sys_xattr_fd, "partial", "an empty list"),
        Entry("fsetxattr", p.sys_xattr_fd, "refused", "ENOTSUP"),
        Entry("fremovexattr", p.sys_xattr_fd, "partial", "ENODATA"),
        Entry("mknod", p.sys_path_hole, "refused", "ENOSYS on remote paths"),
        Entry("mknodat", p.sys_path_hole, "refused", "ENOSYS on remote paths"),
        Entry("inotify_add_watch", p.sys_path_hole, "refused", "ENOSYS on remote paths"),
        Entry("name_to_handle_at", p.sys_path_hole, "refused", "ENOSYS on remote paths"),
        # processes
        Entry("execve", x.sys_execve, "full", "remote programs run from a local copy"),
        Entry(
            "execveat",
            x.sys_execveat,
            "partial",
            "AT_EMPTY_PATH on a remote descriptor is not supported",
        ),
        Entry("chdir", x.sys_chdir, "full"),
        Entry("fchdir", x.sys_fchdir, "full"),
        Entry("getcwd", x.sys_getcwd, "full"),
        Entry("ptrace", x.sys_refuse_eperm, "refused", "EPERM: the agent is the tracer"),
        Entry(
            "io_uring_setup",
            x.sys_refuse_enosys,
            "refused",
            "ENOSYS: requests would bypass the agent",
        ),
        # unix socket names
        Entry("bind", sys_socket.sys_bind, "refused", "EOPNOTSUPP for names on remote mounts"),
        Entry(
            "connect",
            sys_socket.sys_connect,
            "refused",
            "names on remote mounts: ENOENT, or ECONNREFUSED if the name exists",
        ),
        # identity (only for runs with --uid/--gid, --hostname)
        *_identity_entries(),
    ]


def _identity_entries() -> list[Entry]:
    i, ids, host = sys_identity, IDENTITY_FEATURE, HOSTNAME_FEATURE
    return [
        Entry("getuid", i.sys_getuid, "full", "--uid", needs=ids),
        Entry("geteuid", i.sys_getuid, "full", "--uid", needs=ids),
        Entry("getgid", i.sys_getgid, "full", "--gid", needs=ids),
        Entry("getegid", i.sys_getgid, "full", "--gid", needs=ids),
        Entry("getresuid", i.sys_getresuid, "full", "--uid", needs=ids),
        Entry("getresgid", i.sys_getresgid, "full", "--gid", needs=ids),
        Entry("getgroups", i.sys_getgroups, "partial", "the fake gid is the only group", needs=ids),
        Entry("uname", i.sys_uname, "full", "--hostname: the node name", needs=host),
    ]


def sys_sandbox_only(agent: Agent, call: Call) -> Outcome:
    """A call trapped for the sandbox alone: the guard has checked it; the kernel runs it."""
    return None


def _sandbox_entries(known: Set[str]) -> list[Entry]:
    """The calls only the sandbox traps (``--deny``, ``--allow-only``, ``--read-only``),
    so that the report lists every call the filter can stop, with what happens to it."""
    entries = []
    for name in sorted(sandbox.SANDBOX_CALLS - known):
        if name not in _ptrace.SYSCALL_NUMBERS:
            continue  # not a call of this architecture: nothing to trap
        if name in sandbox.REFUSED:
            support: Support = "refused"
            note = f"sandbox: EPERM ({sandbox.REFUSED[name]})"
        elif name in sandbox.CONDITIONAL:
            support, note = "partial", "sandbox: refused with some arguments, else native"
        else:
            support, note = "full", "sandbox: its paths or descriptor checked, then native"
        entries.append(Entry(name, sys_sandbox_only, support, note, needs=SANDBOX_FEATURE))
    return entries


#: The feature of a run with a sandbox: its entries are in the report, the guard answers them.
SANDBOX_FEATURE = "sandbox"
_NAMESPACE_ENTRIES = _entries()
SYSCALL_TABLE: dict[str, Entry] = {
    entry.name: entry
    for entry in [
        *_NAMESPACE_ENTRIES,
        *_sandbox_entries({entry.name for entry in _NAMESPACE_ENTRIES}),
    ]
}


def dispatch_table(features: Set[str] = frozenset()) -> dict[str, Entry]:
    """The entries of one run: those its ``features`` need, the stat family showing fake owners.

    Args:
        features: what the run asks for beyond the namespace ("identity", "hostname").
    """
    table = {
        name: entry
        for name, entry in SYSCALL_TABLE.items()
        if not entry.needs or entry.needs in features
    }
    if IDENTITY_FEATURE in features:
        for name in sys_identity.OWNER_CALLS:
            entry = table[name]
            table[name] = dataclasses.replace(
                entry, handler=sys_identity.with_fake_owner(entry.handler)
            )
    return table


def trapped_numbers(cache: str, features: Set[str] = frozenset()) -> set[int]:
    """The syscall numbers the seccomp filter sends to the agent."""
    return {
        _ptrace.syscall_number(name)
        for name, entry in dispatch_table(features).items()
        if not (cache == "whole" and entry.data_path)
    }
