"""A seccomp-bpf filter that sends the agent only the syscalls it needs, and a traced spawn.

Theory of operation:

The filter is classic BPF over ``struct seccomp_data`` (x86_64 only). It checks
the ABI first: a syscall made through another ABI (``int 0x80``, i386 numbering)
or with the x32 bit set would otherwise slip past the number checks with a
number meaning something else; both are sent to the tracer with the data value
``FOREIGN_ABI`` so the agent can refuse them loudly. A native syscall in the
trapped set returns ``SECCOMP_RET_TRACE`` with its number as the data (the
tracer reads it with ``PTRACE_GETEVENTMSG``, no register read needed to
dispatch); everything else returns ``SECCOMP_RET_ALLOW`` and runs at native
speed. One argument is looked at: an ``mmap`` with ``MAP_ANONYMOUS`` maps no file,
so it is allowed even when mmap is trapped (malloc makes many; only a mapping of a
remote file's placeholder needs the agent). The trapped set is searched as a
balanced binary tree over runs of consecutive numbers, so an untrapped syscall
costs a handful of comparisons however large the set.

Spawning (``spawn_traced``) in this order, because each step needs the one before:

1. fork. Everything the child will need (argv, env, candidate paths, the filter
   program) is built by the parent first, so the child runs no imports and takes
   no lock another thread might have held at fork.
2. The child blocks on a pipe; the parent ``PTRACE_SEIZE``s it, then writes one
   byte. A pipe rather than ``raise(SIGSTOP)``: a self-stop leaves job-control
   state behind (a group-stop, a SIGCONT to send and then hide, a stopped child
   visible to ``waitpid(WUNTRACED)``), and ``PTRACE_TRACEME`` is not SEIZE (no
   ``PTRACE_LISTEN``, group-stops indistinguishable from signals). With the pipe
   no signal is involved at all.
3. The child applies stdio, cwd, CPU affinity, default signal dispositions, then
   ``prctl(PR_SET_NO_NEW_PRIVS)`` and ``seccomp(SECCOMP_SET_MODE_FILTER)``, and
   execs. The filter goes in only once the tracer is attached: a
   ``SECCOMP_RET_TRACE`` with no tracer fails the syscall with ENOSYS.
4. The parent drives the child to its ``PTRACE_EVENT_EXEC`` stop. An exec error
   comes back through a close-on-exec pipe and is raised as ``OSError``, as
   ``subprocess`` does.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import signal
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from reference_agent import _ptrace
from reference_agent._ptrace import TraceOption

__all__ = [
    "AUDIT_ARCH_X86_64",
    "FOREIGN_ABI",
    "SECCOMP_RET_ALLOW",
    "SECCOMP_RET_TRACE",
    "X32_SYSCALL_BIT",
    "Instruction",
    "PreparedFilter",
    "build_filter",
    "install_filter",
    "spawn_traced",
]

# --- constants from linux/seccomp.h, linux/audit.h, linux/filter.h ----------------------------
SECCOMP_RET_KILL_PROCESS: Final = 0x80000000
SECCOMP_RET_TRACE: Final = 0x7FF00000
SECCOMP_RET_ALLOW: Final = 0x7FFF0000
SECCOMP_RET_DATA: Final = 0x0000FFFF
SECCOMP_SET_MODE_FILTER: Final = 1
#: Do not force the Speculative Store Bypass mitigation on the tracee (it slows it down).
SECCOMP_FILTER_FLAG_SPEC_ALLOW: Final = 1 << 2
AUDIT_ARCH_X86_64: Final = 0xC000003E
X32_SYSCALL_BIT: Final = 0x40000000
PR_SET_NO_NEW_PRIVS: Final = 38
SYS_SECCOMP: Final = 317  # glibc has no seccomp() wrapper
#: Most instructions a classic BPF program may have (BPF_MAXINSNS).
BPF_MAXINSNS: Final = 4096

#: ``SeccompStop.nr`` for a syscall made through another ABI (i386 ``int 0x80``, x32).
FOREIGN_ABI: Final = SECCOMP_RET_DATA

# struct seccomp_data offsets
_NR_OFFSET: Final = 0
_ARCH_OFFSET: Final = 4
_ARGS_OFFSET: Final = 16  # six u64 arguments; the low half of each first (little endian)
_SYS_MMAP: Final = 9
_MMAP_FLAGS_OFFSET: Final = _ARGS_OFFSET + 3 * 8
MAP_ANONYMOUS: Final = 0x20

# BPF opcodes
_LD_W_ABS: Final = 0x00 | 0x00 | 0x20
_JMP_JA: Final = 0x05 | 0x00
_JMP_JEQ_K: Final = 0x05 | 0x10
_JMP_JGT_K: Final = 0x05 | 0x20
_JMP_JGE_K: Final = 0x05 | 0x30
_JMP_JSET_K: Final = 0x05 | 0x40
_ALU_OR_K: Final = 0x04 | 0x40
_RET_K: Final = 0x06
_RET_A: Final = 0x06 | 0x10


@dataclass(frozen=True, slots=True)
class Instruction:
    """One ``struct sock_filter``."""

    code: int
    jt: int = 0
    jf: int = 0
    k: int = 0

    def pack(self) -> bytes:
        return struct.pack("<HBBI", self.code, self.jt, self.jf, self.k)


def _runs(numbers: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted numbers as inclusive runs: {1, 2, 3, 7} -> [(1, 3), (7, 7)]."""
    runs: list[tuple[int, int]] = []
    for nr in sorted(set(numbers)):
        if runs and runs[-1][1] == nr - 1:
            runs[-1] = (runs[-1][0], nr)
        else:
            runs.append((nr, nr))
    return runs


