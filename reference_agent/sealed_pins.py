"""Checked paths pinned in memory the program cannot write: one sealed region per address space.

Theory of operation: the sandbox copies each path argument once and points the
call at the copy, so that what the kernel reads is what was checked. A copy on
the caller's stack can still be rewritten, between the check and the kernel's
read, by any thread or ``clone(CLONE_VM)`` sibling that shares the memory. So
in sandbox mode the copies go into a region of the program's address space
that it cannot write:

- at the first trapped call in an address space, the agent makes the program
  run ``mmap(PROT_READ)`` and ``mseal`` on it (``_inject``), then checks in
  ``/proc/PID/smaps`` that the region is read-only and sealed. Sealing makes
  the kernel refuse ``mprotect``, ``munmap``, ``mremap``, ``mmap(MAP_FIXED)``
  over it and ``madvise`` that would discard it, to every thread, with no trap;
- the agent writes into it through ``/proc/PID/mem``, which a tracer may write
  in read-only pages; the program's own writes fault (and the sandbox refuses
  ``/proc/*/mem``, ``process_vm_writev``, ``ptrace``, ``userfaultfd``);
- each thread has its own slot (a thread is in one syscall at a time), in two
  halves used in turn, so that a call restarted after a signal, whose
  arguments point at the previous copies, never has them overwritten while
  they are read again;
- a ``fork`` child inherits the region (sealed mappings are copied sealed);
  threads, ``vfork`` and ``CLONE_VM`` children share it (``kcmp``); an
  ``execve`` gets a new address space and a new region at its first call.

A kernel without ``mseal`` (before 6.10) keeps the copies on the stack, and
the run says so once. Any other failure to make the region (no memory left, the
region changed before it was sealed) refuses the call: it never runs on copies
the program could rewrite.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from reference_agent import _ptrace
from reference_agent._inject import inject, restart_registers
from reference_agent._loop import Park, Rewrite
from reference_agent._ptrace import Event, Registers

__all__ = ["PinArea", "SealedPins"]

_SLOT: Final = 64 * 1024  # bytes per thread: two halves, each room for a call's copies
_HALF: Final = _SLOT // 2
_SLOTS_PER_REGION: Final = 16  # 1 MiB of address space, reserved, not used
_REGION: Final = _SLOT * _SLOTS_PER_REGION
_PROT_READ: Final = 1
_MAP_ANONYMOUS_PRIVATE: Final = 0x02 | 0x20 | 0x4000  # MAP_NORESERVE too: no memory until used
_NO_FD: Final = (1 << 64) - 1
_SYS_MMAP: Final = _ptrace.syscall_number("mmap")
_SYS_MSEAL: Final = 462
_SYS_KCMP: Final = 312
_KCMP_VM: Final = 1
_LIBC: Final = ctypes.CDLL(None, use_errno=True)
_MAX_ERRNO: Final = 4095


def _same_memory(pid: int, other: int) -> bool:
    """Whether two tids share one address space; True when the kernel cannot tell (the
    safe side: a shared slot table over separate memory only wastes slots)."""
    result = _LIBC.syscall(_SYS_KCMP, pid, other, _KCMP_VM, 0, 0)
    return bool(result == 0 or result < 0)


@dataclass
class _Space:
    """One address space: its sealed regions, which tid owns which slot, a /proc/PID/mem."""

    regions: list[int] = field(default_factory=list)
    slots: dict[int, int] = field(default_factory=dict)
    halves: dict[int, int] = field(default_factory=dict)
    free: list[int] = field(default_factory=list)
    mem: int | None = None
    tids: set[int] = field(default_factory=set)

    def copy(self) -> _Space:
        """A fork child's space: the same regions (inherited), no slots taken yet."""
        space = _Space(regions=list(self.regions))
        for base in space.regions:
            space.free += [base + i * _SLOT for i in range(_SLOTS_PER_REGION)]
        return space

    def close(self) -> None:
        if self.mem is not None:
            os.close(self.mem)
            self.mem = None


class PinArea:
    """The half-slot one call's copies go into, filled downwards."""

    __slots__ = ("_low", "_mem", "_top")

    def __init__(self, mem: int, low: int) -> None:
        self._mem = mem
        self._low = low
        self._top = low + _HALF

    def write(self, data: bytes) -> int:
        """Copy ``data`` into the area, 16-byte aligned; return its address in the program.

        Raises:
            OSError: ENOMEM when the call's copies do not fit; the write's errno.
        """
        address = (self._top - len(data)) & ~15
        if address < self._low:
            raise OSError(errno.ENOMEM, "the sealed copies of one call do not fit")
        if os.pwrite(self._mem, data, address) != len(data):
            raise OSError(errno.EIO, "short write into the sealed copies")
        self._top = address
        return address

    def fits(self, length: int) -> bool:
        return ((self._top - length) & ~15) >= self._low


