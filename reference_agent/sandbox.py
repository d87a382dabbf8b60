"""The sandbox: which paths a traced program may use, checked at every path-taking syscall.

Rules (``SandboxRules``) name paths to deny, a set of trees to allow alone
(``allow_only``), trees to keep read-only, and whether refusals say ENOENT
("hidden") rather than EACCES. A mountlist's ``r``/``w``/``x`` access letters
are enforced by the same check, so a mount can be made read-only there too.

The ``Guard`` runs before a trapped call's handler. For each path argument it:

1. reads the string from the program's memory once, writes that copy into the
   call's sealed area (``race_guards``: memory no thread of the program can
   write) and points the argument at the copy, so that what the kernel (or the
   handler) uses is exactly what was checked, whatever another thread writes
   meanwhile;
2. resolves it: the namespace gives the logical path and its mount; a local
   file is then walked in the program's view (``real_path.walk``): symlinks,
   ``..``, ``openat`` directory descriptors, ``/proc/self/root``,
   ``/proc/PID/cwd``, ``/dev/fd/N``;
3. decides: a denied tree anywhere on the way (the logical path, a directory
   passed through, a symlink read, the end) refuses; under ``allow_only`` the
   end must lie in an allowed tree (its ancestors may only be looked at);
   writing into a read-only tree is EROFS; a mount without the access letter
   is EACCES. An ``execve`` also checks the script interpreter (``#!``) and
   the ELF program interpreter, which the kernel opens without a syscall.

In sandbox mode the filter also traps the path calls the namespace does not
need, and refuses the calls that would let a program get around the agent:
mounting and ``chroot``/``setns`` (another view of the files), opening by file
handle, writing other processes' memory, stealing their descriptors, loading
kernel code, making device nodes, and installing a seccomp filter of its own
(a ``SECCOMP_RET_USER_NOTIF`` or ``RET_TRACE`` filter outranks or impersonates
the agent's). ``ptrace``, ``io_uring_setup`` and 32-bit or x32 syscalls are
refused in every mode (``table.py``, ``_loop.py``).
"""

from __future__ import annotations

import enum
import errno
import os
import posixpath
import re
import stat
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from reference_agent import _ptrace
from reference_agent._abi import AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_FOLLOW, AT_SYMLINK_NOFOLLOW
from reference_agent._loop import Rewrite
from reference_agent.landlock import Ruleset, ruleset_for
from reference_agent.mount_rules import MountPlan, mount_plan
from reference_agent.namespace import (
    LocalTarget,
    Namespace,
    Refused,
    RemoteTarget,
    ServiceDirectory,
)
from reference_agent.real_path import Walk, walk

if TYPE_CHECKING:
    from reference_agent.agent import Agent
    from reference_agent.call import Call

__all__ = [
    "ALLOWED_DEVICES",
    "SYSTEM_PATHS",
    "Guard",
    "SandboxError",
    "SandboxRules",
    "Use",
    "guard_for",
]


class SandboxError(ValueError):
    """Sandbox options that cannot be used; the message says which and why."""


class Use(enum.IntFlag):
    """What a call does with a path: only look at it (0), read, write, execute, move it."""

    LOOK = 0
    READ = 1
    WRITE = 2
    EXEC = 4
    #: rename's paths: moving a directory that holds a rule's path would move it out of the rule.
    MOVE = 8


#: Devices every program may open under ``allow_only``: they hold nothing of anyone's.
ALLOWED_DEVICES: Final = (
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
)
#: ``--allow-system``: what dynamically linked programs need to start, and no user data.
SYSTEM_PATHS: Final = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/ld.so.cache",
    "/etc/ld.so.preload",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
)
_PROC_MEM: Final = re.compile(r"^/proc/\d+(?:/task/\d+)?/mem$")


def _absolute(path: str) -> str:
    return posixpath.normpath(os.path.abspath(path))


def _forms(paths: Iterable[str]) -> tuple[str, ...]:
    """Each path as given (made absolute) and as its real path, if that differs."""
    forms: list[str] = []
    for path in paths:
        for form in (_absolute(path), os.path.realpath(path)):
            if form not in forms:
                forms.append(form)
    return tuple(forms)


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(root == "/" or path == root or path.startswith(root + "/") for root in roots)


def _ancestor_of(path: str, roots: Sequence[str]) -> bool:
    prefix = path.rstrip("/") + "/"
    return any(root.startswith(prefix) for root in roots)