def _trace_with_nr() -> list[Instruction]:
    # The accumulator still holds the syscall number (jumps leave it alone), and
    # trapped numbers are below 0x10000, so OR-ing builds RET_TRACE | nr.
    return [Instruction(_ALU_OR_K, k=SECCOMP_RET_TRACE), Instruction(_RET_A)]


def _search(runs: Sequence[tuple[int, int]]) -> list[Instruction]:
    """Code that returns TRACE|nr if the number in A lies in one of ``runs``, else ALLOW."""
    if len(runs) == 1:
        low, high = runs[0]
        trace = _trace_with_nr()
        allow = [Instruction(_RET_K, k=SECCOMP_RET_ALLOW)]
        if low == high:
            return [Instruction(_JMP_JEQ_K, jt=0, jf=len(trace), k=low), *trace, *allow]
        return [
            Instruction(_JMP_JGT_K, jt=1 + len(trace), jf=0, k=high),
            Instruction(_JMP_JGE_K, jt=0, jf=len(trace), k=low),
            *trace,
            *allow,
        ]
    middle = len(runs) // 2
    upper = _search(runs[middle:])
    lower = _search(runs[:middle])
    # Conditional jumps reach 255 instructions at most; the unconditional JA over
    # the upper half has 32 bits, so the tree works at any size.
    return [
        Instruction(_JMP_JGE_K, jt=1, jf=0, k=runs[middle][0]),
        Instruction(_JMP_JA, k=len(upper)),
        *upper,
        *lower,
    ]


def build_filter(trapped: Iterable[int]) -> list[Instruction]:
    """The filter program: TRACE (data = nr) for ``trapped``, ALLOW for the rest (and for an
    anonymous ``mmap``).

    Args:
        trapped: native x86_64 syscall numbers the tracer must see.

    Returns:
        The classic BPF instructions, for ``install_filter``.

    Raises:
        ValueError: a number is negative, has the x32 bit, or does not fit the 16-bit data.
    """
    numbers = set(trapped)
    bad = sorted(nr for nr in numbers if not 0 <= nr < FOREIGN_ABI)
    if bad:
        raise ValueError(f"not native x86_64 syscall numbers: {bad}")
    foreign = [Instruction(_RET_K, k=SECCOMP_RET_TRACE | FOREIGN_ABI)]
    program = [
        Instruction(_LD_W_ABS, k=_ARCH_OFFSET),
        Instruction(_JMP_JEQ_K, jt=1, jf=0, k=AUDIT_ARCH_X86_64),
        *foreign,
        Instruction(_LD_W_ABS, k=_NR_OFFSET),
        Instruction(_JMP_JGE_K, jt=0, jf=len(foreign), k=X32_SYSCALL_BIT),
        *foreign,
    ]
    if _SYS_MMAP in numbers:
        program += [
            Instruction(_JMP_JEQ_K, jt=0, jf=3, k=_SYS_MMAP),
            Instruction(_LD_W_ABS, k=_MMAP_FLAGS_OFFSET),
            Instruction(_JMP_JSET_K, jt=0, jf=1, k=MAP_ANONYMOUS),
            Instruction(_RET_K, k=SECCOMP_RET_ALLOW),
            Instruction(_LD_W_ABS, k=_NR_OFFSET),  # the number again, for the search
        ]
    runs = _runs(numbers)
    program += _search(runs) if runs else [Instruction(_RET_K, k=SECCOMP_RET_ALLOW)]
    if len(program) > BPF_MAXINSNS:
        raise ValueError(f"filter has {len(program)} instructions, the kernel takes {BPF_MAXINSNS}")
    return program


