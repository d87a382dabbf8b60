"""The syscall table: the agent's dispatcher and its compatibility report in one.

Every syscall the agent traps has one entry: its handler, how completely
the agent supports it on remote objects (``full``, ``partial`` with a note, or
``refused`` with the errno it answers), and what the sandbox checks in it
(which arguments are paths and what the call does with each, the descriptor
whose object it changes, the open flags, a socket's address; or why a
sandboxed program may not make it at all). Syscalls not listed run natively
and never stop in the tracer: the seccomp filter is built from this table, so
trapping only what the namespace (or the sandbox) needs is a property of this
file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Set
from dataclasses import dataclass
from typing import Literal

from reference_agent import (
    _ptrace,
    sys_copy,
    sys_file,
    sys_identity,
    sys_lock,
    sys_owner,
    sys_path,
    sys_process,
    sys_read_write,
    sys_socket,
    sys_stat,
)
from reference_agent._abi import AT_EMPTY_PATH, AT_SYMLINK_FOLLOW, AT_SYMLINK_NOFOLLOW
from reference_agent.agent import Agent
from reference_agent.call import Call, Outcome
from reference_agent.identity import HOSTNAME_FEATURE, IDENTITY_FEATURE
from reference_agent.syscall_args import (
    FAN_MARK_DONT_FOLLOW,
    IN_DONT_FOLLOW,
    FdArg,
    OpenArgs,
    PathArg,
    SocketArg,
    Use,
    at_path,
    at_path_flagged,
    plain_path,
)

__all__ = [
    "SANDBOX_FEATURE",
    "SYSCALL_TABLE",
    "Entry",
    "dispatch_table",
    "guarded_calls",
    "sys_sandbox_only",
    "trapped_numbers",
]

Support = Literal["full", "partial", "refused"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One syscall: who answers it, its support as the report shows it, what the sandbox checks."""

    name: str
    handler: Callable[[Agent, Call], Outcome]
    support: Support
    note: str = ""
    #: Calls on the data path that "--cache whole" leaves to the kernel.
    data_path: bool = False
    #: A run feature this entry is trapped for ("identity", "hostname", "sandbox"); "" is always.
    needs: str = ""
    # What the sandbox checks (``sandbox.py``):
    #: the path arguments, each with what the call does with it;
    paths: tuple[PathArg, ...] = ()
    #: an open call's path, directory descriptor and flags;
    opens: OpenArgs | None = None
    #: a socket address that may name a file;
    socket: SocketArg | None = None
    #: the descriptor whose object the call changes;
    fd: FdArg | None = None
    #: why a sandboxed program may not make the call at all ("": it may);
    refused_because: str = ""
    #: refused with some arguments only (a seccomp filter of the program's own, a device node);
    conditional: bool = False
    #: the checked real path replaces the program's argument; not for exec (a script's
    #: ``$0`` is the path as given) nor chdir (the agent keeps its logical name).
    pin_paths: bool = True

    @property
    def guarded(self) -> bool:
        """The sandbox checks or refuses this call."""
        return bool(
            self.paths
            or self.opens
            or self.socket
            or self.fd
            or self.refused_because
            or self.conditional
        )


# Short names for the rows: what a call does with a path, and its three shapes.
L, W, X, MV = Use.LOOK, Use.WRITE, Use.EXEC, Use.WRITE | Use.MOVE
pp, at, atf = plain_path, at_path, at_path_flagged


