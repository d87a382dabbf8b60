"""Record locks on remote files: the agent's lock table alone, then real processes under the agent."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from reference_agent.locks import (
    F_RDLCK,
    F_UNLCK,
    F_WRLCK,
    LOCK_EX,
    LOCK_SH,
    LOCK_UN,
    OFFSET_MAX,
    LockTable,
    Owner,
    RangeLock,
    Waiter,
    lock_range,
)
from servers import RunningServer
from tests.helpers import start_or_skip

FILE = (1, "/db")
P1, P2, P3 = Owner("process", 101), Owner("process", 102), Owner("process", 103)
D1, D2 = Owner("description", (9, 1)), Owner("description", (9, 2))


def test_lock_range_reads_l_start_and_l_len_as_fcntl_does() -> None:
    assert lock_range(10, 5) == (10, 14)
    assert lock_range(10, 0) == (10, OFFSET_MAX)
    assert lock_range(10, -4) == (6, 9)
    assert lock_range(2, -4) is None
    assert lock_range(-1, 1) is None


def test_LockTable_conflicts_between_owners_never_within_one() -> None:
    table = LockTable()
    assert table.set_range(FILE, P1, F_WRLCK, 0, 9) is None
    assert table.set_range(FILE, P1, F_RDLCK, 5, 5) is None  # its own lock: replaced, no conflict
    assert table.set_range(FILE, P2, F_RDLCK, 5, 5) is None  # readers share
    conflict = table.set_range(FILE, P2, F_WRLCK, 5, 5)
    assert conflict is not None and (conflict.type, conflict.owner) == (F_RDLCK, P1)
    assert table.set_range(FILE, P2, F_RDLCK, 10, 20) is None  # beside, not over
    assert table.test_range(FILE, P2, F_WRLCK, 0, 4) is not None
    assert table.test_range((1, "/other"), P2, F_WRLCK, 0, 4) is None  # another file


def test_LockTable_read_locks_share_write_locks_exclude() -> None:
    table = LockTable()
    assert table.set_range(FILE, P1, F_RDLCK, 0, OFFSET_MAX) is None
    assert table.set_range(FILE, P2, F_RDLCK, 0, OFFSET_MAX) is None
    assert table.set_range(FILE, P3, F_WRLCK, 100, 100) is not None


def test_LockTable_splits_and_merges_an_owners_ranges() -> None:
    table = LockTable()
    table.set_range(FILE, P1, F_WRLCK, 0, 99)
    table.set_range(FILE, P1, F_UNLCK, 40, 59)
    assert table.held_ranges(FILE) == [
        RangeLock(P1, F_WRLCK, 0, 39),
        RangeLock(P1, F_WRLCK, 60, 99),
    ]
    table.set_range(FILE, P1, F_WRLCK, 40, 59)
    assert table.held_ranges(FILE) == [RangeLock(P1, F_WRLCK, 0, 99)]
    table.set_range(FILE, P1, F_RDLCK, 10, 19)
    assert table.held_ranges(FILE) == [
        RangeLock(P1, F_WRLCK, 0, 9),
        RangeLock(P1, F_RDLCK, 10, 19),
        RangeLock(P1, F_WRLCK, 20, 99),
    ]


def test_LockTable_open_file_description_locks_meet_process_locks() -> None:
    table = LockTable()
    assert table.set_range(FILE, D1, F_WRLCK, 0, 0) is None
    assert table.set_range(FILE, D2, F_WRLCK, 0, 0) is not None
    conflict = table.set_range(FILE, P1, F_RDLCK, 0, 0)
    assert conflict is not None and conflict.owner.pid == -1  # F_GETLK shows -1 for OFD locks
    assert P1.pid == 101


def test_LockTable_flock_is_apart_from_byte_ranges() -> None:
    table = LockTable()
    table.set_range(FILE, P1, F_WRLCK, 0, OFFSET_MAX)
    assert table.set_flock(FILE, D1, LOCK_EX) is None
    assert table.set_flock(FILE, D2, LOCK_SH) == D1
    assert table.set_flock(FILE, D1, LOCK_SH) is None  # conversion
    assert table.set_flock(FILE, D2, LOCK_SH) is None
    assert table.set_flock(FILE, D2, LOCK_UN) is None
    assert table.flock_of(FILE, D1) == LOCK_SH and table.flock_of(FILE, D2) is None


def test_LockTable_release_grants_waiters_in_arrival_order() -> None:
    table = LockTable()
    table.set_range(FILE, P1, F_WRLCK, 0, 9)
    table.enqueue(Waiter(202, FILE, P2, F_WRLCK, 0, 9))
    table.enqueue(Waiter(303, FILE, P3, F_WRLCK, 5, 5))
    assert table.grant_waiters() == []
    granted = table.release(P1)
    assert [w.token for w in granted] == [202]  # P3 now waits for P2
    assert [w.token for w in table.release(P2, FILE)] == [303]
    assert table.held_ranges(FILE) == [RangeLock(P3, F_WRLCK, 5, 5)]


def test_LockTable_flock_waiters_and_cancel() -> None:
    table = LockTable()
    table.set_flock(FILE, D1, LOCK_EX)
    table.enqueue(Waiter(7, FILE, D2, LOCK_SH, flock=True))
    table.enqueue(Waiter(8, FILE, Owner("description", (9, 3)), LOCK_SH, flock=True))
    table.cancel(8)
    assert [w.token for w in table.release(D1)] == [7]
    assert table.flock_of(FILE, D2) == LOCK_SH


def test_LockTable_finds_a_deadlock_between_waiting_processes() -> None:
    table = LockTable()
    table.set_range(FILE, P1, F_WRLCK, 0, 0)
    table.set_range(FILE, P2, F_WRLCK, 1, 1)
    assert not table.would_deadlock(P1, P2)  # P2 waits for nobody yet
    table.enqueue(Waiter(202, FILE, P2, F_WRLCK, 0, 0))  # P2 waits for P1
    assert table.would_deadlock(P1, P2)  # P1 asking for byte 1 would close the circle
    assert not table.would_deadlock(P3, P2)


# -- real processes under the agent ------------------------------------------------------------

# Run by the agent: every line it prints is compared with the same program run natively.
LOCKER = textwrap.dedent(
    """
    import fcntl, os, struct, sys, time
    path = sys.argv[1]
    F_OFD_SETLK, F_OFD_SETLKW = 37, 38

    def getlk(fd, kind, start, length):
        raw = struct.pack("hhqqi4x", kind, 0, start, length, 0)
        kind, _, start, length, pid = struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK, raw))
        return kind, start, length, pid

    def try_lock(fd, kind, start, length, cmd=fcntl.F_SETLK):
        try:
            fcntl.fcntl(fd, cmd, struct.pack("hhqqi4x", kind, 0, start, length, 0))
            return "ok"
        except OSError as exc:
            return os.strerror(exc.errno)

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"x" * 100)
    fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        mine = os.open(path, os.O_RDWR)
        kind, start, length, pid = getlk(mine, fcntl.F_WRLCK, 0, 0)
        print("child sees", kind == fcntl.F_WRLCK, start, length, pid == os.getppid(), flush=True)
        print("child trylock", try_lock(mine, fcntl.F_WRLCK, 5, 1), flush=True)
        print("child beside", try_lock(mine, fcntl.F_WRLCK, 10, 1), flush=True)
        os.write(write_end, b"w")
        fcntl.lockf(mine, fcntl.LOCK_EX, 1, 5)  # waits for the parent's unlock
        print("child got it", flush=True)
        print("ofd vs child", try_lock(os.open(path, os.O_RDWR), fcntl.F_WRLCK, 5, 1, F_OFD_SETLK))
        try:
            fcntl.flock(mine, fcntl.LOCK_EX | fcntl.LOCK_NB)
            print("flock free of byte ranges", flush=True)
        except OSError as exc:
            print("flock", os.strerror(exc.errno), flush=True)
        os._exit(0)
    os.read(read_end, 1)
    time.sleep(0.2)
    other = os.open(path, os.O_RDONLY)
    os.close(other)  # POSIX: any close of the file drops the process's locks
    os.waitpid(child, 0)
    again = os.open(path, os.O_RDWR)
    print("parent after child exit", try_lock(again, fcntl.F_WRLCK, 0, 0), flush=True)
    a, b = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    fcntl.flock(a, fcntl.LOCK_EX)
    try:
        fcntl.flock(b, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        print("second description", os.strerror(exc.errno))
    os.close(a)
    fcntl.flock(b, fcntl.LOCK_SH | fcntl.LOCK_NB)
    print("after close", "ok")
    # A range from the current offset of a descriptor that has read (under --cache cto the
    # read handed the file to the kernel, whose offset it is then).
    r = os.open(path, os.O_RDONLY)
    os.read(r, 30)
    fcntl.lockf(r, fcntl.LOCK_SH | fcntl.LOCK_NB, 10, 5, os.SEEK_CUR)
    child = os.fork()
    if child == 0:
        kind, start, length, pid = getlk(os.open(path, os.O_RDWR), fcntl.F_WRLCK, 0, 0)
        print("read lock at", kind == fcntl.F_RDLCK, start, length, flush=True)
        os._exit(0)
    os.waitpid(child, 0)
    """
)


@pytest.fixture(scope="module", params=("chirp/cctools", "chirp/aviary"))
def server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    running = start_or_skip(request.param)
    try:
        yield running
    finally:
        running.stop()


def _locker(path: str, *prefix: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-c", LOCKER, path], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("cache", ["off", "cto"])
def test_locks_between_processes_match_native(
    server: RunningServer, tmp_path: Path, cache: str
) -> None:
    native = _locker(str(tmp_path / "locked"))
    assert native.returncode == 0, native.stderr
    assert "child got it" in native.stdout and "second description" in native.stdout
    assert "read lock at True 35 10" in native.stdout
    (server.data_dir / "locked").unlink(missing_ok=True)
    agent = (sys.executable, "-m", "harness.cli", "run", "--cache", cache, "--")
    traced = _locker(f"/chirp/127.0.0.1:{server.port}/locked", *agent)
    assert traced.returncode == 0, traced.stderr
    assert traced.stdout == native.stdout
    assert "not supported" not in traced.stderr
    assert (server.data_dir / "locked").stat().st_size == 100
    assert not os.path.exists("locked")


MAPPER = textwrap.dedent(
    """
    import errno, mmap, os, sys
    path = sys.argv[1]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.write(fd, b"." * 8192)
    shared = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    shared[0:5] = b"hello"
    os.pwrite(fd, b"write", 4096)  # through the descriptor: the map sees it
    print(shared[4096:4101])
    other = os.open(path, os.O_RDWR)
    try:
        mmap.mmap(other, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        print("second map")
    except OSError as exc:
        print("second map", errno.errorcode[exc.errno])
    shared.close()
    os.close(fd)
    print(os.pread(other, 5, 0), os.pread(other, 5, 4096))
    """
)


def test_shared_writable_map_goes_back_at_close(server: RunningServer) -> None:
    path = f"/chirp/127.0.0.1:{server.port}/mapped"
    traced = _locker_like(MAPPER, path)
    assert traced.returncode == 0, traced.stderr
    assert (
        traced.stdout.splitlines()
        == [
            "b'write'",
            "second map ENOTSUP",  # EOPNOTSUPP, failing closed: two opens would hold two diverging copies
            "b'hello' b'write'",
        ]
    )
    data = (server.data_dir / "mapped").read_bytes()
    assert data[:5] == b"hello" and data[4096:4101] == b"write" and len(data) == 8192


def _locker_like(program: str, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--", sys.executable, "-c", program, path],
        capture_output=True,
        text=True,
        timeout=60,
    )


# A waiter killed while it waits, and one that waits for a process that then exits.
KILLED_WAITER = textwrap.dedent(
    """
    import fcntl, os, signal, sys, time
    path = sys.argv[1]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    waiters = []
    for _ in range(2):
        child = os.fork()
        if child == 0:
            mine = os.open(path, os.O_RDWR)
            fcntl.lockf(mine, fcntl.LOCK_EX)
            os._exit(7)
        waiters.append(child)
    time.sleep(0.3)
    os.kill(waiters[0], signal.SIGKILL)
    print("killed", os.waitpid(waiters[0], 0)[1] == signal.SIGKILL)
    os.close(fd)  # the lock goes: the other waiter gets it and exits
    print("second", os.waitstatus_to_exitcode(os.waitpid(waiters[1], 0)[1]))
    """
)


def test_a_killed_waiter_is_forgotten_and_the_next_one_served(server: RunningServer) -> None:
    traced = _locker_like(KILLED_WAITER, f"/chirp/127.0.0.1:{server.port}/waited")
    assert traced.returncode == 0, traced.stderr
    assert traced.stdout.splitlines() == ["killed True", "second 7"]