# --- installing it --------------------------------------------------------------------------


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


_LIBC: Final = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_prctl: Final = _LIBC.prctl
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_prctl.restype = ctypes.c_int
_syscall: Final = _LIBC.syscall
_syscall.restype = ctypes.c_long
_signal: Final = _LIBC.signal  # usable from any thread, unlike signal.signal
_signal.argtypes = (ctypes.c_int, ctypes.c_void_p)
_signal.restype = ctypes.c_void_p
_SIG_DFL: Final = 0


class PreparedFilter:
    """A filter program in C memory, ready to install with no allocation (safe after fork)."""

    __slots__ = ("_code", "_program")

    def __init__(self, program: Sequence[Instruction]) -> None:
        self._code = ctypes.create_string_buffer(b"".join(i.pack() for i in program))
        self._program = _SockFprog(len(program), ctypes.addressof(self._code))

    def install(self) -> None:
        """Install in the calling thread: NO_NEW_PRIVS first, as seccomp requires of non-root."""
        if _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            _raise_errno()
        pointer = ctypes.c_void_p(ctypes.addressof(self._program))
        for flags in (SECCOMP_FILTER_FLAG_SPEC_ALLOW, 0):
            if _syscall(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, flags, pointer) == 0:
                return
            if ctypes.get_errno() != errno.EINVAL:  # EINVAL: a kernel without the flag
                break
        _raise_errno()


def _raise_errno() -> None:
    code = ctypes.get_errno()
    raise OSError(code, os.strerror(code))


def install_filter(trapped: Iterable[int]) -> None:
    """Install the filter for ``trapped`` on the calling thread (irreversible).

    Raises:
        OSError: from prctl or seccomp.
    """
    PreparedFilter(build_filter(trapped)).install()


# --- spawning -------------------------------------------------------------------------------

#: Exit code of a child that could not exec (as a shell's "cannot execute").
_EXEC_FAILED: Final = 127
#: Signals Python ignores that an exec would keep ignored (subprocess's restore_signals).
_IGNORED_BY_PYTHON: Final = (signal.SIGPIPE, signal.SIGXFSZ)


def _candidates(program: str, env: Mapping[str, str]) -> list[bytes]:
    """Paths execvpe would try for ``program``, given the child's PATH."""
    if "/" in program:
        return [os.fsencode(program)]
    path = env.get("PATH", os.defpath)
    return [os.fsencode(os.path.join(d or ".", program)) for d in path.split(os.pathsep)]