@dataclass
class SealedPins:
    """The sealed regions of every traced address space (see the module doc).

    Args:
        requeue: hands an event taken while injecting back to the tracer loop.
        report: says a line once.
    """

    requeue: Callable[[Event], None]
    report: Callable[[str, str], None]
    _spaces: dict[int, _Space] = field(default_factory=dict)
    #: False once the kernel refused to seal: copies stay on the stack.
    usable: bool = True

    def area_for(self, pid: int, registers: Registers) -> PinArea | Rewrite | Park | None:
        """Where the copies of ``pid``'s call go; a Rewrite restarts the call after a region
        was made; Park: the tracee is gone or taken over (leave it alone); None: on the
        stack (this kernel cannot seal)."""
        if not self.usable:
            return None
        space = self._space(pid)
        slot = space.slots.get(pid)
        if slot is None and space.free:
            slot = space.slots[pid] = space.free.pop()
        if slot is None:
            return self._new_region(pid, space, registers)
        if space.mem is None:
            space.mem = os.open(f"/proc/{pid}/mem", os.O_RDWR | os.O_CLOEXEC)
        half = space.halves[pid] = space.halves.get(pid, 0) ^ 1
        return PinArea(space.mem, slot + half * _HALF)

    def _space(self, pid: int) -> _Space:
        space = self._spaces.get(pid)
        if space is None:
            space = self._spaces[pid] = _Space()
        space.tids.add(pid)
        return space

    def _new_region(self, pid: int, space: _Space, registers: Registers) -> Rewrite | Park:
        def plan(results: list[int]) -> tuple[int, tuple[int, ...]] | None:
            if not results:
                return _SYS_MMAP, (0, _REGION, _PROT_READ, _MAP_ANONYMOUS_PRIVATE, _NO_FD, 0)
            if len(results) == 1 and not _failed(results[0]):
                return _SYS_MSEAL, (results[0], _REGION, 0)
            return None

        results = inject(pid, registers, plan, self.requeue)
        if results is None:
            return Park()  # gone: its end is the loop's to handle
        refusal = None
        if _failed(results[0]):
            refusal = -results[0]
        elif results[1] == -errno.ENOSYS:
            self.usable = False
            self.report(
                "sandbox:sealed",
                "aviary: sandbox: this kernel cannot seal memory (no mseal); path copies stay "
                "on the stack, where a thread sharing the program's memory can rewrite them "
                "after the check",
            )
        elif _failed(results[1]):
            refusal = -results[1]
        elif not _sealed_read_only(pid, results[0]):
            refusal = errno.EPERM  # changed by another thread before it was sealed
        else:
            space.regions.append(results[0])
            space.free += [results[0] + i * _SLOT for i in range(_SLOTS_PER_REGION)]
        if refusal is not None:
            # Fail closed: without a region the call is refused, never run on the stack.
            self.report(
                "sandbox:sealed-failed",
                f"aviary: sandbox: pid {pid}: no sealed region for checked paths "
                f"({errno.errorcode.get(refusal, refusal)}); its path calls are refused",
            )
            return Rewrite(registers.replace(result=-refusal))
        return Rewrite(restart_registers(registers))  # the call traps again, now with a slot

    # -- following address spaces ----------------------------------------------------------

    def forked(self, parent: int, child: int) -> None:
        space = self._space(parent)
        if _same_memory(parent, child):
            self._spaces[child] = space
            space.tids.add(child)
        else:
            self._spaces[child] = space.copy()
            self._spaces[child].tids.add(child)

    def exec_done(self, pid: int, former: int) -> None:
        """``pid`` (formerly ``former``) runs a new program: a new, empty address space."""
        for tid in {pid, former}:
            self.gone(tid)

    def gone(self, tid: int) -> None:
        space = self._spaces.pop(tid, None)
        if space is None:
            return
        space.tids.discard(tid)
        slot = space.slots.pop(tid, None)
        space.halves.pop(tid, None)
        if slot is not None:
            space.free.append(slot)
        if not space.tids:
            space.close()


def _failed(result: int) -> bool:
    return -_MAX_ERRNO <= result < 0


def _sealed_read_only(pid: int, base: int) -> bool:
    """Whether ``pid``'s mapping at ``base`` is read-only, private and sealed (smaps ``sl``)."""
    try:
        with open(f"/proc/{pid}/smaps") as smaps:
            inside = False
            for line in smaps:
                head = line.split(maxsplit=2)
                if "-" in head[0] and len(head) > 1 and len(head[1]) == 4:
                    start = int(head[0].split("-")[0], 16)
                    inside = start == base
                    fields = line.split()
                    if inside and (fields[1] != "r--p" or len(fields) != 5 or fields[4] != "0"):
                        return False  # writable, shared or a file's: not the agent's region
                elif inside and line.startswith("VmFlags:"):
                    return "sl" in line.split()[1:]
    except OSError:
        return False
    return False
