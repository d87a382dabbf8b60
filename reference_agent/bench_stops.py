"""What one ptrace stop costs here, with and without the seccomp filter and CPU pinning.

Covers: getpid (``syscall(SYS_getpid)``) and stat of a file, timed inside a small C
program compiled on the fly, run natively and under ``TracerLoop``:

- ``untrapped``: the filter is installed but lets the call through (SECCOMP_RET_ALLOW);
- ``emulated``: trapped, answered at the seccomp stop (getpid gets a made-up pid;
  stat is done by the tracer and the struct written with process_vm_writev);
- ``passthrough``: trapped, then run natively (one stop, resumed with PTRACE_CONT);
- ``+exit stop``: trapped, run natively and stopped again at its exit (PTRACE_SYSCALL),
  what a loop pays to see results;

each with the tracer and the tracee on one CPU (``pinned``) and left to the
scheduler (``free``). Run: ``python -m reference_agent.bench_stops [--iterations N]``.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reference_agent import _ptrace
from reference_agent._loop import SyscallHandler, TracerLoop
from reference_agent._memory import read_c_string, write_bytes
from reference_agent._ptrace import Registers, syscall_number

PROGRAM = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    long n = atol(argv[1]);
    const char *op = argv[2];
    struct stat st;
    long long start = now_ns();
    for (long i = 0; i < n; i++) {
        if (strcmp(op, "getpid") == 0) {
            syscall(SYS_getpid);
        } else if (stat(argv[3], &st) != 0) {
            perror("stat");
            return 1;
        }
    }
    printf("%.1f\n", (double)(now_ns() - start) / n);
    return 0;
}
"""

#: Iterations of a traced loop (a stop costs 10-150 us) and of a native one (~0.2 us).
TRACED_ITERATIONS = 2000  # calls per run
NATIVE_ITERATIONS = 200000  # calls per run
REPEATS = 3  # runs per cell; the median is reported

GETPID = syscall_number("getpid")
STAT = syscall_number("stat")
NEWFSTATAT = syscall_number("newfstatat")
#: What a real agent traps anyway, so that "untrapped" runs a realistic filter.
BACKGROUND_TRAPS = frozenset(
    syscall_number(name) for name in ("openat", "execve", "chdir", "getdents64", "readlink")
)
FAKE_PID = 4242
AT_SYMLINK_NOFOLLOW = 0x100

# struct stat on x86_64 (asm/stat.h): dev ino nlink, mode uid gid pad, rdev size blksize
# blocks, atime/mtime/ctime as (sec, nsec), 3 reserved.
_STAT_LAYOUT = struct.Struct("<QQQIIIiQqqqqqqqqq24x")


def _pack_stat(path: bytes, follow_symlinks: bool) -> bytes:
    st = os.stat(path, follow_symlinks=follow_symlinks)
    return _STAT_LAYOUT.pack(
        st.st_dev, st.st_ino, st.st_nlink, st.st_mode, st.st_uid, st.st_gid, 0, st.st_rdev,
        st.st_size, st.st_blksize, st.st_blocks,
        st.st_atime_ns // 10**9, st.st_atime_ns % 10**9,
        st.st_mtime_ns // 10**9, st.st_mtime_ns % 10**9,
        st.st_ctime_ns // 10**9, st.st_ctime_ns % 10**9,
    )  # fmt: skip


def emulate(pid: int, nr: int, registers: Registers) -> int | None:
    """Answer getpid and stat of a path in the tracer, as an agent would for a remote file."""
    if nr == GETPID:
        return FAKE_PID
    if nr not in (STAT, NEWFSTATAT):
        return None
    if nr == STAT:
        path_address, buffer_address, flags = registers.args[0], registers.args[1], 0
    else:
        _, path_address, buffer_address, flags = registers.args[:4]
    try:
        path = read_c_string(pid, path_address)
    except OSError as exc:
        return -(exc.errno or errno.EFAULT)
    if not path.startswith(b"/") or flags & ~AT_SYMLINK_NOFOLLOW:
        return None  # fstat through AT_EMPTY_PATH, a dirfd: not this benchmark's business
    try:
        data = _pack_stat(path, follow_symlinks=not flags & AT_SYMLINK_NOFOLLOW)
        write_bytes(pid, buffer_address, data)
    except OSError as exc:
        return -(exc.errno or errno.EFAULT)
    return 0