@dataclass(frozen=True, slots=True)
class SandboxRules:
    """What ``aviary run --deny/--allow-only/--read-only/--hide`` asked for; absolute paths.

    Each path matches itself and everything below it, by the name given and by
    its real path (``/lib/x`` and ``/usr/lib/x`` on a merged-/usr system).
    """

    deny: tuple[str, ...] = ()
    allow_only: tuple[str, ...] | None = None
    read_only: tuple[str, ...] = ()
    hide: bool = False
    #: Also have the kernel enforce what it can (``landlock.py``, ``mount_rules.py``);
    #: False leaves the agent's checks alone (``--no-landlock``, to measure them).
    landlock: bool = True

    @classmethod
    def build(
        cls,
        *,
        deny: Sequence[str] = (),
        allow_only: Sequence[str] | None = None,
        allow_system: bool = False,
        read_only: Sequence[str] = (),
        hide: bool = False,
        landlock: bool = True,
    ) -> SandboxRules:
        """Rules from command-line paths (relative ones are taken from the current directory).

        Raises:
            SandboxError: an empty path, or ``allow_system`` without ``allow_only``.
        """
        for path in (*deny, *(allow_only or ()), *read_only):
            if not path:
                raise SandboxError("an empty path cannot be a sandbox rule")
        if allow_system and allow_only is None:
            raise SandboxError("--allow-system only widens --allow-only")
        allowed: tuple[str, ...] | None = None
        if allow_only is not None:
            allowed = _forms([*allow_only, *(SYSTEM_PATHS if allow_system else ())])
        return cls(_forms(deny), allowed, _forms(read_only), hide, landlock)

    @property
    def active(self) -> bool:
        return bool(self.deny or self.allow_only is not None or self.read_only)


# -- which arguments are paths ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PathArg:
    """One path argument of a syscall and what the call does with it."""

    path: int  # argument index of the path
    dirfd: int | None  # argument index of its directory descriptor; None: relative to the cwd
    use: Use
    follow: bool = True  # a symlink as the last component is followed
    flags: int | None = None  # argument index of the flags below
    nofollow_bit: int = 0  # flag that stops following (AT_SYMLINK_NOFOLLOW...)
    follow_bit: int = 0  # flag that starts following (AT_SYMLINK_FOLLOW)
    empty_bit: int = 0  # flag that makes "" mean the descriptor itself (AT_EMPTY_PATH)
    optional: bool = False  # NULL means the descriptor itself (utimensat, fanotify_mark)


def _at(
    path: int,
    use: Use,
    follow: bool = True,
    *,
    flags: int | None = None,
    nofollow_bit: int = 0,
    follow_bit: int = 0,
    empty_bit: int = 0,
) -> PathArg:
    """A ``*at`` call's path: the descriptor is the argument before it."""
    return PathArg(path, path - 1, use, follow, flags, nofollow_bit, follow_bit, empty_bit)


def _plain(path: int, use: Use, follow: bool = True) -> PathArg:
    return PathArg(path, None, use, follow)


_L, _W, _X, _MV = Use.LOOK, Use.WRITE, Use.EXEC, Use.WRITE | Use.MOVE
_NOFOLLOW, _FOLLOW, _EMPTY = AT_SYMLINK_NOFOLLOW, AT_SYMLINK_FOLLOW, AT_EMPTY_PATH
IN_DONT_FOLLOW: Final = 0x02000000
FAN_MARK_DONT_FOLLOW: Final = 0x04
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

