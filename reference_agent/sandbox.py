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
   meanwhile (``_sandbox_args.py``);
2. resolves it: the namespace gives the logical path and its mount; a local
   file is then walked in the program's view (``real_path.walk``): symlinks,
   ``..``, ``openat`` directory descriptors, ``/proc/self/root``,
   ``/proc/PID/cwd``, ``/dev/fd/N``;
3. decides (``sandbox_rules.py``): a denied tree anywhere on the way (the
   logical path, a directory passed through, a symlink read, the end)
   refuses; under ``allow_only`` the end must lie in an allowed tree (its
   ancestors may only be looked at); writing into a read-only tree is EROFS;
   a mount without the access letter is EACCES. An ``execve`` also checks the script interpreter (``#!``) and
   the ELF program interpreter, which the kernel opens without a syscall
   (``_exec_files.py``).

What each call does with its arguments is written in its entry of the
syscall table (``table.py``). In sandbox mode the filter also traps the path
calls the namespace does not need, and refuses the calls that would let a
program get around the agent: mounting and ``chroot``/``setns`` (another view
of the files), opening by file handle, writing other processes' memory,
stealing their descriptors, loading kernel code, making device nodes, and
installing a seccomp filter of its own (a ``SECCOMP_RET_USER_NOTIF`` or
``RET_TRACE`` filter outranks or impersonates the agent's). ``ptrace``,
``io_uring_setup`` and 32-bit or x32 syscalls are refused in every mode
(``table.py``, ``_loop.py``).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from reference_agent import _ptrace
from reference_agent._abi import AT_FDCWD
from reference_agent._exec_files import loaded_interpreter
from reference_agent._loop import Rewrite
from reference_agent._sandbox_args import Argument, arguments, open_pinned
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
from reference_agent.sandbox_rules import (
    ALLOWED_DEVICES,
    SYSTEM_PATHS,
    Policy,
    SandboxError,
    SandboxRules,
)
from reference_agent.syscall_args import Use

if TYPE_CHECKING:
    from reference_agent.agent import Agent
    from reference_agent.call import Call
    from reference_agent.table import Entry

__all__ = [
    "ALLOWED_DEVICES",
    "SYSTEM_PATHS",
    "Guard",
    "SandboxError",
    "SandboxRules",
    "Use",
    "guard_for",
]


PR_SET_SECCOMP: Final = 22
SECCOMP_MODE_FILTER: Final = 2
SECCOMP_SET_MODE_FILTER: Final = 1

#: The kernel follows at most this many ``#!`` interpreters (BINPRM_MAX_RECURSION).
_MAX_SCRIPTS: Final = 4


@dataclass
class Guard(Policy):
    """Checks every trapped call of one run against the rules (see the module doc).

    Args:
        rules: the sandbox rules; may be inactive when only the mountlist restricts access.
        namespace: the run's namespace, for mounts and their access letters.
        agent_dirs: the agent's own directories (local copies), allowed under ``allow_only``.
        calls: the syscall table's entries the sandbox checks or refuses, by name
            (``table.guarded_calls``): what each call does with its arguments.
    """

    calls: Mapping[str, Entry] = field(kw_only=True)
    refusals: int = 0

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
        return set(self.calls)

    def trapped_numbers(self) -> set[int]:
        return {
            _ptrace.SYSCALL_NUMBERS[name]
            for name in self.trapped_names()
            if name in _ptrace.SYSCALL_NUMBERS
        }

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
        entry = self.calls.get(name)
        if entry is None:
            return None  # a call of the namespace's alone: nothing of the sandbox's in it
        if entry.refused_because:
            self.refusals += 1
            agent.report_once(
                f"sandbox:{name}",
                f"aviary: sandbox: {name} refused ({entry.refused_because}; EPERM)",
            )
            return -errno.EPERM
        if entry.conditional:
            return self._conditional(agent, call)
        pinned: str | None = None
        pins: dict[int, str] = {}
        for arg in arguments(call, entry):
            verdict, pinned = self._check_path(agent, call, arg)
            if verdict is not None:
                self.refusals += 1
                return -verdict
            if pinned is not None and arg.index >= 0:
                pins[arg.index] = pinned
        if entry.opens is not None and pinned is not None:
            return open_pinned(call, arg, pinned)
        if pins and entry.pin_paths and entry.paths:
            # The real path that was checked, not the program's (relative, through
            # /proc/self/cwd or a dirfd): a chdir or dup2 racing the check changes nothing.
            addresses = {index: call.scratch_string(path) for index, path in pins.items()}
            registers = call.registers.replace(args=[addresses.get(i) for i in range(6)])
            dirfds = {spec.dirfd for spec in entry.paths if spec.path in pins}
            if dirfds - {None}:
                registers = registers.replace(
                    args=[AT_FDCWD if i in dirfds else None for i in range(6)]
                )
            call.registers = registers
        return None

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
            for arg in arguments(call, self.calls[name]):
                verdict, _ = self._check_path(agent, call, arg)
                if verdict is not None:
                    return -verdict
        return None

    @staticmethod
    def _descriptor_link(pid: int, dirfd: int) -> str:
        return f"/proc/{pid}/cwd" if dirfd == AT_FDCWD else f"/proc/{pid}/fd/{dirfd}"

    def _base(self, call: Call, arg: Argument) -> str | int:
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

    def _check_path(self, agent: Agent, call: Call, arg: Argument) -> tuple[int | None, str | None]:
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
            interpreter = loaded_interpreter(real)
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


def guard_for(
    rules: SandboxRules | None,
    namespace: Namespace,
    calls: Mapping[str, Entry],
    agent_dirs: Sequence[str] = (),
) -> Guard | None:
    """A guard when the rules or the mountlist's access letters restrict anything, else None.

    Args:
        calls: the syscall table's entries the sandbox checks or refuses
            (``table.guarded_calls()``).
    """
    restricted_mounts = any(
        m.special is None and not (m.access.read and m.access.write and m.access.execute)
        for m in namespace.mounts
    )
    if (rules is None or not rules.active) and not restricted_mounts:
        return None
    return Guard(rules or SandboxRules(), namespace, tuple(agent_dirs), calls=calls)
