"""Run syscalls of the agent's choosing in a tracee stopped at a seccomp stop.

Strategy: at the stop the tracee is inside its own syscall. Its number and
arguments are replaced by the first injected call, which then runs and is
seen at its exit stop; each further call is run by moving the instruction
pointer back over the ``syscall`` instruction (two bytes) with the number in
``rax``, through its entry and exit stops. The caller then restarts the
program's own call the same way (``restart_registers``): it traps again and is
handled as if the injection had never happened.

Signals are blocked meanwhile (``PTRACE_SETSIGMASK``) so that no handler runs
on the injected registers; a SIGSTOP, which cannot be blocked, is held back and
sent again at the end. Events of the tracee that end the injection (its death,
another thread's exec) are handed back to the tracer loop (``requeue``).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from typing import Final

from reference_agent import _ptrace
from reference_agent._ptrace import (
    Event,
    ExitEvent,
    Registers,
    SeccompStop,
    SignalStop,
    SyscallExitStop,
)

__all__ = ["Injected", "inject", "restart_registers"]

#: Every signal blocked (the kernel ignores the SIGKILL and SIGSTOP bits).
_ALL_SIGNALS: Final = (1 << 64) - 1
#: Length of x86_64's ``syscall`` instruction, which the instruction pointer is just past.
_SYSCALL_LENGTH: Final = 2

#: The results of the injected calls (each a return value, -errno on failure).
Injected = list[int]


class _Gone(Exception):
    """The tracee left the injection (died, or another thread's exec took it over)."""


def restart_registers(at_stop: Registers) -> Registers:
    """The registers that make the tracee run its own call again from the start."""
    return at_stop.replace(ip=at_stop.ip - _SYSCALL_LENGTH, result=at_stop.nr)


#: Given the results so far, the next call to run (number, arguments), or None: done.
Plan = Callable[[Injected], "tuple[int, Sequence[int]] | None"]


def inject(
    pid: int, at_stop: Registers, plan: Plan, requeue: Callable[[Event], None]
) -> Injected | None:
    """Run the calls ``plan`` gives in ``pid``, stopped at a seccomp stop with ``at_stop``.

    Returns:
        Their results, the tracee left at the last one's exit stop: set
        ``restart_registers(at_stop)`` before resuming it. None: the tracee is gone
        or taken over (its event requeued); leave it alone.
    """
    held: list[int] = []
    try:
        saved_mask = _ptrace.get_signal_mask(pid)
        _ptrace.set_signal_mask(pid, _ALL_SIGNALS)
        results: Injected = []
        while (call := plan(results)) is not None:
            nr, args = call
            if not results:
                _ptrace.set_registers(pid, at_stop.replace(nr=nr, args=list(args)))
            else:
                now = _ptrace.get_registers(pid)
                again = now.replace(
                    nr=nr, args=list(args), result=nr, ip=at_stop.ip - _SYSCALL_LENGTH
                )
                _ptrace.set_registers(pid, again)
                _ptrace.resume_to_syscall_exit(pid)
                _next_syscall_stop(pid, requeue, held)  # its entry
            _ptrace.resume_to_syscall_exit(pid)
            _next_syscall_stop(pid, requeue, held)  # its exit
            results.append(_ptrace.get_registers(pid).result)
        _ptrace.set_signal_mask(pid, saved_mask)
    except (_Gone, ProcessLookupError):
        return None
    for number in held:
        os.kill(pid, number)  # a SIGSTOP held back: the process stops as it would have
    return results


def _next_syscall_stop(pid: int, requeue: Callable[[Event], None], held: list[int]) -> None:
    """Wait for ``pid``'s next syscall stop, passing through what may come before it."""
    while True:
        event = _ptrace.wait_event(pid)
        match event:
            case SyscallExitStop():
                return
            case SeccompStop():  # an injected call the filter traps: let it run
                _ptrace.resume_to_syscall_exit(pid)
            case SignalStop(signal=number) if number == signal.SIGSTOP:
                held.append(number)
                _ptrace.resume_to_syscall_exit(pid)
            case ExitEvent():  # killed: let it go, and give its end to the loop
                _ptrace.resume(pid)
            case _:
                requeue(event)
                raise _Gone