#: Path-taking syscalls other than the open family, and their path arguments.
PATH_CALLS: Final[Mapping[str, tuple[PathArg, ...]]] = {
    "creat": (_plain(0, _W),),
    "stat": (_plain(0, _L),),
    "lstat": (_plain(0, _L, False),),
    "newfstatat": (_at(1, _L, flags=3, nofollow_bit=_NOFOLLOW, empty_bit=_EMPTY),),
    "statx": (_at(1, _L, flags=2, nofollow_bit=_NOFOLLOW, empty_bit=_EMPTY),),
    "access": (_plain(0, _L),),
    "faccessat": (_at(1, _L),),
    "faccessat2": (_at(1, _L, flags=3, nofollow_bit=_NOFOLLOW, empty_bit=_EMPTY),),
    "readlink": (_plain(0, _L, False),),
    "readlinkat": (_at(1, _L, False),),
    "statfs": (_plain(0, _L),),
    "chdir": (_plain(0, _L),),
    "execve": (_plain(0, _X),),
    "execveat": (_at(1, _X, flags=4, nofollow_bit=_NOFOLLOW, empty_bit=_EMPTY),),
    "mkdir": (_plain(0, _W, False),),
    "mkdirat": (_at(1, _W, False),),
    "rmdir": (_plain(0, _W, False),),
    "unlink": (_plain(0, _W, False),),
    "unlinkat": (_at(1, _W, False),),
    "rename": (_plain(0, _MV, False), _plain(1, _MV, False)),
    "renameat": (_at(1, _MV, False), _at(3, _MV, False)),
    "renameat2": (_at(1, _MV, False), _at(3, _MV, False)),  # RENAME_EXCHANGE moves both
    "link": (_plain(0, _L, False), _plain(1, _W, False)),
    "linkat": (
        _at(1, _L, False, flags=4, follow_bit=_FOLLOW, empty_bit=_EMPTY),
        _at(3, _W, False),
    ),
    "symlink": (_plain(1, _W, False),),
    "symlinkat": (_at(2, _W, False),),
    "mknod": (_plain(0, _W, False),),
    "mknodat": (_at(1, _W, False),),
    "truncate": (_plain(0, _W),),
    "chmod": (_plain(0, _W),),
    "fchmodat": (_at(1, _W),),
    "fchmodat2": (_at(1, _W, flags=3, nofollow_bit=_NOFOLLOW, empty_bit=_EMPTY),),
    "chown": (_plain(0, _W),),
    "lchown": (_plain(0, _W, False),),
    "fchownat": (_at(1, _W, flags=4, nofollow_bit=_NOFOLLOW, empty_bit=_EMPTY),),
    "utime": (_plain(0, _W),),
    "utimes": (_plain(0, _W),),
    "futimesat": (_at(1, _W),),
    "utimensat": (
        PathArg(1, 0, _W, True, 3, nofollow_bit=_NOFOLLOW, empty_bit=_EMPTY, optional=True),
    ),
    "getxattr": (_plain(0, _L),),
    "lgetxattr": (_plain(0, _L, False),),
    "listxattr": (_plain(0, _L),),
    "llistxattr": (_plain(0, _L, False),),
    "setxattr": (_plain(0, _W),),
    "lsetxattr": (_plain(0, _W, False),),
    "removexattr": (_plain(0, _W),),
    "lremovexattr": (_plain(0, _W, False),),
    "getxattrat": (_at(1, _L, flags=2, nofollow_bit=_NOFOLLOW, empty_bit=_EMPTY),),
    "listxattrat": (_at(1, _L, flags=2, nofollow_bit=_NOFOLLOW, empty_bit=_EMPTY),),
    "setxattrat": (_at(1, _W, flags=2, nofollow_bit=_NOFOLLOW, empty_bit=_EMPTY),),
    "removexattrat": (_at(1, _W, flags=2, nofollow_bit=_NOFOLLOW, empty_bit=_EMPTY),),
    "file_getattr": (_at(1, _L, flags=4, nofollow_bit=_NOFOLLOW, empty_bit=_EMPTY),),
    "file_setattr": (_at(1, _W, flags=4, nofollow_bit=_NOFOLLOW, empty_bit=_EMPTY),),
    "inotify_add_watch": (PathArg(1, None, _L, True, 2, nofollow_bit=IN_DONT_FOLLOW),),
    "fanotify_mark": (
        PathArg(4, 3, _L, True, 1, nofollow_bit=FAN_MARK_DONT_FOLLOW, optional=True),
    ),
    "name_to_handle_at": (_at(1, _L, False, flags=4, follow_bit=_FOLLOW, empty_bit=_EMPTY),),
    "quotactl": (PathArg(1, None, _L, optional=True),),
    "acct": (PathArg(0, None, _W, optional=True),),
}
#: Calls that change the file behind a descriptor: (descriptor argument, use). The
#: descriptor's object is checked as its path would be (``/proc/PID/fd/N``), so that a
#: descriptor opened only to look (``O_PATH``) cannot be used to change a read-only file.
FD_CALLS: Final[Mapping[str, tuple[int, Use]]] = {
    "fchmod": (0, _W),
    "fchown": (0, _W),
    "fsetxattr": (0, _W),
    "fremovexattr": (0, _W),
    "ftruncate": (0, _W),
}
#: Path calls whose checked path replaces the program's argument (see ``Guard.check``); not
#: exec (a script's ``$0`` is the path as given) nor chdir (the agent keeps its logical name).
_UNPINNED: Final = frozenset({"execve", "execveat", "chdir", "acct", "quotactl"})
#: The open family: (path argument, descriptor argument, flags argument or None for openat2's struct).
OPEN_CALLS: Final[Mapping[str, tuple[int, int | None, int | None]]] = {
    "open": (0, None, 1),
    "openat": (1, 0, 2),
    "openat2": (1, 0, None),
}
#: Calls that name an AF_UNIX socket by path: (address argument, its length argument or None
#: for sendmsg's struct msghdr, use). bind creates the socket file.
SOCKET_CALLS: Final[Mapping[str, tuple[int, int | None, Use]]] = {
    "connect": (1, 2, Use.READ),
    "sendto": (4, 5, Use.READ),
    "sendmsg": (1, None, Use.READ),
    "bind": (1, 2, Use.WRITE),
}
AF_UNIX: Final = 1
SOCKADDR_UN_SIZE: Final = 110
MSGHDR: Final = struct.Struct("<QIxxxxQQQQi4x")
#: Calls a sandboxed program may not make at all: each gives another way to the files.
REFUSED: Final[Mapping[str, str]] = {
    "chroot": "another root directory",
    "pivot_root": "another root directory",
    "mount": "another view of the files",
    "umount2": "another view of the files",
    "setns": "another mount namespace",
    "open_tree": "another view of the files",
    "open_tree_attr": "another view of the files",
    "move_mount": "another view of the files",
    "fsopen": "another view of the files",
    "fsconfig": "another view of the files",
    "fsmount": "another view of the files",
    "fspick": "another view of the files",
    "mount_setattr": "another view of the files",
    "open_by_handle_at": "opening a file without its path",
    "process_vm_writev": "writing another process's memory",
    "userfaultfd": "changing memory the agent's checked copies live in",
    "pidfd_getfd": "taking another process's descriptor",
    "uselib": "loading a library without its path",
    "swapon": "kernel control",
    "swapoff": "kernel control",
    "bpf": "kernel control",
    "init_module": "kernel control",
    "finit_module": "kernel control",
    "delete_module": "kernel control",
    "kexec_load": "kernel control",
    "kexec_file_load": "kernel control",
    "iopl": "raw port access",
    "ioperm": "raw port access",
}
_SYS_OPENAT2: Final = _ptrace.syscall_number("openat2")
PR_SET_SECCOMP: Final = 22
SECCOMP_MODE_FILTER: Final = 2
SECCOMP_SET_MODE_FILTER: Final = 1
#: Calls refused only with some arguments: a seccomp filter of the program's own, device nodes.
CONDITIONAL: Final = ("seccomp", "prctl", "mknod", "mknodat")
#: Every call the filter traps for the sandbox, besides the namespace's: each is also an
#: entry of the syscall table (``reference_agent.table``), where the report reads it.
SANDBOX_CALLS: Final = frozenset(
    {*PATH_CALLS, *OPEN_CALLS, *SOCKET_CALLS, *FD_CALLS, *REFUSED, *CONDITIONAL}
)

