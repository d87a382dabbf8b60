"""The one adapter in front of python-ptrace: typed stops, registers, syscall names.

Nothing else in the agent imports ``ptrace``. python-ptrace gives us its syscall
table, its ``user_regs_struct`` and its ``ptrace()`` binding; this module adds
what it lacks through ctypes (``PTRACE_SEIZE``/``INTERRUPT``/``LISTEN``, the
seccomp stop, a ``GETEVENTMSG`` that reads a full ``unsigned long``,
``process_vm_readv``/``writev``) and turns ``waitpid`` statuses into frozen
dataclasses, so that a tracer loop is a ``match`` over events.

Theory of operation:

- Tracees are attached with ``PTRACE_SEIZE`` (never ``PTRACE_ATTACH``/``TRACEME``),
  so group-stops arrive as ``PTRACE_EVENT_STOP`` and can be told apart from
  signal-delivery-stops without ``PTRACE_GETSIGINFO``; a group-stop is parked with
  ``PTRACE_LISTEN`` so that job control keeps working.
- Syscalls reach the tracer through a seccomp filter (``_seccomp``) as one
  ``PTRACE_EVENT_SECCOMP`` stop each; the filter puts the syscall number in the
  event message. The tracer resumes with ``PTRACE_CONT``; only if it wants to see
  the result does it resume with ``PTRACE_SYSCALL``, and the next syscall stop is
  then the exit stop (since Linux 4.8 the seccomp stop comes after the point where
  a syscall-enter-stop would be). The tracer loop never resumes otherwise with
  ``PTRACE_SYSCALL``, so every ``TRACESYSGOOD`` stop it sees is an exit stop; only
  ``_inject``, which runs calls of its own in a tracee, sees entry stops, and
  waits for them itself.
- Every call here acts on one thread (a tid), and all of them must come from the
  thread that seized the tracee: ptrace ties a tracee to a tracer *thread*.
- Failures raise ``OSError`` with the errno (``ProcessLookupError`` for ESRCH: the
  tracee died, or is not stopped, and its exit is still to be reported by
  ``wait_event``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import os
import signal
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from ptrace.binding import func as _pt
from ptrace.binding.linux_struct import user_regs_struct as _UserRegs
from ptrace.syscall.linux.x86_64 import SYSCALL_NAMES as _PYTHON_PTRACE_SYSCALL_NAMES

__all__ = [
    "DEFAULT_OPTIONS",
    "SYSCALL_NAMES",
    "SYSCALL_NUMBERS",
    "Event",
    "ExecEvent",
    "ExitEvent",
    "Exited",
    "ForkEvent",
    "ForkKind",
    "GroupStop",
    "InterruptStop",
    "Killed",
    "Registers",
    "SeccompStop",
    "SignalStop",
    "SyscallExitStop",
    "TraceOption",
    "UserRegisters",
    "decode_status",
    "event_message",
    "get_registers",
    "get_signal_mask",
    "interrupt",
    "listen",
    "poll_event",
    "registers_of",
    "resume",
    "resume_to_syscall_exit",
    "seize",
    "set_registers",
    "set_signal_mask",
    "syscall_name",
    "syscall_number",
    "vm_read",
    "vm_write",
    "wait_event",
]

# --- requests and events python-ptrace 0.9.9 does not define ---------------------------------
PTRACE_SEIZE: Final = 0x4206
PTRACE_INTERRUPT: Final = 0x4207
PTRACE_LISTEN: Final = 0x4208
PTRACE_GETSIGMASK: Final = 0x420A
PTRACE_SETSIGMASK: Final = 0x420B
PTRACE_EVENT_SECCOMP: Final = 7
PTRACE_EVENT_STOP: Final = 128

#: ``waitpid`` flag: report clone children (threads) too; python-ptrace calls it THREAD_TRACE_FLAGS.
_WALL: Final = 0x40000000
#: TRACESYSGOOD marks syscall stops with this bit in the stop signal.
_SYSCALL_TRAP: Final = signal.SIGTRAP | 0x80
#: Signals whose default action stops the process: a PTRACE_EVENT_STOP with one of
#: them is a group-stop, any other (SIGTRAP) is an interrupt-like stop (strace's rule).
_STOPPING_SIGNALS: Final = frozenset(
    {signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}
)


class TraceOption(enum.IntFlag):
    """``PTRACE_O_*`` options, given to ``PTRACE_SEIZE`` and inherited by auto-attached children."""

    TRACESYSGOOD = _pt.PTRACE_O_TRACESYSGOOD
    TRACEFORK = _pt.PTRACE_O_TRACEFORK
    TRACEVFORK = _pt.PTRACE_O_TRACEVFORK
    TRACECLONE = _pt.PTRACE_O_TRACECLONE
    TRACEEXEC = _pt.PTRACE_O_TRACEEXEC
    TRACEEXIT = _pt.PTRACE_O_TRACEEXIT
    TRACESECCOMP = 1 << PTRACE_EVENT_SECCOMP
    #: The kernel SIGKILLs every tracee if the tracer exits: no half-traced orphans
    #: whose trapped syscalls would fail with ENOSYS.
    EXITKILL = 1 << 20


DEFAULT_OPTIONS: Final = (
    TraceOption.TRACESYSGOOD
    | TraceOption.TRACEFORK
    | TraceOption.TRACEVFORK
    | TraceOption.TRACECLONE
    | TraceOption.TRACEEXEC
    | TraceOption.TRACEEXIT
    | TraceOption.TRACESECCOMP
    | TraceOption.EXITKILL
)


class ForkKind(enum.Enum):
    """How a new tracee was made (clone3 reports as one of these, by its flags)."""

    FORK = _pt.PTRACE_EVENT_FORK
    VFORK = _pt.PTRACE_EVENT_VFORK
    CLONE = _pt.PTRACE_EVENT_CLONE


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeccompStop:
    """The filter returned SECCOMP_RET_TRACE: syscall ``nr`` is about to run (or be skipped).

    What whoever waited already read at this stop (the compiled fast path does), so that
    the handler need not ask the kernel again; None where it was not read: ``registers``;
    ``path``, the (address, bytes without the NUL) of the path argument; ``descriptor``, the
    (fd, device, inode) the descriptor argument's ``/proc/PID/fd`` link named.
    """

    pid: int
    nr: int
    registers: Registers | None = field(default=None, compare=False)
    path: tuple[int, bytes] | None = field(default=None, compare=False)
    descriptor: tuple[int, int, int] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class SyscallExitStop:
    """A syscall resumed with ``resume_to_syscall_exit`` has finished; its result is in rax."""

    pid: int


@dataclass(frozen=True, slots=True)
class ForkEvent:
    """``pid`` made ``child`` (already traced, with the same options)."""

    pid: int
    child: int
    kind: ForkKind


@dataclass(frozen=True, slots=True)
class ExecEvent:
    """``pid`` finished an execve; ``former_pid`` is the tid that called it (a thread's, or pid)."""

    pid: int
    former_pid: int


@dataclass(frozen=True, slots=True)
class ExitEvent:
    """``pid`` is about to exit with wait status ``status``; registers are still readable."""

    pid: int
    status: int


@dataclass(frozen=True, slots=True)
class SignalStop:
    """Signal-delivery-stop: ``signal`` is about to be delivered; resume with it to deliver it."""

    pid: int
    signal: int


@dataclass(frozen=True, slots=True)
class GroupStop:
    """``pid`` stopped for job control (``signal`` is the stopping signal); park it with ``listen``."""

    pid: int
    signal: int


@dataclass(frozen=True, slots=True)
class InterruptStop:
    """PTRACE_EVENT_STOP without a stopping signal: a new tracee's first stop, a
    ``PTRACE_INTERRUPT``, or a listening tracee woken by SIGCONT. Resume it."""

    pid: int


@dataclass(frozen=True, slots=True)
class Exited:
    """``pid`` is gone, having called exit with ``code``."""

    pid: int
    code: int


@dataclass(frozen=True, slots=True)
class Killed:
    """``pid`` is gone, killed by ``signal``."""

    pid: int
    signal: int


Event: TypeAlias = (
    SeccompStop
    | SyscallExitStop
    | ForkEvent
    | ExecEvent
    | ExitEvent
    | SignalStop
    | GroupStop
    | InterruptStop
    | Exited
    | Killed
)


# --- raw ptrace calls ---------------------------------------------------------------------------


# python-ptrace's ptrace() goes through a c_ulong-typed binding and its PtraceError:
# ~0.5 us on top of a ~1 us syscall, and a tracer makes four calls per stop. So
# requests go straight to libc's ptrace, with python-ptrace's request numbers and
# register struct.
_LIBC: Final = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc_ptrace: Final = _LIBC.ptrace
_libc_ptrace.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)
_libc_ptrace.restype = ctypes.c_long


