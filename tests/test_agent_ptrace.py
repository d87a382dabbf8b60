"""The agent's ptrace layer: real programs under the tracer loop, the seccomp filter, tracee memory.

Every program here runs for real under ``TracerLoop`` (ptrace works as root in CI).
Small C helpers are compiled once per module with gcc.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from reference_agent import _ptrace
from reference_agent._loop import TracerLoop, run_traced
from reference_agent._memory import read_bytes, read_c_string, write_bytes
from reference_agent._ptrace import ForkKind, Registers, syscall_name, syscall_number
from reference_agent._seccomp import (
    AUDIT_ARCH_X86_64,
    FOREIGN_ABI,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_TRACE,
    X32_SYSCALL_BIT,
    Instruction,
    build_filter,
    spawn_traced,
)

GETPID = syscall_number("getpid")
#: Longest a single test may take: a hung tracer fails instead of blocking the suite.
TEST_DEADLINE = 20  # seconds

HELPER_SOURCE = r"""
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define THREADS 8
static long expected_pid;

static void *ask_pid(void *arg) {
    long wrong = 0;
    for (int i = 0; i < 20; i++)
        if (syscall(SYS_getpid) != expected_pid) wrong++;
    return (void *)wrong;
}

static int threads(long expected) {
    pthread_t t[THREADS];
    long wrong = 0;
    expected_pid = expected;
    for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, ask_pid, NULL);
    for (int i = 0; i < THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        wrong += (long)r;
    }
    return wrong == 0 ? 0 : 1;
}

static volatile sig_atomic_t got_value = -1, got_code;

static void on_usr1(int sig, siginfo_t *info, void *context) {
    got_value = info->si_value.sival_int;
    got_code = info->si_code;
}

/* A queued signal reaches its handler with its value and code intact. */
static int handler(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &sa, NULL);
    union sigval value = {.sival_int = 1234};
    sigqueue(getpid(), SIGUSR1, value);
    return got_value == 1234 && got_code == SI_QUEUE ? 0 : 1;
}

static int wake[2];
static void note_usr1(int sig) { write(wake[1], "u", 1); }

/* A stopped child stays stopped (its handler does not run) until SIGCONT. */
static int groupstop(void) {
    struct pollfd p;
    int status;
    pipe(wake);
    signal(SIGUSR1, note_usr1);
    pid_t child = fork();
    if (child == 0)
        for (;;) pause();
    kill(child, SIGSTOP);
    if (waitpid(child, &status, WUNTRACED) != child || !WIFSTOPPED(status)) return 2;
    kill(child, SIGUSR1);
    p.fd = wake[0];
    p.events = POLLIN;
    if (poll(&p, 1, 300) != 0) return 3;
    kill(child, SIGCONT);
    if (poll(&p, 1, 10000) != 1) return 4;
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    return 0;
}

static int vforked(void) {
    int status;
    pid_t child = vfork();
    if (child == 0) _exit(7);
    waitpid(child, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 7 ? 0 : 1;
}

static void *exec_shell(void *arg) {
    char *argv[] = {"/bin/sh", "-c", "exit 6", NULL};
    execv(argv[0], argv);
    return NULL;
}

/* A thread that is not the leader calls execve: the process goes on as the shell. */
static int exec_from_thread(void) {
    pthread_t t;
    pthread_create(&t, NULL, exec_shell, NULL);
    for (;;) pause();
}

int main(int argc, char **argv) {
    if (!strcmp(argv[1], "threads")) return threads(atol(argv[2]));
    if (!strcmp(argv[1], "handler")) return handler();
    if (!strcmp(argv[1], "groupstop")) return groupstop();
    if (!strcmp(argv[1], "vfork")) return vforked();
    if (!strcmp(argv[1], "exec-thread")) return exec_from_thread();
    return 100;
}
"""


@pytest.fixture(scope="module")
def helper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("gcc")
    if compiler is None:
        pytest.fail("gcc is needed to build the traced test programs (apt-get install gcc)")
    directory = tmp_path_factory.mktemp("ptrace-helper")
    source = directory / "helper.c"
    source.write_text(HELPER_SOURCE)
    binary = directory / "helper"
    subprocess.run([compiler, "-O1", "-pthread", "-o", binary, source], check=True)
    return binary


class Deadline(Exception):
    pass


@pytest.fixture(autouse=True)
def deadline() -> Iterator[None]:
    """Fail a test that hangs: the loop kills its tracees when the exception reaches it."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise Deadline(f"test took more than {TEST_DEADLINE} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_DEADLINE)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _capture(tmp_path: Path, argv: list[str], loop: TracerLoop) -> tuple[int, str]:
    """Run under ``loop`` with stdout to a file; (status, output)."""
    out = tmp_path / "stdout"
    with out.open("wb") as stdout:
        status = loop.run(argv, stdout=stdout.fileno(), cwd=str(tmp_path))
    return status, out.read_text()


