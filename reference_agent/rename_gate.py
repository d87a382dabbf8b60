"""Calls that change which directory a name leads to never run while a checked path is in use.

Theory of operation: the sandbox checks a path, then lets the kernel walk the
checked, symlink-free real path. The open family walks it with
``RESOLVE_NO_SYMLINKS``; the other path calls (``link``, ``rename``, ``mkdir``,
``chmod``...) have no such flag, so a directory on the path swapped for a
symlink after the check (``renameat2(RENAME_EXCHANGE)``, or ``rmdir`` then
``symlink``) would lead the kernel elsewhere.

Only a few calls can put a symlink where a directory was: those that remove or
replace a name (``rename*``, ``rmdir``, ``unlink*``) or make one (``symlink*``,
``link*``, ``rename*``). In sandbox mode every one of them is trapped, for every
process of the run. So the gate is a readers-writer lock over the run's
namespace, held from a call's check to its exit stop:

- a *changer* (the calls above) runs alone: only when no checked call is in
  flight, and nothing is admitted while it runs;
- a *checked* call (the other pinned path calls that change something, and
  ``bind``) runs alongside other checked calls, never alongside a changer, and
  waits behind a changer that waits (changers are not starved).

A call that must wait is parked at its seccomp stop (``Park``) and handed to
the handler again (``TracerLoop.retry``) when the gate opens; it is checked
only once admitted. A process that dies or execs in flight releases its hold.
Calls that only look (``stat``, ``access``, ``readlink``, ``getxattr``...) are
not gated: it would cost them a second stop each (see docs/sandbox.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from reference_agent._loop import Park, Rewrite
from reference_agent._ptrace import Registers

__all__ = ["CHANGERS", "RenameGate"]

#: Calls that can remove a directory from a path or put a symlink (or any name) into it.
CHANGERS: Final = frozenset(
    {
        "rename",
        "renameat",
        "renameat2",
        "rmdir",
        "unlink",
        "unlinkat",
        "symlink",
        "symlinkat",
        "link",
        "linkat",
    }
)


@dataclass
class RenameGate:
    """The readers-writer lock of the module doc, over one run's tracees.

    Args:
        retry: hands a parked caller's call to the handler again (``TracerLoop.retry``).
    """

    retry: Callable[[int], None]
    _readers: set[int] = field(default_factory=set)
    _writer: int | None = None
    _waiting: list[tuple[int, bool]] = field(default_factory=list)  # (tid, is a changer)
    #: Switched off only by the negative control that shows what the gate holds.
    enabled: bool = True

    def admit(self, tid: int, changer: bool) -> Park | None:
        """Let ``tid``'s call be checked and run (None), or park it until the gate opens."""
        if not self.enabled:
            return None
        if changer:
            free = self._writer is None and not self._readers
        else:
            free = self._writer is None and not any(waits for _, waits in self._waiting)
        if not free:
            self._waiting = [(waiter, kind) for waiter, kind in self._waiting if waiter != tid]
            self._waiting.append((tid, changer))
            return Park()
        if changer:
            self._writer = tid
        else:
            self._readers.add(tid)
        return None

    def holds(self, tid: int) -> bool:
        return tid == self._writer or tid in self._readers

    def until_exit(
        self, tid: int, outcome: int | Rewrite | Park | None, registers: Registers
    ) -> int | Rewrite | Park | None:
        """The call's outcome, made to release the gate at its exit stop (or now, if it
        does not run in the kernel)."""
        if not self.holds(tid):
            return outcome
        if outcome is None:
            return Rewrite(registers, on_exit=self._releaser(tid, None))
        if isinstance(outcome, Rewrite):
            return Rewrite(outcome.registers, on_exit=self._releaser(tid, outcome.on_exit))
        self.release(tid)  # refused, emulated or parked: nothing runs in the kernel
        return outcome

    def _releaser(
        self, tid: int, then: Callable[[int], int | None] | None
    ) -> Callable[[int], int | None]:
        def at_exit(result: int) -> int | None:
            replaced = then(result) if then is not None else None
            self.release(tid)
            return replaced

        return at_exit

    def release(self, tid: int) -> None:
        """``tid``'s call is done (or ``tid`` is gone): open the gate for who waits."""
        self._waiting = [(waiter, kind) for waiter, kind in self._waiting if waiter != tid]
        if tid == self._writer:
            self._writer = None
        elif tid in self._readers:
            self._readers.discard(tid)
        else:
            return
        if self._writer is None and not self._readers and self._waiting:
            waiting, self._waiting = self._waiting, []
            for waiter, _ in waiting:
                self.retry(waiter)  # admitted again, or parked again in order