def _errno_error(detail: str) -> OSError:
    # OSError(errno, ...) picks the subclass (ProcessLookupError for ESRCH), so
    # callers can catch the case they expect.
    code = ctypes.get_errno()
    return OSError(code, f"{os.strerror(code)} ({detail})")


def _request(request: int, pid: int, addr: int | None = None, data: Any = None) -> None:
    """One ptrace request; ``data`` is an int (options, a signal) or a ctypes pointer."""
    if _libc_ptrace(request, pid, addr, data) == -1:
        raise _errno_error(f"ptrace request {request:#x} on {pid}")


def seize(pid: int, options: TraceOption = DEFAULT_OPTIONS) -> None:
    """Trace ``pid`` without stopping it (``PTRACE_SEIZE``).

    Args:
        pid: a thread of a process the caller may trace.
        options: ``TraceOption`` flags; children attached by fork/clone inherit them.

    Raises:
        OSError: EPERM if tracing is not allowed, ESRCH if ``pid`` does not exist.
    """
    _request(PTRACE_SEIZE, pid, None, int(options))


def interrupt(pid: int) -> None:
    """Stop a running seized tracee (``PTRACE_INTERRUPT``); it reports an ``InterruptStop``."""
    _request(PTRACE_INTERRUPT, pid)


def listen(pid: int) -> None:
    """Leave a group-stopped tracee stopped until SIGCONT, as job control expects (``PTRACE_LISTEN``)."""
    _request(PTRACE_LISTEN, pid)