# ELF header fields the interpreter check reads.
_ELF_MAGIC: Final = b"\x7fELF"
_PT_INTERP: Final = 3
#: The kernel follows at most this many ``#!`` interpreters (BINPRM_MAX_RECURSION).
_MAX_SCRIPTS: Final = 4


@dataclass(frozen=True, slots=True)
class _Arg:
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


@dataclass
class Guard:
    """Checks every trapped call of one run against the rules (see the module doc).

    Args:
        rules: the sandbox rules; may be inactive when only the mountlist restricts access.
        namespace: the run's namespace, for mounts and their access letters.
        agent_dirs: the agent's own directories (local copies), allowed under ``allow_only``.
    """

    rules: SandboxRules
    namespace: Namespace
    agent_dirs: Sequence[str] = ()
    refusals: int = 0
    _allowed: tuple[str, ...] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.rules.allow_only is not None:
            allowed = list(self.rules.allow_only)
            # The physical side of a local mount under an allowed path is allowed with it.
            for mount in self.namespace.mounts:
                physical = mount.physical
                if (
                    physical is not None
                    and "://" not in physical
                    and _under(mount.logical, self.rules.allow_only)
                    and not isinstance(self.namespace.resolve(mount.logical), RemoteTarget)
                ):
                    allowed += _forms([physical])
            allowed += _forms(self.agent_dirs)
            self._allowed = tuple(allowed)

    def mount_plan(self) -> MountPlan | None:
        """The kernel's backing of --deny and --read-only (``mount_rules.py``); None: none."""
        if not self.rules.landlock:
            return None
        return mount_plan(self.rules.deny, self.rules.read_only)

    def landlock_ruleset(self, report: Callable[[str], None]) -> Ruleset | None:
        """The part of the rules the kernel enforces (``landlock.py``); None: the agent's alone.

        Raises:
            OSError: the kernel has Landlock and refused the ruleset.
        """
        if not self.rules.landlock:
            return None
        return ruleset_for(self._allowed, self.rules.read_only, ALLOWED_DEVICES, report)

    # -- the filter --------------------------------------------------------------------------

    def trapped_names(self) -> set[str]:
        """Syscalls the filter must trap for the sandbox, besides the namespace's."""
        return set(SANDBOX_CALLS)

    def trapped_numbers(self) -> set[int]:
        return {
            _ptrace.SYSCALL_NUMBERS[name]
            for name in self.trapped_names()
            if name in _ptrace.SYSCALL_NUMBERS
        }

    # -- decisions --------------------------------------------------------------------------

    @property
    def _refusal(self) -> int:
        return errno.ENOENT if self.rules.hide else errno.EACCES

    def _denied(self, path: str, use: Use = Use.LOOK) -> int | None:
        if _under(path, self.rules.deny):
            return self._refusal
        if use & Use.MOVE and _ancestor_of(path, self.rules.deny):
            return errno.EACCES  # renaming /a would carry a denied /a/b out of its rule
        return None

    def _outside(self, path: str, use: Use) -> int | None:
        allowed = self._allowed
        if allowed is None or _under(path, allowed) or path in ALLOWED_DEVICES:
            return None
        if use == Use.LOOK and _ancestor_of(path, allowed):
            return None  # stat("/home") on the way to an allowed /home/me/data
        return self._refusal

    def _read_only(self, path: str, use: Use) -> int | None:
        if not use & Use.WRITE:
            return None
        moving = use & Use.MOVE and _ancestor_of(path, self.rules.read_only)
        return errno.EROFS if moving or _under(path, self.rules.read_only) else None

    def _mount_access(self, logical: str, use: Use) -> int | None:
        mount = self.namespace.mount_for(logical)
        if mount is None or mount.special is not None:
            return None
        return mount.access.errno_for(
            read=bool(use & Use.READ), write=bool(use & Use.WRITE), execute=bool(use & Use.EXEC)
        )

    def decide_logical(self, logical: str, use: Use, *, remote: bool) -> int | None:
        """The refusal for a path as the namespace names it (None: go on)."""
        for verdict in (
            self._denied(logical, use),
            self._outside(logical, use) if remote else None,
            self._read_only(logical, use),
            self._mount_access(logical, use),
        ):
            if verdict is not None:
                return verdict
        return None

    def decide_real(self, real: str, use: Use) -> int | None:
        """The refusal for a local file's real path (None: go on)."""
        if _PROC_MEM.match(real) or real == "/dev/userfaultfd":
            return errno.EACCES  # another process's memory, or one's own agent-written scratch
        for verdict in (
            self._denied(real, use),
            self._outside(real, use),
            self._read_only(real, use),
        ):
            if verdict is not None:
                return verdict
        return None

    # -- the check at each trapped call ---------------------------------------------------------

    def check(self, agent: Agent, call: Call) -> int | Rewrite | None:
        """Refuse ``call`` (a negative errno), let it go on (None), or run it changed (a Rewrite).

        On the way the path arguments are replaced in ``call.registers`` by the
        agent's copies of the checked strings; the caller must make the call
        run with those registers. A local open comes back as a Rewrite: an
        ``openat2`` of the symlink-free path that was checked, with
        ``RESOLVE_NO_SYMLINKS``, so that a symlink swapped in after the check
        makes it fail (ELOOP) instead of leading elsewhere.

        Raises:
            OSError: a path argument cannot be read (EFAULT, ENAMETOOLONG).
        """
        name = call.name
        if name in REFUSED:
            self.refusals += 1
            agent.report_once(
                f"sandbox:{name}",
                f"aviary: sandbox: {name} refused ({REFUSED[name]}; EPERM)",
            )
            return -errno.EPERM
        if name in CONDITIONAL:
            return self._conditional(agent, call)
        pinned: str | None = None
        pins: dict[int, str] = {}
        for arg in self._arguments(call):
            verdict, pinned = self._check_path(agent, call, arg)
            if verdict is not None:
                self.refusals += 1
                return -verdict
            if pinned is not None and arg.index >= 0:
                pins[arg.index] = pinned
        if name in OPEN_CALLS and pinned is not None:
            return self._open_pinned(call, arg, pinned)
        if pins and name not in _UNPINNED and name in PATH_CALLS:
            # The real path that was checked, not the program's (relative, through
            # /proc/self/cwd or a dirfd): a chdir or dup2 racing the check changes nothing.
            addresses = {index: call.scratch_string(path) for index, path in pins.items()}
            registers = call.registers.replace(args=[addresses.get(i) for i in range(6)])
            dirfds = {spec.dirfd for spec in PATH_CALLS[name] if spec.path in pins}
            if dirfds - {None}:
                registers = registers.replace(
                    args=[AT_FDCWD if i in dirfds else None for i in range(6)]
                )
            call.registers = registers
        return None

    def _open_pinned(self, call: Call, arg: _Arg, pinned: str) -> Rewrite:
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

    def _conditional(self, agent: Agent, call: Call) -> int | None:
        name = call.name
        if (name == "seccomp" and call.arg(0) == SECCOMP_SET_MODE_FILTER) or (
            name == "prctl" and call.arg(0) == PR_SET_SECCOMP and call.arg(1) == SECCOMP_MODE_FILTER
        ):
            agent.report_once(
                "sandbox:seccomp", "aviary: sandbox: a seccomp filter of the program's own refused"
            )
            return -errno.EPERM
        if name in ("mknod", "mknodat"):
            mode = call.arg(1 if name == "mknod" else 2)
            if stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
                return -errno.EPERM  # a device node would reach the disk under every rule
            for arg in self._arguments(call):
                verdict, _ = self._check_path(agent, call, arg)
                if verdict is not None:
                    return -verdict
        return None

    def _pin(self, call: Call, index: int) -> str:
        """Read path argument ``index`` once and point the call at the agent's copy of it."""
        raw = call.raw_string(index)
        address = call.pin_bytes(raw + b"\0")
        call.registers = call.registers.replace(
            args=[address if i == index else None for i in range(6)]
        )
        return os.fsdecode(raw)

    def _arguments(self, call: Call) -> list[_Arg]:
        name = call.name
        if name in OPEN_CALLS:
            return [self._open_argument(call, *OPEN_CALLS[name])]
        if name in SOCKET_CALLS:
            socket_path = self._socket_argument(call, *SOCKET_CALLS[name])
            return [socket_path] if socket_path is not None else []
        if name in FD_CALLS:
            at, use = FD_CALLS[name]
            return [_Arg("", call.fd(at), use, True, itself=True)]
        found = []
        for spec in PATH_CALLS.get(name, ()):
            dirfd = call.fd(spec.dirfd) if spec.dirfd is not None else AT_FDCWD
            if spec.optional and call.arg(spec.path) == 0:
                if spec.dirfd is not None:  # the descriptor itself: check its object
                    found.append(_Arg("", dirfd, spec.use, True, itself=True))
                continue
            flags = call.arg(spec.flags) if spec.flags is not None else 0
            text = self._pin(call, spec.path)
            if text == "" and flags & spec.empty_bit:
                found.append(_Arg("", dirfd, spec.use, True, itself=True))
                continue
            follow = (spec.follow and not flags & spec.nofollow_bit) or bool(
                flags & spec.follow_bit
            )
            found.append(_Arg(text, dirfd, spec.use, follow, index=spec.path))
        return found

    def _socket_argument(
        self, call: Call, address_at: int, length_at: int | None, use: Use
    ) -> _Arg | None:
        """The path of an AF_UNIX socket address, pinned like a path (None: no path in it)."""
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
        return _Arg(text, AT_FDCWD, use, follow=use != Use.WRITE)

    def _open_argument(
        self, call: Call, path: int, dirfd: int | None, flags_at: int | None
    ) -> _Arg:
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
        text = self._pin(call, path)
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
        return _Arg(text, fd, use, follow, resolve, flags, mode)

    @staticmethod
    def _descriptor_link(pid: int, dirfd: int) -> str:
        return f"/proc/{pid}/cwd" if dirfd == AT_FDCWD else f"/proc/{pid}/fd/{dirfd}"

    def _base(self, call: Call, arg: _Arg) -> str | int:
        """The real directory a relative path starts from, or the errno that refuses the call.

        A descriptor that is not there is EBADF, one that is not a directory ENOTDIR, as
        the kernel would say; a directory the agent cannot name (deeper than PATH_MAX:
        ENAMETOOLONG) is refused with that errno rather than left unchecked.
        """
        try:
            base = os.readlink(self._descriptor_link(call.pid, arg.dirfd))
        except OSError as exc:
            if exc.errno == errno.ENOENT and arg.dirfd != AT_FDCWD:
                return errno.EBADF
            return exc.errno or errno.EACCES
        return base if base.startswith("/") else errno.ENOTDIR

    def _check_path(self, agent: Agent, call: Call, arg: _Arg) -> tuple[int | None, str | None]:
        """(the refusal or None, the pinned path of an allowed local file or None)."""
        if arg.itself:
            if arg.use == Use.LOOK:
                return None, None  # fstat and the like: the program holds the descriptor
            return self._check_descriptor(call.pid, arg.dirfd, arg.use), None
        if arg.text == "":
            return None, None  # ENOENT from the kernel
        resolved = agent.resolve(call, arg.dirfd, arg.text)
        target = resolved.target
        if isinstance(target, Refused):
            return None, None  # the handler answers DENY/ENOENT mounts
        remote = isinstance(target, RemoteTarget | ServiceDirectory)
        if resolved.logical.startswith("/"):
            verdict = self.decide_logical(resolved.logical, arg.use, remote=remote)
            if verdict is not None:
                return verdict, None
        if remote:
            return None, None
        if isinstance(target, LocalTarget):
            start, base = target.path, "/"
        else:
            start = arg.text
            found = "/" if arg.text.startswith("/") and not arg.in_root else self._base(call, arg)
            if isinstance(found, int):
                return found, None
            base = found
        root = base if arg.in_root else "/"
        verdict, walked = self._check_walk(start, base, arg.use, arg.follow, call.pid, root)
        pinned = walked.pinned if walked is not None and not arg.in_root else None
        if arg.index >= 0 and isinstance(target, LocalTarget):
            pinned = None  # a mount's path: the handler reads the program's name
        return verdict, pinned

    def _check_descriptor(self, pid: int, fd: int, use: Use) -> int | None:
        """The refusal for the object descriptor ``fd`` (AT_FDCWD: the cwd) of ``pid`` holds."""
        link = self._descriptor_link(pid, fd)
        try:
            os.readlink(link)
        except OSError as exc:
            return errno.EBADF if exc.errno == errno.ENOENT else exc.errno or errno.EACCES
        return self._check_walk(link, "/", use, True, pid, "/")[0]

    def check_local(
        self, path: str, base: str, use: Use, follow: bool, tid: int, root: str = "/"
    ) -> int | None:
        """The refusal for a local path of thread ``tid`` (None: allowed)."""
        return self._check_walk(path, base, use, follow, tid, root)[0]

    def _check_walk(
        self, path: str, base: str, use: Use, follow: bool, tid: int, root: str
    ) -> tuple[int | None, Walk | None]:
        found = walk(path, base=base, follow=follow, tid=tid, root=root)
        if found.error is not None:
            return found.error, None
        for passed in found.visited:
            verdict = self._denied(passed)
            if verdict is not None:
                return verdict, None
        if found.real is None:
            # A pipe, a socket, a memfd: no path to deny; but what a memfd runs can be.
            if use & Use.EXEC and found.object_link is not None:
                return self._check_interpreters(found.object_link, base, tid, 0), found
            return None, None
        verdict = self.decide_real(found.real, use)
        if verdict is None and use & Use.EXEC:
            verdict = self._check_interpreters(found.real, base, tid, 0)
        return verdict, found

    def _check_interpreters(self, real: str, base: str, tid: int, depth: int) -> int | None:
        """The ``#!`` interpreter or ELF ``PT_INTERP`` the kernel will load for ``real``."""
        try:
            interpreter = _interpreter(real)
        except OSError as exc:
            return exc.errno or errno.EACCES  # a file the agent cannot read is not run unread
        if interpreter is None:
            return None
        if depth >= _MAX_SCRIPTS:
            return errno.ELOOP
        found = walk(interpreter, base=base, follow=True, tid=tid)
        if found.error is not None:
            return found.error
        for passed in found.visited:
            verdict = self._denied(passed)
            if verdict is not None:
                return verdict
        if found.real is None:
            return errno.EACCES  # an interpreter with no path: nothing the kernel would run
        return self.decide_real(found.real, Use.EXEC) or self._check_interpreters(
            found.real, base, tid, depth + 1
        )

    def check_exec(self, pid: int) -> int | None:
        """The refusal for what ``pid`` runs, at its exec stop (None: allowed).

        At this stop the new program has not run an instruction, and the kernel has
        already opened the program, its ``#!`` interpreter and its ELF interpreter:
        what is checked here is what was loaded, whatever raced the check at
        ``execve`` (a memfd rewritten, a symlink swapped). A file the program maps
        that has no path (a memfd) is its own code and is not refused.
        """
        try:
            loaded = {os.readlink(f"/proc/{pid}/exe")}
            with open(f"/proc/{pid}/maps") as maps:
                for line in maps:
                    fields = line.rstrip("\n").split(maxsplit=5)
                    if len(fields) == 6 and fields[5].startswith("/"):
                        loaded.add(fields[5])
        except OSError as exc:
            return exc.errno or errno.EACCES
        for path in sorted(loaded):
            if path.startswith("/memfd:"):
                continue
            verdict = self.decide_real(path.removesuffix(" (deleted)"), Use.EXEC)
            if verdict is not None:
                return verdict
        return None

    def check_program(self, logical: str, local: str) -> int | None:
        """The refusal for the first program, which is exec'd before anything is trapped.

        Args:
            logical: its path in the namespace; local: the file that will be executed.
        """
        verdict = self.decide_logical(logical, Use.EXEC, remote=False)
        return verdict or self.check_local(local, "/", Use.EXEC, True, os.getpid())


