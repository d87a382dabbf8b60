"""An ``execve`` rewritten so its interpreters come through the namespace (see ``interpreters``).

The new argv is built in the tracee below its stack, as path rewrites are: the
original argument strings stay where they are and only the pointer array and
the new strings (loader, option, program path) are written.
"""

from __future__ import annotations

import errno
import os
import posixpath
import struct

from reference_agent import _ptrace
from reference_agent._abi import AT_FDCWD
from reference_agent._loop import Rewrite
from reference_agent.agent import Agent
from reference_agent.call import NATIVE, Call, Outcome
from reference_agent.interpreters import ExecPlan, plan_exec
from reference_agent.namespace import LocalTarget

__all__ = ["exec_through_namespace"]

_SYS_EXECVE = _ptrace.syscall_number("execve")
_POINTER = struct.Struct("<Q")
#: Most argv entries read (far above what ARG_MAX lets a program pass).
MAX_ARGS = 1 << 18
_PAGE = 4096


def _pointers(call: Call, address: int) -> list[int]:
    """The NULL-terminated pointer array at ``address`` (argv), read a page at a time."""
    found: list[int] = []
    while address and len(found) < MAX_ARGS:
        chunk = call.read(address, _PAGE - address % _PAGE)
        for (pointer,) in _POINTER.iter_unpack(chunk[: len(chunk) - len(chunk) % 8]):
            if pointer == 0:
                return found
            found.append(pointer)
        address += len(chunk)
    raise OSError(errno.E2BIG, "argv too long")


def _local_path(call: Call, dirfd: int, path: str) -> str:
    """Where the kernel would find ``path`` itself (the agent left it native)."""
    if path.startswith("/"):
        return path
    base = f"/proc/{call.pid}/cwd" if dirfd == AT_FDCWD else f"/proc/{call.pid}/fd/{dirfd}"
    return posixpath.join(os.readlink(base), path)


def exec_through_namespace(agent: Agent, call: Call, dirfd: int, index: int) -> Outcome | None:
    """The exec of path argument ``index`` with its interpreters found through the namespace.

    Returns:
        None when the usual handling is right (no interpreter moved, a remote
        program, a path the kernel will refuse anyway); else the rewrite or errno.
    """
    path = call.string(index)
    if not path:
        return None
    resolved = agent.resolve(call, dirfd, path)
    if isinstance(resolved.target, LocalTarget):
        assert resolved.rewrite is not None
        local = resolved.rewrite
    elif resolved.target is NATIVE:
        local = _local_path(call, dirfd, path)
    else:
        return None
    if not (os.path.isfile(local) and os.access(local, os.X_OK)):
        return None  # ENOENT, EACCES...: the kernel says so
    # The loader or a script's interpreter opens the program by name, through the agent.
    name: int | str = call.arg(index)
    if not path.startswith("/") and dirfd != AT_FDCWD:
        name = resolved.logical if isinstance(resolved.target, LocalTarget) else local
    try:
        plan = plan_exec(agent.namespace, local, name, _pointers(call, call.arg(index + 1)))
    except OSError:
        return None  # an argv the kernel will reject with EFAULT or E2BIG itself
    if plan is None or isinstance(plan, int):
        return plan
    return _rewrite(call, plan, call.arg(index + 2))


def _rewrite(call: Call, plan: ExecPlan, envp: int) -> Rewrite:
    addresses = [a if isinstance(a, int) else call.scratch_string(a) for a in plan.argv]
    array = call.scratch_bytes(b"".join(_POINTER.pack(a) for a in [*addresses, 0]))
    registers = call.registers.replace(
        nr=_SYS_EXECVE, args=(call.scratch_string(plan.file), array, envp)
    )
    return Rewrite(registers)