def passthrough(pid: int, nr: int, registers: Registers) -> int | None:
    """Look at the call (read its registers) and let it run natively."""
    return None


class TwoStopLoop(TracerLoop):
    """Passes trapped calls through with PTRACE_SYSCALL, as a loop that wants each
    result does: the seccomp stop, then the syscall-exit stop."""

    def _syscall(self, pid: int, nr: int, registers: Registers | None = None) -> None:
        if registers is None:
            _ptrace.get_registers(pid)
        _ptrace.resume_to_syscall_exit(pid)


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    op: str
    trapped: frozenset[int]
    handler: SyscallHandler | None
    cpu: int | None
    traced: bool = True
    #: The timed call stops in the tracer (so the run is short).
    stops: bool = False
    loop: type[TracerLoop] = TracerLoop


def compile_program(directory: Path) -> Path:
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise SystemExit("bench_stops needs gcc (apt-get install gcc)")
    source = directory / "stops.c"
    source.write_text(PROGRAM)
    binary = directory / "stops"
    subprocess.run([compiler, "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def run_case(binary: Path, target: Path, case: Case, iterations: int) -> float:
    """ns per call of one run of ``case``."""
    argv = [str(binary), str(iterations), case.op, str(target)]
    if not case.traced:
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        return float(out)
    read_end, write_end = os.pipe()
    try:
        loop = case.loop(case.trapped, case.handler)
        status = loop.run(argv, cpu=case.cpu, stdout=write_end)
        os.close(write_end)
        write_end = -1
        with os.fdopen(read_end, closefd=False) as output:
            out = output.read()
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    if status != 0:
        raise RuntimeError(f"{case.name}: exit status {status}")
    # A trapped case that did not stop once per call measured something else.
    if case.stops and loop.counters.seccomp_stops < iterations:
        raise RuntimeError(f"{case.name}: only {loop.counters.seccomp_stops} stops")
    return float(out)


def cases(cpu: int) -> list[Case]:
    result = []
    for op, traps in (("getpid", {GETPID}), ("stat", {STAT, NEWFSTATAT})):
        result.append(Case(f"{op:6} native", op, frozenset(), None, None, traced=False))
        for placement, where in (("pinned", cpu), ("free", None)):
            trapped = BACKGROUND_TRAPS | traps
            result += [
                Case(f"{op:6} untrapped   {placement}", op, BACKGROUND_TRAPS, passthrough, where),
                Case(f"{op:6} emulated    {placement}", op, trapped, emulate, where, stops=True),
                Case(
                    f"{op:6} passthrough {placement}", op, trapped, passthrough, where, stops=True
                ),
                Case(
                    f"{op:6} +exit stop  {placement}",
                    op,
                    trapped,
                    passthrough,
                    where,
                    stops=True,
                    loop=TwoStopLoop,
                ),
            ]
    return result


def main(arguments: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=TRACED_ITERATIONS)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    options = parser.parse_args(arguments)
    cpu = max(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="aviary-bench-") as scratch:
        directory = Path(scratch)
        binary = compile_program(directory)
        target = directory / "target"
        target.write_bytes(b"x" * 100)
        print(f"{'case':32} {'ns/op':>10}   (median of {options.repeats}; pinned = CPU {cpu})")
        for case in cases(cpu):
            iterations = options.iterations if case.stops else NATIVE_ITERATIONS
            samples = [run_case(binary, target, case, iterations) for _ in range(options.repeats)]
            print(f"{case.name:32} {statistics.median(samples):10.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
