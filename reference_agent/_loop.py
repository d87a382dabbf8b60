"""A minimal tracer loop over the typed events: proof that the ptrace layer holds up.

It runs one program with a seccomp trap set, follows every fork, vfork, clone
(threads too) and exec, delivers signals unchanged, keeps job control working,
and hands each trapped syscall to ``on_syscall`` at its seccomp stop: one stop
per trapped call. The handler returns None to let the syscall run natively, or
an int to skip it and make that its result (a negative errno for a failure).

The loop runs until the kernel says no tracee is left (``ECHILD``), not when the
first process exits: a tracee that outlives it (a daemon, a background job)
still has trapped syscalls to answer, and detaching it would turn them into
ENOSYS. So the tracer process must have no children of its own besides the
program: ``waitpid(-1)`` would take their exits too.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import signal
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field

from reference_agent import _ptrace
from reference_agent._ptrace import (
    Event,
    ExecEvent,
    Exited,
    ExitEvent,
    ForkEvent,
    ForkKind,
    GroupStop,
    InterruptStop,
    Killed,
    Registers,
    SeccompStop,
    SignalStop,
    SyscallExitStop,
)
from reference_agent._seccomp import FOREIGN_ABI, spawn_traced

__all__ = [
    "EventHandler",
    "LoopCounters",
    "Park",
    "Rewrite",
    "SyscallHandler",
    "TracerLoop",
    "exit_status",
    "run_traced",
]


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Run a changed syscall natively; optionally see (and replace) its result at its exit.

    ``on_exit(result)`` returns None to keep the result or an int to replace it.
    Asking for the exit costs a second stop, so only calls that need it do.
    """

    registers: Registers
    on_exit: Callable[[int], int | None] | None = None


@dataclass(frozen=True, slots=True)
class Park:
    """Leave the caller stopped at its seccomp stop until ``TracerLoop.wake`` answers it.

    Why: a call that must wait (a lock held by another tracee) cannot block the
    loop, which serves every tracee; the caller stays stopped, the others run.
    Only SIGKILL ends a parked caller early: other signals wait until it is woken.
    """


#: ``on_syscall(pid, nr, registers)``: None runs the syscall natively; an int skips
#: it and becomes its return value (``-errno.ENOENT`` for a failure); a Rewrite
#: changes it before it runs; Park leaves it stopped for a later ``wake``.
SyscallHandler = Callable[[int, int, Registers], "int | Rewrite | Park | None"]
#: ``on_event(event)``: told of forks, execs and ends before the loop resumes anyone.
EventHandler = Callable[[Event], None]

#: Exit status of a program killed by a signal, as a shell reports it.
_SIGNAL_EXIT_BASE = 128


def exit_status(event: Exited | Killed) -> int:
    """A process's end as a shell's ``$?``: its exit code, or 128 + the signal."""
    if isinstance(event, Exited):
        return event.code
    return _SIGNAL_EXIT_BASE + event.signal


@dataclass(slots=True)
class LoopCounters:
    """What the loop saw; the benchmarks divide time by ``seccomp_stops``."""

    seccomp_stops: int = 0
    emulated: int = 0
    signals_delivered: int = 0
    group_stops: int = 0
    #: Successful execs, the first program's included.
    execs: int = 0
    #: New tracees by how they were made (fork, vfork, clone: threads are clones).
    forks: dict[ForkKind, int] = field(default_factory=lambda: dict.fromkeys(ForkKind, 0))
    #: Every tid traced, the first process included.
    tracees: int = 0