def _child(
    go: int,
    report: int,
    paths: Sequence[bytes],
    argv: list[bytes],
    env: Mapping[bytes, bytes],
    cwd: str | None,
    cpu: int | None,
    stdio: Sequence[int | None],
    prepared: PreparedFilter,
    before_exec: Callable[[], None] | None,
) -> None:
    """Runs in the forked child and never returns; failures go to ``report`` as an errno."""
    step = b"fork"
    code = errno.EINVAL
    try:
        step = b"sync"
        if os.read(go, 1) != b"g":  # the parent gave up before seizing us
            os._exit(_EXEC_FAILED)
        step = b"stdio"
        # Move sources off 0-2 first, so that one dup2 cannot clobber another's source.
        sources = [os.dup(s) if s is not None and s < len(stdio) else s for s in stdio]
        for target, source in enumerate(sources):
            if source is not None:
                os.dup2(source, target)
        step = b"chdir"
        if cwd is not None:
            os.chdir(cwd)
        step = b"affinity"
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        step = b"signals"
        for number in _IGNORED_BY_PYTHON:
            _signal(number, _SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        step = b"kernel rules"
        if before_exec is not None:
            before_exec()
        step = b"seccomp"
        prepared.install()
        step = b"exec"
        code = errno.ENOENT
        for path in paths:
            try:
                os.execve(path, argv, env)
            except OSError as exc:
                # Like execvp: remember an error other than "not here" and go on.
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                    code = exc.errno or errno.EINVAL
    except OSError as exc:
        code = exc.errno or errno.EINVAL
    except BaseException:
        code = errno.EINVAL
    try:
        os.write(report, b"%d:%s" % (code, step))
    finally:
        os._exit(_EXEC_FAILED)


def spawn_traced(
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    cwd: str | None,
    trapped: Iterable[int],
    cpu: int | None = None,
    *,
    stdin: int | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    options: TraceOption = _ptrace.DEFAULT_OPTIONS,
    executable: str | None = None,
    before_exec: Callable[[], None] | None = None,
) -> int:
    """Start ``argv`` traced, with the seccomp filter for ``trapped`` installed before its exec.

    Args:
        argv: the program (looked up in ``env``'s PATH if it has no slash) and its arguments.
        env: the program's environment; None for this process's.
        cwd: the directory to run it in; None for this process's.
        trapped: native syscall numbers that stop in the tracer (``SeccompStop``).
        cpu: pin the program (and so all its descendants) to this CPU; None leaves it free.
        stdin, stdout, stderr: descriptors of this process to give the program; None inherits.
        options: ptrace options; ``DEFAULT_OPTIONS`` follows forks, clones and execs.
        executable: the file to execute, when it is not ``argv[0]`` looked up in PATH
            (an agent that found the program through its namespace).
        before_exec: called in the child just before the seccomp filter and the exec
            (a Landlock ``restrict_self``); it must not allocate or import.

    Returns:
        The pid, stopped at its ``PTRACE_EVENT_EXEC`` stop: the caller resumes it
        (``_ptrace.resume``) from its own event loop. The calling thread is its tracer.

    Raises:
        OSError: the program could not be executed (ENOENT, EACCES, ...), with its name;
            or ptrace/seccomp were refused.
    """
    if not argv:
        raise ValueError("argv must name a program")
    environment = dict(os.environ if env is None else env)
    paths = [os.fsencode(executable)] if executable else _candidates(argv[0], environment)
    argv_bytes = [os.fsencode(a) for a in argv]
    env_bytes = {os.fsencode(k): os.fsencode(v) for k, v in environment.items()}
    prepared = PreparedFilter(build_filter(trapped))
    stdio = (stdin, stdout, stderr)
    go_read, go_write = os.pipe()
    report_read, report_write = os.pipe()  # both ends close-on-exec (PEP 446)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; it execs or _exits
            os.close(go_write)
            os.close(report_read)
            _child(
                go_read,
                report_write,
                paths,
                argv_bytes,
                env_bytes,
                cwd,
                cpu,
                stdio,
                prepared,
                before_exec,
            )
        os.close(go_read)
        os.close(report_write)
        go_read = report_write = -1
        try:
            _ptrace.seize(pid, options)
            os.write(go_write, b"g")
            os.close(go_write)
            go_write = -1
            last = _run_to_exec(pid)
        except BaseException:
            _kill_and_reap(pid)
            raise
        report = _read_all(report_read)
        if report:
            # The child exited (and was reaped) after the error; say what failed.
            number, _, step = report.partition(b":")
            code = int(number)
            raise OSError(code, f"{os.strerror(code)} ({step.decode()})", argv[0])
        if not isinstance(last, _ptrace.ExecEvent):
            raise ChildProcessError(f"{argv[0]}: the child ended before its exec: {last}")
        return pid
    finally:
        for fd in (go_read, go_write, report_read, report_write):
            if fd >= 0:
                os.close(fd)


def _run_to_exec(pid: int) -> _ptrace.Event:
    """Resume ``pid`` until its exec stop or its death (reaped); return that event."""
    while True:
        event = _ptrace.wait_event(pid)
        match event:
            case _ptrace.ExecEvent() | _ptrace.Exited() | _ptrace.Killed():
                return event
            case _ptrace.SignalStop(signal=number):
                _ptrace.resume(pid, number)
            case _ptrace.GroupStop():
                _ptrace.listen(pid)
            case _:
                # Seccomp stops of the filter's own set-up or of a failed execve,
                # the exit stop of a thread-less child: let them run natively.
                _ptrace.resume(pid)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 512):
        chunks.append(chunk)
    return b"".join(chunks)


def _kill_and_reap(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while True:
        try:
            event = _ptrace.wait_event(pid)
        except ChildProcessError:
            return
        if isinstance(event, _ptrace.Exited | _ptrace.Killed):
            return
        with contextlib.suppress(ProcessLookupError):
            _ptrace.resume(pid)  # an exit stop, if this kernel still makes one on SIGKILL