def _entries() -> list[Entry]:
    f, rw, s, p, x = sys_file, sys_read_write, sys_stat, sys_path, sys_process
    return [
        # open files
        Entry("open", f.sys_open, "full", opens=OpenArgs(0, None, 1)),
        Entry("creat", f.sys_creat, "full", paths=(pp(0, W),)),
        Entry("openat", f.sys_openat, "full", opens=OpenArgs(1, 0, 2)),
        Entry(
            "openat2",
            f.sys_openat2,
            "partial",
            "RESOLVE_* flags are not applied to remote paths",
            opens=OpenArgs(1, 0, None),
        ),
        Entry("close", f.sys_close, "full"),
        Entry("dup2", f.sys_dup_onto, "full"),
        Entry("dup3", f.sys_dup_onto, "full"),
        Entry("close_range", f.sys_dup_onto, "full"),
        Entry("read", rw.sys_read, "full", data_path=True),
        Entry("write", rw.sys_write, "full", data_path=True),
        Entry("readv", rw.sys_readv, "full", data_path=True),
        Entry("writev", rw.sys_writev, "full", data_path=True),
        Entry("pread64", rw.sys_pread64, "full", data_path=True),
        Entry("pwrite64", rw.sys_pwrite64, "full", data_path=True),
        Entry("preadv", rw.sys_preadv, "full", data_path=True),
        Entry("pwritev", rw.sys_pwritev, "full", data_path=True),
        Entry("preadv2", rw.sys_preadv, "partial", "RWF_* flags are ignored", data_path=True),
        Entry(
            "pwritev2",
            rw.sys_pwritev,
            "partial",
            "RWF_APPEND appends; other RWF_* flags are ignored",
            data_path=True,
        ),
        # Not on the data path: a remote directory's offset is the agent's under every
        # cache mode (seekdir, rewinddir); a --cache whole copy's seeks stay the kernel's.
        Entry("lseek", rw.sys_lseek, "full"),
        Entry("fstat", f.sys_fstat, "full"),
        Entry("fstatfs", f.sys_fstatfs, "full"),
        Entry("getdents64", f.sys_getdents64, "full"),
        Entry("fsync", f.sys_fsync, "full"),
        Entry("fdatasync", f.sys_fsync, "full"),
        Entry("ftruncate", f.sys_ftruncate, "full", fd=FdArg(0, W)),
        Entry("fchmod", f.sys_fchmod, "full", fd=FdArg(0, W)),
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
        Entry("io_submit", f.sys_io_submit, "refused", "ENOSYS when a request names a remote file"),
        Entry(
            "fchown",
            sys_owner.sys_fchown,
            "partial",
            "EPERM (--chown ignore: dropped)",
            fd=FdArg(0, W),
        ),
        Entry(
            "getdents",
            f.sys_fd_hole,
            "refused",
            "the 32-bit-era call: ENOSYS on remote directories",
        ),
        # looking at paths
        Entry("stat", s.sys_stat, "full", paths=(pp(0, L),)),
        Entry("lstat", s.sys_lstat, "full", paths=(pp(0, L, False),)),
        Entry("newfstatat", s.sys_newfstatat, "full", paths=(atf(1, L, 3),)),
        Entry(
            "statx",
            s.sys_statx,
            "partial",
            "no birth time; mask is always the basic set",
            paths=(atf(1, L, 2),),
        ),
        Entry("access", s.sys_access, "full", paths=(pp(0, L),)),
        Entry("faccessat", s.sys_faccessat, "full", paths=(at(1, L),)),
        Entry(
            "faccessat2",
            s.sys_faccessat,
            "partial",
            "AT_EACCESS and AT_SYMLINK_NOFOLLOW ignored remotely",
            paths=(atf(1, L, 3),),
        ),
        Entry("readlink", s.sys_readlink, "full", paths=(pp(0, L, False),)),
        Entry("readlinkat", s.sys_readlinkat, "full", paths=(at(1, L, False),)),
        Entry("statfs", s.sys_statfs, "full", paths=(pp(0, L),)),
        # changing the namespace
        Entry("mkdir", p.sys_mkdir, "full", paths=(pp(0, W, False),)),
        Entry("mkdirat", p.sys_mkdirat, "full", paths=(at(1, W, False),)),
        Entry("rmdir", p.sys_rmdir, "full", paths=(pp(0, W, False),)),
        Entry("unlink", p.sys_unlink, "full", paths=(pp(0, W, False),)),
        Entry("unlinkat", p.sys_unlinkat, "full", paths=(at(1, W, False),)),
        Entry("rename", p.sys_rename, "full", paths=(pp(0, MV, False), pp(1, MV, False))),
        Entry("renameat", p.sys_renameat, "full", paths=(at(1, MV, False), at(3, MV, False))),
        Entry(
            "renameat2",
            p.sys_renameat,
            "partial",
            "RENAME_NOREPLACE is checked then renamed (not atomic)",
            paths=(at(1, MV, False), at(3, MV, False)),  # RENAME_EXCHANGE moves both
        ),
        Entry("link", p.sys_link, "full", paths=(pp(0, L, False), pp(1, W, False))),
        Entry(
            "linkat",
            p.sys_linkat,
            "partial",
            "AT_SYMLINK_FOLLOW is not applied remotely",
            paths=(atf(1, L, 4, False, follow_bit=AT_SYMLINK_FOLLOW), at(3, W, False)),
        ),
        Entry("symlink", p.sys_symlink, "full", paths=(pp(1, W, False),)),
        Entry("symlinkat", p.sys_symlinkat, "full", paths=(at(2, W, False),)),
        Entry("truncate", p.sys_truncate, "full", paths=(pp(0, W),)),
        Entry("chmod", p.sys_chmod, "full", paths=(pp(0, W),)),
        Entry("fchmodat", p.sys_fchmodat, "full", paths=(at(1, W),)),
        Entry(
            "fchmodat2",
            p.sys_fchmodat,
            "partial",
            "AT_SYMLINK_NOFOLLOW on a remote symlink: EOPNOTSUPP, as Linux",
            paths=(atf(1, W, 3),),
        ),
        Entry(
            "chown",
            sys_owner.sys_chown,
            "partial",
            "EPERM on remote paths: servers keep their own owners (--chown ignore: dropped)",
            paths=(pp(0, W),),
        ),
        Entry(
            "lchown",
            sys_owner.sys_chown,
            "partial",
            "EPERM (--chown ignore: dropped)",
            paths=(pp(0, W, False),),
        ),
        Entry(
            "fchownat",
            sys_owner.sys_chown,
            "partial",
            "EPERM (--chown ignore: dropped)",
            paths=(atf(1, W, 4),),
        ),
        Entry(
            "utimensat",
            p.sys_utimensat,
            "partial",
            "Chirp stores whole seconds; a remote symlink's own times: EOPNOTSUPP",
            paths=(
                PathArg(
                    1, 0, W, True, 3, AT_SYMLINK_NOFOLLOW, empty_bit=AT_EMPTY_PATH, optional=True
                ),
            ),
        ),
        Entry("utime", p.sys_utimes, "full", paths=(pp(0, W),)),
        Entry("utimes", p.sys_utimes, "full", paths=(pp(0, W),)),
        Entry(
            "getxattr",
            p.sys_xattr_path,
            "partial",
            "remote files have no attributes: ENODATA",
            paths=(pp(0, L),),
        ),
        Entry("lgetxattr", p.sys_xattr_path, "partial", "ENODATA", paths=(pp(0, L, False),)),
        Entry("listxattr", p.sys_xattr_path, "partial", "an empty list", paths=(pp(0, L),)),
        Entry("llistxattr", p.sys_xattr_path, "partial", "an empty list", paths=(pp(0, L, False),)),
        Entry("setxattr", p.sys_xattr_path, "refused", "ENOTSUP", paths=(pp(0, W),)),
        Entry("lsetxattr", p.sys_xattr_path, "refused", "ENOTSUP", paths=(pp(0, W, False),)),
        Entry("removexattr", p.sys_xattr_path, "partial", "ENODATA", paths=(pp(0, W),)),
        Entry("lremovexattr", p.sys_xattr_path, "partial", "ENODATA", paths=(pp(0, W, False),)),
        Entry("fgetxattr", p.sys_xattr_fd, "partial", "ENODATA"),
        Entry("flistxattr", p.sys_xattr_fd, "partial", "an empty list"),
        Entry("fsetxattr", p.sys_xattr_fd, "refused", "ENOTSUP", fd=FdArg(0, W)),
        Entry("fremovexattr", p.sys_xattr_fd, "partial", "ENODATA", fd=FdArg(0, W)),
        Entry(
            "mknod",
            p.sys_path_hole,
            "refused",
            "ENOSYS on remote paths",
            paths=(pp(0, W, False),),
            conditional=True,  # a device node: EPERM in a sandbox
        ),
        Entry(
            "mknodat",
            p.sys_path_hole,
            "refused",
            "ENOSYS on remote paths",
            paths=(at(1, W, False),),
            conditional=True,
        ),
        Entry(
            "inotify_add_watch",
            p.sys_path_hole,
            "refused",
            "ENOSYS on remote paths",
            paths=(PathArg(1, None, L, True, 2, nofollow_bit=IN_DONT_FOLLOW),),
        ),
        Entry(
            "name_to_handle_at",
            p.sys_path_hole,
            "refused",
            "ENOSYS on remote paths",
            paths=(atf(1, L, 4, False, follow_bit=AT_SYMLINK_FOLLOW),),
        ),
        # processes
        Entry(
            "execve",
            x.sys_execve,
            "full",
            "remote programs run from a local copy",
            paths=(pp(0, X),),
            pin_paths=False,
        ),
        Entry(
            "execveat",
            x.sys_execveat,
            "partial",
            "AT_EMPTY_PATH on a remote descriptor is not supported",
            paths=(atf(1, X, 4),),
            pin_paths=False,
        ),
        Entry("chdir", x.sys_chdir, "full", paths=(pp(0, L),), pin_paths=False),
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
        Entry(
            "bind",
            sys_socket.sys_bind,
            "refused",
            "EOPNOTSUPP for names on remote mounts",
            socket=SocketArg(1, 2, Use.WRITE),
        ),
        Entry(
            "connect",
            sys_socket.sys_connect,
            "refused",
            "names on remote mounts: ENOENT, or ECONNREFUSED if the name exists",
            socket=SocketArg(1, 2, Use.READ),
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


def _checked(
    name: str,
    paths: tuple[PathArg, ...] = (),
    *,
    socket: SocketArg | None = None,
    pin_paths: bool = True,
) -> Entry:
    """A call the sandbox alone traps, to check its paths or descriptor before the kernel runs it."""
    note = "sandbox: its paths or descriptor checked, then native"
    return Entry(
        name,
        sys_sandbox_only,
        "full",
        note,
        needs=SANDBOX_FEATURE,
        paths=paths,
        socket=socket,
        pin_paths=pin_paths,
    )


def _refused(name: str, because: str) -> Entry:
    """A call a sandboxed program may not make: it gives another way to the files."""
    note = f"sandbox: EPERM ({because})"
    return Entry(
        name, sys_sandbox_only, "refused", note, needs=SANDBOX_FEATURE, refused_because=because
    )


def _conditional(name: str) -> Entry:
    """A call the sandbox refuses with some arguments only: a seccomp filter of the program's own."""
    note = "sandbox: refused with some arguments, else native"
    return Entry(name, sys_sandbox_only, "partial", note, needs=SANDBOX_FEATURE, conditional=True)


def _sandbox_entries() -> list[Entry]:
    """The calls only the sandbox traps (``--deny``, ``--allow-only``, ``--read-only``),
    so that the report lists every call the filter can stop, with what happens to it."""
    views, kernel = "another view of the files", "kernel control"
    entries = [
        _checked("acct", (PathArg(0, None, W, optional=True),), pin_paths=False),
        _refused("bpf", kernel),
        _refused("chroot", "another root directory"),
        _refused("delete_module", kernel),
        _checked(
            "fanotify_mark",
            (PathArg(4, 3, L, True, 1, nofollow_bit=FAN_MARK_DONT_FOLLOW, optional=True),),
        ),
        _checked("file_getattr", (atf(1, L, 4),)),
        _checked("file_setattr", (atf(1, W, 4),)),
        _refused("finit_module", kernel),
        _refused("fsconfig", views),
        _refused("fsmount", views),
        _refused("fsopen", views),
        _refused("fspick", views),
        _checked("futimesat", (at(1, W),)),
        _checked("getxattrat", (atf(1, L, 2),)),
        _refused("init_module", kernel),
        _refused("ioperm", "raw port access"),
        _refused("iopl", "raw port access"),
        _refused("kexec_file_load", kernel),
        _refused("kexec_load", kernel),
        _checked("listxattrat", (atf(1, L, 2),)),
        _refused("mount", views),
        _refused("mount_setattr", views),
        _refused("move_mount", views),
        _refused("open_by_handle_at", "opening a file without its path"),
        _refused("open_tree", views),
        _refused("open_tree_attr", views),
        _refused("pidfd_getfd", "taking another process's descriptor"),
        _refused("pivot_root", "another root directory"),
        _conditional("prctl"),
        _refused("process_vm_writev", "writing another process's memory"),
        _checked("quotactl", (PathArg(1, None, L, optional=True),), pin_paths=False),
        _checked("removexattrat", (atf(1, W, 2),)),
        _conditional("seccomp"),
        _checked("sendmsg", socket=SocketArg(1, None, Use.READ)),
        _checked("sendto", socket=SocketArg(4, 5, Use.READ)),
        _refused("setns", "another mount namespace"),
        _checked("setxattrat", (atf(1, W, 2),)),
        _refused("swapoff", kernel),
        _refused("swapon", kernel),
        _refused("umount2", views),
        _refused("uselib", "loading a library without its path"),
        _refused("userfaultfd", "changing memory the agent's checked copies live in"),
    ]
    # A call this architecture does not have: nothing to trap.
    return [entry for entry in entries if entry.name in _ptrace.SYSCALL_NUMBERS]


#: The feature of a run with a sandbox: its entries are in the report, the guard answers them.
SANDBOX_FEATURE = "sandbox"
_NAMESPACE_ENTRIES = _entries()
SYSCALL_TABLE: dict[str, Entry] = {
    entry.name: entry for entry in [*_NAMESPACE_ENTRIES, *_sandbox_entries()]
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


def guarded_calls() -> dict[str, Entry]:
    """The entries the sandbox checks or refuses: what the filter also traps in a sandbox."""
    return {name: entry for name, entry in SYSCALL_TABLE.items() if entry.guarded}


def trapped_numbers(cache: str, features: Set[str] = frozenset()) -> set[int]:
    """The syscall numbers the seccomp filter sends to the agent."""
    return {
        _ptrace.syscall_number(name)
        for name, entry in dispatch_table(features).items()
        if not (cache == "whole" and entry.data_path)
    }