class TracerLoop:
    """One traced program and its descendants, driven from the calling thread.

    Args:
        trapped: native syscall numbers that stop in the tracer.
        on_syscall: the handler for trapped syscalls; None lets them all run.
    """

    def __init__(
        self,
        trapped: Iterable[int],
        on_syscall: SyscallHandler | None = None,
        on_event: EventHandler | None = None,
        wait_event: Callable[[], Event] = _ptrace.wait_event,
    ) -> None:
        self.trapped: Set[int] = frozenset(trapped)
        #: The next stop to handle; the compiled fast path resumes some before they get here.
        self.wait_event = wait_event
        self.on_syscall = on_syscall
        self.on_event = on_event
        #: Exit callbacks of rewritten syscalls still running, by tid.
        self._at_exit: dict[int, Callable[[int], int | None]] = {}
        self.counters = LoopCounters()
        #: tids seen and not yet reported gone: what to kill if the loop has to give up.
        self._live: set[int] = set()
        #: Parked callers, by tid: their registers at the seccomp stop.
        self._parked: dict[int, Registers] = {}
        #: New tracees stopped before their creator's fork event, held (not resumed) until
        #: it arrives, so that ``on_event`` has set up their state before they run a syscall;
        #: with the tid whose death releases them if that event never comes.
        self._held: dict[int, tuple[Event, int | None]] = {}
        #: Events a handler took from ``waitpid`` while it drove one tracee itself
        #: (``_inject``), handed back to be handled as if just reported.
        self._pending: collections.deque[Event] = collections.deque()
        #: Parked callers to hand to the handler again before the next wait.
        self._retrying: collections.deque[int] = collections.deque()
        #: The seccomp stop being handled, with what whoever waited read of it.
        self.stop: SeccompStop | None = None

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        cpu: int | None = None,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        executable: str | None = None,
        before_exec: Callable[[], None] | None = None,
    ) -> int:
        """Run ``argv`` to the end of its last descendant.

        Args:
            argv, env, cwd, stdin, stdout, stderr, executable, before_exec: as for
                ``spawn_traced``.
            cpu: run the tracer thread and every tracee on this one CPU (restored after).

        Returns:
            The first process's exit code, or 128 + the signal that killed it.

        Raises:
            OSError: the program could not be started.
            Exception: whatever ``on_syscall`` raised; every tracee is killed first.
        """
        saved_affinity = os.sched_getaffinity(0)
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        try:
            root = spawn_traced(
                argv,
                env,
                cwd,
                self.trapped,
                cpu,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                executable=executable,
                before_exec=before_exec,
            )
            self._live.add(root)
            self.counters.tracees += 1
            self.counters.execs += 1  # spawn_traced saw its exec stop
            try:
                _ptrace.resume(root)
                return self._loop(root)
            except BaseException:
                self._kill_all()
                raise
        finally:
            if cpu is not None:
                os.sched_setaffinity(0, saved_affinity)

    def _loop(self, root: int) -> int:
        status: int | None = None
        while True:
            if self._retrying:
                pid = self._retrying.popleft()
                parked = self._parked.pop(pid, None)
                if parked is not None:
                    with contextlib.suppress(ProcessLookupError):
                        self._dispatch(pid, parked)
                continue
            if self._pending:
                event = self._pending.popleft()
                self._parked.pop(event.pid, None)  # parked only while it was driven aside
            else:
                try:
                    event = self.wait_event()
                except ChildProcessError:
                    break
            if isinstance(event, Exited | Killed):
                self._live.discard(event.pid)
                self._at_exit.pop(event.pid, None)
                self._parked.pop(event.pid, None)
                self._held.pop(event.pid, None)
                if self.on_event is not None:
                    self.on_event(event)
                if event.pid == root:
                    status = exit_status(event)
                self._release_orphans()
                continue
            # ESRCH: killed while stopped (another thread's exit_group, a SIGKILL);
            # its death is still to be reported.
            with contextlib.suppress(ProcessLookupError):
                self._handle_stop(event)
        if status is None:
            raise ChildProcessError(f"the exit of pid {root} was never reported")
        return status

    def _handle_stop(self, event: Event) -> None:
        pid = event.pid
        if pid not in self._live and not isinstance(event, ExecEvent):
            # A new tracee's first stop can arrive before its creator's fork event: hold it
            # until that event has been handled (or its creator is gone).
            self._held[pid] = (event, _creator_of(pid))
            return
        match event:
            case SeccompStop(nr=nr, registers=registers):
                self.counters.seccomp_stops += 1
                self.stop = event
                try:
                    self._syscall(pid, nr, registers)
                finally:
                    self.stop = None
            case ForkEvent(child=child, kind=kind):
                self.counters.forks[kind] += 1
                if self.on_event is not None:
                    self.on_event(event)
                if child not in self._live:
                    self._live.add(child)
                    self.counters.tracees += 1
                _ptrace.resume(pid)
                held = self._held.pop(child, None)
                if held is not None:
                    with contextlib.suppress(ProcessLookupError):
                        self._handle_stop(held[0])
            case ExecEvent(former_pid=former):
                self.counters.execs += 1
                # A thread that execs takes over the leader's tid and its old tid
                # vanishes without an exit report.
                if former != pid:
                    self._live.discard(former)
                # A leader parked when another thread's exec killed it: its call is gone.
                self._parked.pop(pid, None)
                if self.on_event is not None:
                    self.on_event(event)
                _ptrace.resume(pid)
            case SignalStop(signal=number):
                self.counters.signals_delivered += 1
                _ptrace.resume(pid, number)  # the same number keeps the original siginfo
            case GroupStop():
                self.counters.group_stops += 1
                _ptrace.listen(pid)  # stay stopped until SIGCONT, as job control expects
            case SyscallExitStop():
                self._syscall_exit(pid)
            case InterruptStop() | ExitEvent():
                _ptrace.resume(pid)

    def _release_orphans(self) -> None:
        """Run held tracees whose creator died before its fork event could be reported."""
        for pid, (event, creator) in list(self._held.items()):
            if creator is not None and _alive(creator):
                continue
            del self._held[pid]
            self._live.add(pid)
            self.counters.tracees += 1
            with contextlib.suppress(ProcessLookupError):
                self._handle_stop(event)

    def _syscall(self, pid: int, nr: int, registers: Registers | None = None) -> None:
        if registers is None:  # not read by whoever waited
            registers = _ptrace.get_registers(pid)
        if nr == FOREIGN_ABI:
            # i386 or x32 numbering: the numbers mean other calls; refuse, loudly enough.
            self._skip(pid, registers, -errno.ENOSYS)
            return
        if self.on_syscall is None:
            _ptrace.resume(pid)
            return
        self._dispatch(pid, registers)

    def _dispatch(self, pid: int, registers: Registers) -> None:
        assert self.on_syscall is not None
        result = self.on_syscall(pid, registers.nr, registers)
        if result is None:
            _ptrace.resume(pid)
        elif isinstance(result, Park):
            self.counters.emulated += 1
            self._parked[pid] = registers
        elif isinstance(result, Rewrite):
            if result.registers is not registers:  # unchanged: the tracee holds them already
                _ptrace.set_registers(pid, result.registers)
            if result.on_exit is None:
                _ptrace.resume(pid)
            else:
                self._at_exit[pid] = result.on_exit
                _ptrace.resume_to_syscall_exit(pid)
        else:
            self.counters.emulated += 1
            self._skip(pid, registers, result)

    def _syscall_exit(self, pid: int) -> None:
        callback = self._at_exit.pop(pid, None)
        if callback is not None:
            registers = _ptrace.get_registers(pid)
            replaced = callback(registers.result)
            if replaced is not None:
                _ptrace.set_registers(pid, registers.replace(result=replaced))
        _ptrace.resume(pid)

    def wake(self, pid: int, result: int) -> None:
        """Answer a parked caller: its call returns ``result``; a tracee gone meanwhile is skipped."""
        registers = self._parked.pop(pid, None)
        if registers is not None:
            with contextlib.suppress(ProcessLookupError):
                self._skip(pid, registers, result)

    def retry(self, pid: int) -> None:
        """Hand a parked caller's call to the handler again, as if it had just stopped,
        once the current stop is dealt with (never from inside the handler)."""
        self._retrying.append(pid)

    def requeue(self, event: Event) -> None:
        """Handle ``event`` (taken from ``waitpid`` by a handler) before waiting again."""
        self._pending.append(event)

    def parked(self) -> frozenset[int]:
        """The tids stopped until a ``wake``."""
        return frozenset(self._parked)

    @staticmethod
    def _skip(pid: int, registers: Registers, result: int) -> None:
        """Skip the syscall at this seccomp stop (nr = -1) and make ``result`` its return value."""
        _ptrace.set_registers(pid, registers.replace(nr=-1, result=result))
        _ptrace.resume(pid)

    def _kill_all(self) -> None:
        for pid in [*self._live, *self._held]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while True:
            try:
                event = _ptrace.wait_event()
            except ChildProcessError:
                return
            if not isinstance(event, Exited | Killed):
                # A tracee we had not seen yet (a fork in flight): kill it too.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(event.pid, signal.SIGKILL)
                    _ptrace.resume(event.pid)


def _status_fields(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as status:
            return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)
    except OSError:
        return {}


def _creator_of(pid: int) -> int | None:
    """The process that made new tracee ``pid``: its thread group's leader, else its parent."""
    fields = _status_fields(pid)
    with contextlib.suppress(KeyError, ValueError):
        group = int(fields["Tgid"])
        return group if group != pid else int(fields["PPid"])
    return None


def _alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie (a dead creator will never report its fork)."""
    state = _status_fields(pid).get("State", "")
    return bool(state) and not state.startswith(("Z", "X"))


def run_traced(
    argv: Sequence[str],
    trapped: Iterable[int] = (),
    on_syscall: SyscallHandler | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    cpu: int | None = None,
    stdin: int | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
) -> int:
    """Run ``argv`` under a ``TracerLoop``; return its exit status (or 128 + signal)."""
    loop = TracerLoop(trapped, on_syscall)
    return loop.run(argv, env=env, cwd=cwd, cpu=cpu, stdin=stdin, stdout=stdout, stderr=stderr)