def resume(pid: int, signal: int = 0) -> None:
    """Let a stopped tracee run (``PTRACE_CONT``), delivering ``signal`` if non-zero."""
    _request(_pt.PTRACE_CONT, pid, None, signal)


def resume_to_syscall_exit(pid: int, signal: int = 0) -> None:
    """Like ``resume``, but stop again when the current syscall returns (``PTRACE_SYSCALL``).

    Only meaningful at a ``SeccompStop``: the next syscall stop is then its exit stop.
    """
    _request(_pt.PTRACE_SYSCALL, pid, None, signal)


def get_signal_mask(pid: int) -> int:
    """The stopped tracee's blocked-signal mask (``PTRACE_GETSIGMASK``), bit N-1 for signal N."""
    mask = ctypes.c_uint64()
    _request(PTRACE_GETSIGMASK, pid, ctypes.sizeof(mask), ctypes.byref(mask))
    return mask.value


def set_signal_mask(pid: int, mask: int) -> None:
    """Set the stopped tracee's blocked-signal mask (``PTRACE_SETSIGMASK``)."""
    value = ctypes.c_uint64(mask)
    _request(PTRACE_SETSIGMASK, pid, ctypes.sizeof(value), ctypes.byref(value))


def event_message(pid: int) -> int:
    """``PTRACE_GETEVENTMSG``: the new tid, former tid, exit status or seccomp data of the stop."""
    # python-ptrace's ptrace_geteventmsg reads the unsigned long into a C int.
    message = ctypes.c_ulong()
    _request(_pt.PTRACE_GETEVENTMSG, pid, None, ctypes.byref(message))
    return message.value


# --- waiting ------------------------------------------------------------------------------------


def decode_status(
    pid: int,
    status: int,
    nr: int | None = None,
    registers: Registers | None = None,
    path: tuple[int, bytes] | None = None,
    descriptor: tuple[int, int, int] | None = None,
) -> Event:
    """The event of a ``waitpid`` status; for a seccomp stop, with what the wait already
    read of it (the compiled fast path's: see :class:`SeccompStop`)."""
    if os.WIFEXITED(status):
        return Exited(pid, os.WEXITSTATUS(status))
    if os.WIFSIGNALED(status):
        return Killed(pid, os.WTERMSIG(status))
    stop_signal = os.WSTOPSIG(status)
    event = status >> 16
    if stop_signal == _SYSCALL_TRAP:
        return SyscallExitStop(pid)
    if stop_signal == signal.SIGTRAP and event:
        if event == PTRACE_EVENT_SECCOMP:
            number = event_message(pid) if nr is None else nr
            return SeccompStop(pid, number, registers, path, descriptor)
        if event in (_pt.PTRACE_EVENT_FORK, _pt.PTRACE_EVENT_VFORK, _pt.PTRACE_EVENT_CLONE):
            return ForkEvent(pid, event_message(pid), ForkKind(event))
        if event == _pt.PTRACE_EVENT_EXEC:
            return ExecEvent(pid, event_message(pid))
        if event == _pt.PTRACE_EVENT_EXIT:
            return ExitEvent(pid, event_message(pid))
    if event == PTRACE_EVENT_STOP:
        if stop_signal in _STOPPING_SIGNALS:
            return GroupStop(pid, stop_signal)
        return InterruptStop(pid)
    # Under PTRACE_SEIZE every other stop is a signal-delivery-stop.
    return SignalStop(pid, stop_signal)


