"""One trapped syscall as the handlers see it, and what a handler answers.

A :class:`Call` is read at its seccomp stop: its number, registers and helpers
to read the program's memory; a handler answers an :data:`Outcome`. Paths are
:class:`Resolved` by the namespace into remote targets, local paths or
refusals; :data:`NATIVE` means the kernel can do it alone.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from reference_agent import _memory
from reference_agent._loop import Park, Rewrite
from reference_agent._ptrace import Registers, SeccompStop
from reference_agent.namespace import LocalTarget, Refused, RemoteTarget, ServiceDirectory
from reference_agent.sealed_pins import PinArea

__all__ = ["NATIVE", "SCRATCH_GAP", "Call", "Native", "Outcome", "Resolved"]

#: What a handler answers: None (run natively), an int (the emulated result,
#: -errno on failure), a Rewrite of the call, or Park (wait for a lock).
Outcome = int | Rewrite | Park | None
#: Bytes kept clear below the stack pointer before the agent's scratch strings,
#: so that a signal frame pushed during a restarted syscall cannot reach them.
SCRATCH_GAP = 16 * 1024


class Native:
    """Marker: the path needs no help from the agent; let the kernel resolve it."""


NATIVE = Native()


@dataclass(frozen=True, slots=True)
class Resolved:
    """Where a path argument leads: a remote target, a local path, or a refusal."""

    logical: str
    target: RemoteTarget | LocalTarget | ServiceDirectory | Refused | Native
    rewrite: str | None = None  # a local path to put in place of the argument


class Call:
    """One trapped syscall at its seccomp stop, with helpers to read its arguments.

    Besides its arguments a call carries what answering it reached, for the
    trace, the summary and error messages: ``mount``, the endpoint of the
    remote mount it used ("local" until it reaches one), and ``subject``, what
    it acted on (a logical path, ``fd N (path)``; None before it names one).
    """

    __slots__ = (
        "_scratch",
        "_stop",
        "mount",
        "name",
        "nr",
        "pid",
        "pins",
        "registers",
        "subject",
    )

    def __init__(
        self,
        pid: int,
        nr: int,
        name: str,
        registers: Registers,
        stop: SeccompStop | None = None,
    ) -> None:
        self.pid = pid
        self.nr = nr
        self.name = name
        self.registers = registers
        #: This call's stop, with what the compiled fast path read of it (None: nothing).
        self._stop = stop
        self._scratch = registers.sp - SCRATCH_GAP
        #: Memory the program cannot write, for the copies the sandbox checks (None: the stack).
        self.pins: PinArea | None = None
        self.mount = "local"
        self.subject: str | None = None

    @property
    def on_remote_mount(self) -> bool:
        """Whether answering this call has reached a remote endpoint."""
        return self.mount != "local"

    def arg(self, index: int) -> int:
        return self.registers.arg(index)

    def sarg(self, index: int) -> int:
        """Argument ``index`` as a signed 64-bit value (an fd, AT_FDCWD, an offset)."""
        value = self.registers.arg(index)
        return value - (1 << 64) if value >> 63 else value

    def fd(self, index: int) -> int:
        """Argument ``index`` as a C int (descriptors are ints, upper bits ignored)."""
        value = self.registers.arg(index) & 0xFFFFFFFF
        return value - (1 << 32) if value >> 31 else value

    def string(self, index: int) -> str:
        """The NUL-terminated string argument ``index``."""
        return os.fsdecode(self.raw_string(index))

    def raw_string(self, index: int) -> bytes:
        """The NUL-terminated string argument ``index``, as bytes without the NUL."""
        address = self.registers.arg(index)
        if address == 0:
            raise OSError(errno.EFAULT, "NULL path")
        known = self._stop.path if self._stop is not None else None
        if known is not None and known[0] == address:
            return known[1]
        return _memory.read_c_string(self.pid, address)

    def seen_behind(self, fd: int) -> tuple[int, int] | None:
        """The (device, inode) descriptor ``fd`` named when the compiled fast path stat'ed it
        at this stop; None when it did not."""
        seen = self._stop.descriptor if self._stop is not None else None
        return (seen[1], seen[2]) if seen is not None and seen[0] == fd else None

    def read(self, address: int, length: int) -> bytes:
        return _memory.read_bytes(self.pid, address, length)

    def write(self, address: int, data: bytes | memoryview) -> None:
        _memory.write_bytes(self.pid, address, data)

    def write_scattered(
        self, pieces: list[bytes | memoryview], ranges: list[tuple[int, int]]
    ) -> None:
        """Write ``pieces`` as one stream over the (address, length) ``ranges``, in one call."""
        _memory.write_scattered(self.pid, pieces, ranges)

    def scratch_string(self, text: str) -> int:
        """Write ``text`` where the kernel will read it; return its address.

        Into the sealed pins when the call has them and it fits (a path another thread
        cannot rewrite), else below the stack (clear of signal frames).
        """
        data = os.fsencode(text) + b"\0"
        if self.pins is not None and self.pins.fits(len(data)):
            return self.pins.write(data)
        return self.scratch_bytes(data)

    def pin_bytes(self, data: bytes) -> int:
        """Write ``data`` the kernel only reads into the sealed pins (the stack without them)."""
        return self.pins.write(data) if self.pins is not None else self.scratch_bytes(data)

    def scratch_bytes(self, data: bytes) -> int:
        """Write ``data`` below the stack, 16-byte aligned (an argv array); return its address."""
        self._scratch = (self._scratch - len(data)) & ~15
        _memory.write_bytes(self.pid, self._scratch, data)
        return self._scratch