def _interpreter(real: str) -> str | None:
    """What the kernel loads to run the file at ``real``: a ``#!`` line's program or PT_INTERP.

    ``real`` may be a ``/proc/PID/fd/N`` link to a memfd: it is opened through the link.

    Raises:
        OSError: a regular file the agent cannot open (the caller refuses it).
    """
    try:
        if not stat.S_ISREG(os.stat(real).st_mode):
            return None
    except OSError:
        return None  # gone: the kernel answers ENOENT
    nofollow = 0 if real.startswith("/proc/") else os.O_NOFOLLOW
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | nofollow)
    try:
        head = os.pread(fd, 256, 0)
        if head.startswith(b"#!"):
            words = head[2:].split(b"\n", 1)[0].split()
            return os.fsdecode(words[0]) if words else None
        if head.startswith(_ELF_MAGIC) and len(head) >= 64:
            return _elf_interpreter(fd, head)
    except struct.error:
        return None  # a truncated ELF header: the kernel refuses it (ENOEXEC)
    finally:
        os.close(fd)
    return None


def _elf_interpreter(fd: int, head: bytes) -> str | None:
    wide = head[4] == 2  # ELFCLASS64
    order = "<" if head[5] == 1 else ">"
    if wide:
        (phoff,) = struct.unpack_from(order + "Q", head, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
    else:
        (phoff,) = struct.unpack_from(order + "I", head, 28)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
    table = os.pread(fd, phentsize * min(phnum, 256), phoff)
    for index in range(min(phnum, len(table) // max(phentsize, 1))):
        entry = table[index * phentsize : (index + 1) * phentsize]
        if struct.unpack_from(order + "I", entry, 0)[0] != _PT_INTERP:
            continue
        if wide:
            (offset,) = struct.unpack_from(order + "Q", entry, 8)
            (size,) = struct.unpack_from(order + "Q", entry, 32)
        else:
            (offset,) = struct.unpack_from(order + "I", entry, 4)
            (size,) = struct.unpack_from(order + "I", entry, 16)
        return os.fsdecode(os.pread(fd, min(size, 4096), offset).split(b"\0", 1)[0])
    return None


def guard_for(
    rules: SandboxRules | None, namespace: Namespace, agent_dirs: Sequence[str] = ()
) -> Guard | None:
    """A guard when the rules or the mountlist's access letters restrict anything, else None."""
    restricted_mounts = any(
        m.special is None and not (m.access.read and m.access.write and m.access.execute)
        for m in namespace.mounts
    )
    if (rules is None or not rules.active) and not restricted_mounts:
        return None
    return Guard(rules or SandboxRules(), namespace, tuple(agent_dirs))