def _kill_traced(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    while not isinstance(_ptrace.wait_event(pid), _ptrace.Killed):
        _ptrace.resume(pid)  # the exit stop a SIGKILL still makes


# --- exit statuses ------------------------------------------------------------------------------


def test_true_exits_0() -> None:
    assert run_traced(["/bin/true"]) == 0
    assert run_traced(["/bin/false"]) == 1


def test_exit_code_of_a_shell() -> None:
    assert run_traced(["sh", "-c", "exit 3"]) == 3


def test_killed_by_signal_is_128_plus_signal() -> None:
    assert run_traced(["sh", "-c", "kill -TERM $$"]) == 128 + signal.SIGTERM


def test_program_that_cannot_be_executed(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        run_traced([str(tmp_path / "no-such-program")])
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(PermissionError):
        run_traced([str(script)])


# --- processes ------------------------------------------------------------------------------


def test_forking_pipeline_is_followed(tmp_path: Path) -> None:
    execs: list[int] = []

    def watch(pid: int, nr: int, registers: Registers) -> int | None:
        execs.append(pid)
        return None

    loop = TracerLoop({syscall_number("execve")}, watch)
    status, output = _capture(
        tmp_path, ["sh", "-c", "printf 'b\\nc\\na\\n' | sort -r | head -n 1"], loop
    )
    assert (status, output) == (0, "c\n")
    # sort and head each ran in a forked child, and their execs stopped in the tracer.
    assert loop.counters.forks[ForkKind.FORK] + loop.counters.forks[ForkKind.CLONE] >= 2
    assert len(set(execs)) >= 2
    assert loop.counters.execs >= 3  # sh itself, sort, head


def test_threads_each_stop_and_see_the_emulated_value(helper: Path) -> None:
    tids: set[int] = set()

    def fake_pid(pid: int, nr: int, registers: Registers) -> int | None:
        tids.add(pid)
        return 777

    loop = TracerLoop({GETPID}, fake_pid)
    assert loop.run([str(helper), "threads", "777"]) == 0
    assert len(tids) == 8
    assert loop.counters.forks[ForkKind.CLONE] == 8
    assert loop.counters.seccomp_stops == 8 * 20


def test_vfork_is_followed(helper: Path) -> None:
    loop = TracerLoop(())
    assert loop.run([str(helper), "vfork"]) == 0
    assert loop.counters.forks[ForkKind.VFORK] == 1


def test_exec_from_a_thread(helper: Path) -> None:
    loop = TracerLoop(())
    assert loop.run([str(helper), "exec-thread"]) == 6
    assert loop.counters.execs == 2  # the helper, then its thread's exec of sh


# --- signals ------------------------------------------------------------------------------------


def test_signal_reaches_its_handler_unchanged(helper: Path) -> None:
    loop = TracerLoop(())
    assert loop.run([str(helper), "handler"]) == 0
    assert loop.counters.signals_delivered >= 1


def test_group_stop_keeps_job_control(helper: Path) -> None:
    loop = TracerLoop(())
    # 3: the stopped child ran its handler (the tracer resumed it); 4: SIGCONT lost.
    assert loop.run([str(helper), "groupstop"]) == 0
    assert loop.counters.group_stops == 1


# --- syscalls: trapped, emulated, untrapped ----------------------------------------------------


def test_emulated_getpid_is_what_the_program_sees(tmp_path: Path) -> None:
    loop = TracerLoop({GETPID}, lambda pid, nr, registers: 31337)
    status, output = _capture(tmp_path, ["sh", "-c", "echo $$"], loop)
    assert (status, output) == (0, "31337\n")
    assert loop.counters.emulated >= 1


def test_emulated_failure_is_a_negative_errno(tmp_path: Path) -> None:
    mkdir = syscall_number("mkdir")
    loop = TracerLoop({mkdir}, lambda pid, nr, registers: -errno.EROFS)
    status, output = _capture(tmp_path, ["sh", "-c", "mkdir made 2>&1; echo $?"], loop)
    assert status == 0
    assert os.strerror(errno.EROFS) in output
    assert output.endswith("1\n")
    assert not (tmp_path / "made").exists()


def test_untrapped_syscalls_do_not_stop(tmp_path: Path) -> None:
    stops: list[int] = []

    def record(pid: int, nr: int, registers: Registers) -> int | None:
        stops.append(nr)
        return None

    loop = TracerLoop({syscall_number("mkdir")}, record)
    status, output = _capture(
        tmp_path, ["sh", "-c", "echo $$; grep Seccomp: /proc/self/status"], loop
    )
    pid_line, seccomp_line = output.splitlines()
    assert status == 0
    assert int(pid_line) > 1  # the real pid: getpid ran natively
    assert seccomp_line.split() == ["Seccomp:", "2"]  # the filter is installed
    assert stops == []


def test_a_failing_handler_kills_the_program() -> None:
    def broken(pid: int, nr: int, registers: Registers) -> int | None:
        raise RuntimeError("handler bug")

    with pytest.raises(RuntimeError, match="handler bug"):
        run_traced(["sh", "-c", "sleep 5 & echo $$; wait"], {GETPID}, broken)


# --- the seccomp filter, run by a small classic-BPF interpreter ---------------------------------


def _run_filter(
    program: list[Instruction], nr: int, arch: int = AUDIT_ARCH_X86_64, args: tuple[int, ...] = ()
) -> int:
    padded = (*args, *(0,) * (6 - len(args)))
    data = struct.pack("<iIQ6Q", nr, arch, 0, *padded)
    accumulator, pc = 0, 0
    while True:
        insn = program[pc]
        klass = insn.code & 0x07
        if klass == 0x00:  # LD W ABS
            accumulator = struct.unpack_from("<I", data, insn.k)[0]
        elif klass == 0x04:  # ALU OR K
            assert insn.code == 0x44
            accumulator |= insn.k
        elif klass == 0x06:  # RET K / RET A
            return insn.k if insn.code == 0x06 else accumulator
        elif klass == 0x05:  # JMP
            operation = insn.code & 0xF0
            if operation == 0x00:
                pc += insn.k
            else:
                taken = {
                    0x10: accumulator == insn.k,
                    0x20: accumulator > insn.k,
                    0x40: bool(accumulator & insn.k),
                }.get(operation, accumulator >= insn.k)
                pc += insn.jt if taken else insn.jf
        pc += 1


@pytest.mark.parametrize(
    "trapped",
    [set(), {GETPID}, {0, 1, 2, 3, 4, 5, 100, 101, 257, 262, 435}, set(_ptrace.SYSCALL_NAMES)],
    ids=["none", "getpid", "runs", "all"],
)
def test_filter_traces_exactly_the_trapped_set(trapped: set[int]) -> None:
    program = build_filter(trapped)
    for nr in range(600):
        expected = SECCOMP_RET_TRACE | nr if nr in trapped else SECCOMP_RET_ALLOW
        assert _run_filter(program, nr) == expected, nr
    foreign = SECCOMP_RET_TRACE | FOREIGN_ABI
    assert _run_filter(program, X32_SYSCALL_BIT | GETPID) == foreign
    assert _run_filter(program, -1) == foreign
    assert _run_filter(program, GETPID, arch=0x40000003) == foreign  # i386 via int 0x80


def test_filter_lets_anonymous_mmaps_through_and_traps_file_mappings() -> None:
    mmap, private, anonymous = 9, 0x02, 0x20
    program = build_filter({mmap, GETPID})
    file_mapping = (0, 4096, 1, private, 3, 0)
    assert _run_filter(program, mmap, args=file_mapping) == SECCOMP_RET_TRACE | mmap
    anonymous_mapping = (0, 4096, 3, private | anonymous, 0xFFFFFFFFFFFFFFFF, 0)
    assert _run_filter(program, mmap, args=anonymous_mapping) == SECCOMP_RET_ALLOW
    assert _run_filter(program, GETPID) == SECCOMP_RET_TRACE | GETPID
    for nr in range(600):  # the rest of the set is as before
        if nr != mmap:
            expected = SECCOMP_RET_TRACE | nr if nr == GETPID else SECCOMP_RET_ALLOW
            assert _run_filter(program, nr, args=anonymous_mapping) == expected, nr
    assert _run_filter(build_filter({GETPID}), mmap, args=file_mapping) == SECCOMP_RET_ALLOW


def test_filter_refuses_non_native_numbers() -> None:
    for bad in (-1, X32_SYSCALL_BIT, FOREIGN_ABI):
        with pytest.raises(ValueError):
            build_filter({bad})


def test_syscall_names_come_from_python_ptrace() -> None:
    assert (syscall_number("getpid"), syscall_name(39)) == (39, "getpid")
    assert syscall_number("newfstatat") == 262
    assert syscall_number("execve") == 59  # not the x32 entry point 520
    assert syscall_number("fchmodat2") == 452  # newer than python-ptrace's table
    assert syscall_name(10_000) == "syscall_10000"
    with pytest.raises(KeyError):
        syscall_number("no_such_call")


# --- tracee memory ---------------------------------------------------------------------------


def _stack_end(pid: int) -> int:
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if line.endswith("[stack]"):
            return int(re.split("[- ]", line)[1], 16)
    raise AssertionError("no [stack] mapping")


def test_memory_round_trip_on_a_traced_child() -> None:
    pid = spawn_traced(["/bin/sleep", "30", "marker-argument"], None, None, set())
    try:
        # At the exec stop the stack holds argc, then the argv pointers.
        sp = _ptrace.get_registers(pid).sp
        argc, argv0, _argv1, argv2 = struct.unpack("<4Q", read_bytes(pid, sp, 32))
        assert argc == 3
        assert read_c_string(pid, argv0) == b"/bin/sleep"
        assert read_c_string(pid, argv2) == b"marker-argument"
        write_bytes(pid, argv2, b"MARKER")
        assert read_c_string(pid, argv2) == b"MARKER-argument"
        assert read_bytes(pid, argv2, 6) == b"MARKER"

        # A string that ends just before an unmapped page reads fine, in one call.
        end = _stack_end(pid)
        write_bytes(pid, end - 6, b"edge!\0")
        assert read_c_string(pid, end - 6) == b"edge!"
        # One that runs into it, or is too long, fails as the kernel would.
        write_bytes(pid, end - 6, b"edge!!")
        with pytest.raises(OSError) as fault:
            read_c_string(pid, end - 6)
        assert fault.value.errno == errno.EFAULT
        with pytest.raises(OSError) as too_long:
            read_c_string(pid, argv2, limit=4)
        assert too_long.value.errno == errno.ENAMETOOLONG
        for bad in (lambda: read_bytes(pid, end - 4, 8), lambda: write_bytes(pid, 0, b"x")):
            with pytest.raises(OSError) as exc:
                bad()
            assert exc.value.errno == errno.EFAULT
    finally:
        _kill_traced(pid)


# --- the adapter's stops, driven by hand ------------------------------------------------------


def test_seccomp_stop_then_exit_stop_shows_the_result() -> None:
    pid = spawn_traced(["sh", "-c", "echo $$ >/dev/null"], None, None, {GETPID})
    try:
        _ptrace.resume(pid)
        assert _ptrace.wait_event(pid) == _ptrace.SeccompStop(pid, GETPID)
        assert _ptrace.get_registers(pid).nr == GETPID
        # From a seccomp stop, PTRACE_SYSCALL stops next at the same call's exit.
        _ptrace.resume_to_syscall_exit(pid)
        assert _ptrace.wait_event(pid) == _ptrace.SyscallExitStop(pid)
        assert _ptrace.get_registers(pid).result == pid
        _ptrace.resume(pid)
        event = _ptrace.wait_event(pid)
        while not isinstance(event, _ptrace.Exited):
            _ptrace.resume(pid)
            event = _ptrace.wait_event(pid)
        assert event == _ptrace.Exited(pid, 0)
    except BaseException:
        _kill_traced(pid)
        raise


def test_interrupt_stops_a_running_tracee() -> None:
    pid = spawn_traced(["sleep", "30"], None, None, set())
    try:
        _ptrace.resume(pid)
        _ptrace.interrupt(pid)
        assert _ptrace.wait_event(pid) == _ptrace.InterruptStop(pid)
        assert _ptrace.poll_event(pid) is None
        with pytest.raises(ProcessLookupError):
            _ptrace.resume(os.getpid())  # not our tracee: ESRCH
    finally:
        _kill_traced(pid)
