"""What keeps a checked path call from being raced between the check and the kernel.

Two races are closed here, for a run with a sandbox (``sandbox.Guard``):

- memory: the checked copies of a call's paths go into a sealed, read-only
  region of the caller's address space (``sealed_pins``), so that no thread or
  ``CLONE_VM`` sibling can rewrite them before the kernel reads them;
- names: calls that could swap a directory on a checked path for a symlink
  never run beside a checked call that the kernel walks without
  ``RESOLVE_NO_SYMLINKS`` (``rename_gate``).

The agent asks ``before`` ahead of the sandbox's check, ``settle`` on the
outcome, and tells ``follow`` of every fork, exec and end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from reference_agent._loop import Park, Rewrite
from reference_agent._ptrace import Event, ExecEvent, Exited, ForkEvent, Killed
from reference_agent.rename_gate import CHANGERS, RenameGate
from reference_agent.sealed_pins import SealedPins

if TYPE_CHECKING:
    from reference_agent.call import Call
    from reference_agent.table import Entry

__all__ = ["GATED", "RaceGuards", "pinning_calls"]

#: Checked calls the kernel walks without RESOLVE_NO_SYMLINKS that change something, make
#: a name (``bind``) or read data (xattr values): never run beside a changer. The other
#: looking calls (``stat``, ``access``, ``readlink``, ``listxattr``...) are not held up:
#: it would cost each a second stop (docs/sandbox.md says what that leaves).
GATED: Final = frozenset(
    {
        "creat",
        "mkdir",
        "mkdirat",
        "mknod",
        "mknodat",
        "truncate",
        "chmod",
        "fchmodat",
        "fchmodat2",
        "chown",
        "lchown",
        "fchownat",
        "utime",
        "utimes",
        "futimesat",
        "utimensat",
        "setxattr",
        "lsetxattr",
        "removexattr",
        "lremovexattr",
        "setxattrat",
        "removexattrat",
        "file_setattr",
        "getxattr",
        "lgetxattr",
        "getxattrat",
        "bind",
        "acct",
    }
)


def pinning_calls(guarded: Mapping[str, Entry]) -> frozenset[str]:
    """Calls whose path copies the sandbox writes (paths, open paths, socket addresses):
    only these need a sealed region."""
    return frozenset(
        name for name, entry in guarded.items() if entry.paths or entry.opens or entry.socket
    )


class RaceGuards:
    """The sealed copies and the rename gate of one run (see the module doc).

    Args:
        guarded: the syscall table's entries the sandbox checks.
        requeue: hands an event taken while injecting back to the tracer loop.
        retry: hands a parked call to the handler again (``TracerLoop.retry``).
        report_once: says a line the first time its key comes up.
    """

    def __init__(
        self,
        guarded: Mapping[str, Entry],
        requeue: Callable[[Event], None],
        retry: Callable[[int], None],
        report_once: Callable[[str, str], None],
    ) -> None:
        self.pinning = pinning_calls(guarded)
        self.pins = SealedPins(requeue, report_once)
        self.gate = RenameGate(retry)

    def before(self, call: Call) -> Rewrite | Park | None:
        """Give ``call`` its sealed area and pass it through the gate; None: go on and check.

        A Rewrite restarts the call (a region was just made, or it is refused: no
        region could be); Park leaves it stopped (it waits at the gate, or is gone).
        """
        name = call.name
        if name not in self.pinning:
            return None
        area = self.pins.area_for(call.pid, call.registers)
        if isinstance(area, Rewrite | Park):
            return area
        call.pins = area
        changer = name in CHANGERS
        if changer or name in GATED:
            return self.gate.admit(call.pid, changer)
        return None

    def settle(
        self, call: Call, outcome: int | Rewrite | Park | None
    ) -> int | Rewrite | Park | None:
        """``outcome``, made to let go of the gate when the call is done."""
        return self.gate.until_exit(call.pid, outcome, call.registers)

    def follow(self, event: Event) -> None:
        """Keep the address spaces and the gate's holders up to date with ``event``."""
        if isinstance(event, ForkEvent):
            self.pins.forked(event.pid, event.child)
        elif isinstance(event, ExecEvent):
            self.pins.exec_done(event.pid, event.former_pid)
            self.gate.release(event.pid)
            self.gate.release(event.former_pid)
        elif isinstance(event, Exited | Killed):
            self.pins.gone(event.pid)
            self.gate.release(event.pid)