def wait_event(pid: int = -1) -> Event:
    """Block until a tracee (or child) changes state, and say how.

    Args:
        pid: one tid to wait for, or -1 for any tracee or child. A tracer that
            waits for -1 must have no other children: their exits would be taken.

    Returns:
        The typed event. Stops leave the tracee stopped until it is resumed.

    Raises:
        ChildProcessError: nothing is left to wait for (ECHILD).
    """
    found, status = os.waitpid(pid, _WALL)
    return decode_status(found, status)


def poll_event(pid: int = -1) -> Event | None:
    """Like ``wait_event``, but return None at once if no tracee has anything to report."""
    found, status = os.waitpid(pid, _WALL | os.WNOHANG)
    return None if found == 0 else decode_status(found, status)


# --- registers ----------------------------------------------------------------------------------

_MASK64: Final = (1 << 64) - 1
#: x86_64 syscall arguments, in order.
_ARG_REGISTERS: Final = ("rdi", "rsi", "rdx", "r10", "r8", "r9")


def _signed(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value


class Registers:
    """A tracee's registers from one ``PTRACE_GETREGS``: read-only; ``replace`` makes a changed copy.

    Fields are decoded when asked for, and ``set_registers`` writes back the whole
    set as read, so an agent pays only for what it looks at and clobbers nothing.
    """

    __slots__ = ("_regs",)

    def __init__(self, regs: Any) -> None:
        self._regs = regs  # a python-ptrace user_regs_struct owned by this object alone

    @property
    def nr(self) -> int:
        """The syscall number (orig_rax); -1 at a seccomp stop skips the syscall."""
        return _signed(self._regs.orig_rax)

    @property
    def args(self) -> tuple[int, int, int, int, int, int]:
        """Syscall arguments 0-5, unsigned (rdi, rsi, rdx, r10, r8, r9)."""
        r = self._regs
        return (r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9)

    def arg(self, index: int) -> int:
        """Syscall argument ``index`` (0-5), unsigned."""
        return int(getattr(self._regs, _ARG_REGISTERS[index]))

    @property
    def result(self) -> int:
        """rax, signed: -ENOSYS at a syscall entry, the result at its exit."""
        return _signed(self._regs.rax)

    @property
    def ip(self) -> int:
        return int(self._regs.rip)

    @property
    def sp(self) -> int:
        return int(self._regs.rsp)

    def replace(
        self,
        *,
        nr: int | None = None,
        args: Sequence[int | None] = (),
        result: int | None = None,
        ip: int | None = None,
    ) -> Registers:
        """A copy with the given syscall number, arguments (None keeps one), result and ip."""
        regs = _UserRegs.from_buffer_copy(self._regs)
        if ip is not None:
            regs.rip = ip & _MASK64
        if nr is not None:
            regs.orig_rax = nr & _MASK64
        for name, value in zip(_ARG_REGISTERS, args, strict=False):
            if value is not None:
                setattr(regs, name, value & _MASK64)
        if result is not None:
            regs.rax = result & _MASK64
        return Registers(regs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Registers):
            return NotImplemented
        return bytes(self._regs) == bytes(other._regs)

    def __hash__(self) -> int:
        return hash(bytes(self._regs))

    def __repr__(self) -> str:
        args = ", ".join(hex(a) for a in self.args)
        return f"Registers(nr={self.nr}, args=({args}), result={self.result}, ip={self.ip:#x})"


#: The kernel's ``struct user_regs_struct``, for C code that reads registers itself.
UserRegisters = _UserRegs


def registers_of(raw: ctypes.Structure) -> Registers:
    """A copy of ``raw`` (a :data:`UserRegisters` read elsewhere) as Registers."""
    return Registers(_UserRegs.from_buffer_copy(raw))


def get_registers(pid: int) -> Registers:
    """Read ``pid``'s registers (``PTRACE_GETREGS``); ``pid`` must be in a ptrace stop."""
    regs = _UserRegs()
    _request(_pt.PTRACE_GETREGS, pid, None, ctypes.byref(regs))
    return Registers(regs)


def set_registers(pid: int, registers: Registers) -> None:
    """Write ``registers`` into ``pid`` (``PTRACE_SETREGS``)."""
    _request(_pt.PTRACE_SETREGS, pid, None, ctypes.byref(registers._regs))


# --- syscall names ------------------------------------------------------------------------------

#: First number of the x32 entry points that python-ptrace lists above the native ones;
#: they are reachable only with __X32_SYSCALL_BIT, which the seccomp filter refuses.
_X32_ONLY_FROM: Final = 512
#: Syscalls newer than python-ptrace 0.9.9's table (Linux 5.8), from
#: arch/x86/entry/syscalls/syscall_64.tbl (up to Linux 6.17).
_NEWER_SYSCALLS: Final[Mapping[int, str]] = {
    441: "epoll_pwait2",
    442: "mount_setattr",
    443: "quotactl_fd",
    444: "landlock_create_ruleset",
    445: "landlock_add_rule",
    446: "landlock_restrict_self",
    447: "memfd_secret",
    448: "process_mrelease",
    449: "futex_waitv",
    450: "set_mempolicy_home_node",
    451: "cachestat",
    452: "fchmodat2",
    453: "map_shadow_stack",
    454: "futex_wake",
    455: "futex_wait",
    456: "futex_requeue",
    457: "statmount",
    458: "listmount",
    459: "lsm_get_self_attr",
    460: "lsm_set_self_attr",
    461: "lsm_list_modules",
    462: "mseal",
    463: "setxattrat",
    464: "getxattrat",
    465: "listxattrat",
    466: "removexattrat",
    467: "open_tree_attr",
    468: "file_getattr",
    469: "file_setattr",
}

#: Native x86_64 syscall number -> name: python-ptrace's table plus the newer calls.
SYSCALL_NAMES: Final[Mapping[int, str]] = {
    **{nr: name for nr, name in _PYTHON_PTRACE_SYSCALL_NAMES.items() if nr < _X32_ONLY_FROM},
    **_NEWER_SYSCALLS,
}
#: Name -> native x86_64 syscall number.
SYSCALL_NUMBERS: Final[Mapping[str, int]] = {name: nr for nr, name in SYSCALL_NAMES.items()}


def syscall_name(nr: int) -> str:
    """The name of native syscall ``nr``, or ``syscall_<nr>`` for a number Linux does not use."""
    return SYSCALL_NAMES.get(nr, f"syscall_{nr}")


def syscall_number(name: str) -> int:
    """The native x86_64 number of syscall ``name``.

    Raises:
        KeyError: no syscall has that name.
    """
    return SYSCALL_NUMBERS[name]


# --- process_vm_readv / process_vm_writev ----------------------------------------------------


# struct iovec as packed bytes: ctypes passes a bytes object as a pointer to its
# contents, which costs less than building ctypes structures per call.
_IOVEC: Final = struct.Struct("@PN")
_VM_SIGNATURE: Final = (
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_ulong,
    ctypes.c_void_p,
    ctypes.c_ulong,
    ctypes.c_ulong,
)
_process_vm_readv: Final = _LIBC.process_vm_readv
_process_vm_readv.argtypes = _VM_SIGNATURE
_process_vm_readv.restype = ctypes.c_ssize_t
_process_vm_writev: Final = _LIBC.process_vm_writev
_process_vm_writev.argtypes = _VM_SIGNATURE
_process_vm_writev.restype = ctypes.c_ssize_t


def _iovecs(ranges: Sequence[tuple[int, int]]) -> bytes:
    if len(ranges) == 1:  # the common case, without a generator
        return _IOVEC.pack(*ranges[0])
    return b"".join(_IOVEC.pack(address, length) for address, length in ranges)


def vm_read(pid: int, remote: Sequence[tuple[int, int]]) -> bytes:
    """The tracee's ``remote`` (address, length) ranges, concatenated, in one syscall.

    Returns:
        What could be read: shorter than asked if a range runs into unmapped
        memory (the copy stops at the first page that cannot be read).

    Raises:
        OSError: EFAULT if the first byte cannot be read, ESRCH if ``pid`` is gone.
    """
    length = sum(size for _, size in remote)
    buffer = ctypes.create_string_buffer(length)
    local = _IOVEC.pack(ctypes.addressof(buffer), length)
    copied: int = _process_vm_readv(pid, local, 1, _iovecs(remote), len(remote), 0)
    if copied < 0:
        raise _errno_error(f"process_vm_readv of {pid}")
    return buffer.raw[:copied]


def vm_write(pid: int, local: Sequence[tuple[int, int]], remote: Sequence[tuple[int, int]]) -> int:
    """Copy our ``local`` (address, length) ranges, in order, into the tracee's ``remote`` ones.

    One syscall; the caller keeps the local memory alive and unmoved during it.

    Returns:
        How many bytes were written (fewer if a range runs into unmapped or read-only memory).

    Raises:
        OSError: EFAULT if nothing could be written, ESRCH if ``pid`` is gone.
    """
    written: int = _process_vm_writev(
        pid, _iovecs(local), len(local), _iovecs(remote), len(remote), 0
    )
    if written < 0:
        raise _errno_error(f"process_vm_writev of {pid}")
    return written
