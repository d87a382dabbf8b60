"""When the agent releases a remote file: after the close of its last descriptor, at once or
with the next collection (closes of read-only files, a linker's hundreds of inputs, are
collected together); never while a descriptor of it is left."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers import Driver, Handle
from drivers.chirp import ChirpDriver
from drivers.ftp import FtpDriver
from drivers.local import LocalDriver
from drivers.xrootd import XRootDDriver
from reference_agent.agent import EVENTS_PER_COLLECTION
from reference_agent.files import RemoteFile
from servers import RunningServer
from tests.helpers import ROOT, served

SH = shutil.which("sh") or "/bin/sh"
FILES = 150  # more than EVENTS_PER_COLLECTION: a batch is collected in the middle


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with served("chirp/aviary") as running:
        for index in range(FILES):
            (running.data_dir / f"f{index:03d}").write_text(f"{index}\n")
        yield running


#: ``aviary run`` that prints how many scans of the live tasks' descriptors it made and how
#: many calls it stopped again at their exit, with a seeded regression: "eager" defers no
#: release (each event collects, so a close of a remote file waits for its exit), "blind"
#: scans see no descriptor, "writable-batched" and "locks-ignored" batch where a release must
#: come at once, "writes-loud" collects at once after every write-through file.
_CLI = """
import sys
from reference_agent import _fastpath, _ptrace, files
from reference_agent.agent import Agent
seeded = sys.argv.pop(1)
scans = [0]
exits = [0]
collect = files.RemoteFileTable.collect
def counted(self, live_pids):
    scans[0] += bool(len(self))
    return collect(self, live_pids)
files.RemoteFileTable.collect = counted
to_exit = _ptrace.resume_to_syscall_exit
def exit_counted(pid):
    exits[0] += 1
    return to_exit(pid)
_ptrace.resume_to_syscall_exit = exit_counted
if seeded == "eager":
    Agent.defer_release = lambda self: False
elif seeded == "writes-loud":
    files.RemoteFile.quiet_release = property(lambda self: self.read_only)
elif seeded == "writable-batched":
    files.RemoteFileTable.all_quiet = property(lambda self: True)
elif seeded == "locks-ignored":
    from reference_agent.locks import LockTable
    LockTable.is_empty = lambda self: True
elif seeded == "blind":
    _fastpath.FastPath.held = lambda self, pids, keys: [False] * len(keys)
    files.scan_held = lambda pids, keys: [False] * len(keys)
from harness.cli import main
try:
    status = main(sys.argv[1:])
finally:
    print(f"scans {scans[0]}", file=sys.stderr)
    print(f"exits {exits[0]}", file=sys.stderr)
sys.exit(status)
"""


def _run_cli(
    options: list[str], script: str, *, seeded: str = "none"
) -> subprocess.CompletedProcess[str]:
    """``aviary run OPTIONS -- sh -c script`` in a child process (the agent waits for any
    child: the servers' parent cannot be its tracer)."""
    return subprocess.run(
        [sys.executable, "-c", _CLI, seeded, "run", *options, "--", SH, "-c", script],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def _run(
    server: RunningServer,
    tmp_path: Path,
    script: str,
    *,
    seeded: str = "none",
    count: str = "scans",
) -> tuple[int, int]:
    """``sh -c script`` ({mnt}: a Chirp mount point) under the agent: its exit status and
    the number of scans (``count="exits"``: of calls stopped again at their exit)."""
    mount_point = tmp_path / "mnt"
    mount = f"{mount_point}=chirp://127.0.0.1:{server.port}/"
    done = _run_cli(["-M", mount], script.format(mnt=mount_point), seeded=seeded)
    counts = [int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith(count)]
    assert counts, done.stderr
    return done.returncode, counts[0]


#: Most scans a batched run of FILES files may make: each file is four or five events (its
#: close, the shell's dup2 back, a subshell's exit).
BATCHED = 5 * FILES // EVENTS_PER_COLLECTION + 1


def _scans(server: RunningServer, tmp_path: Path, script: str, *, seeded: str = "none") -> int:
    """The scans ``script`` cost under the agent; it must succeed."""
    status, scans = _run(server, tmp_path, script, seeded=seeded)
    assert status == 0
    return scans


READ_ALL = (
    "i=0; while [ $i -lt " + str(FILES) + " ]; do "
    'n=$(printf "%03d" $i); read v < {mnt}/f$n; [ "$v" = "$i" ] || exit 3; i=$((i+1)); done'
)


def test_closes_of_read_only_files_are_collected_in_batches(
    server: RunningServer, tmp_path: Path
) -> None:
    """A shell reading 150 remote files one after another: one scan per EVENTS_PER_COLLECTION
    events, not one per close (seeded: collecting at every event scans 150 times or more)."""
    assert 1 <= _scans(server, tmp_path, READ_ALL) <= BATCHED
    assert _scans(server, tmp_path, READ_ALL, seeded="eager") >= FILES


WRITE_ALL = (
    "i=0; while [ $i -lt " + str(FILES) + " ]; do "
    'echo "w$i" > {mnt}/w$(printf "%03d" $i) || exit 3; i=$((i+1)); done'
)


def test_a_close_whose_release_waits_costs_no_stop_at_its_exit(
    server: RunningServer, tmp_path: Path
) -> None:
    """Each of the FILES reads opens a remote file, dup2s it onto stdin, closes it and dup2s
    stdin back: the opens stop at their exit (the placeholder's descriptor), the closes and
    dup2s whose release waits for a batch do not (seeded: they do, four stops a file)."""
    status, exits = _run(server, tmp_path, READ_ALL, count="exits")
    assert status == 0
    assert exits <= FILES + BATCHED
    status, exits = _run(server, tmp_path, READ_ALL, seeded="eager", count="exits")
    assert status == 0 and exits >= 2 * FILES


def test_closes_of_files_written_through_are_collected_in_batches(
    server: RunningServer, tmp_path: Path
) -> None:
    """A shell writing 150 files on a Chirp mount (each write reaches the server at once, so
    the release only closes a handle): batches, as for reads, and every file holds what was
    written (seeded: writable files collected at each close scan 150 times or more)."""
    assert 1 <= _scans(server, tmp_path, WRITE_ALL) <= BATCHED
    for index in range(FILES):
        assert (server.data_dir / f"w{index:03d}").read_text() == f"w{index}\n"
    assert _scans(server, tmp_path, WRITE_ALL, seeded="writes-loud") >= FILES


def test_which_releases_may_wait(tmp_path: Path) -> None:
    """Quiet: read-only anywhere, writable through Chirp or the local driver. At once: a
    writable FTP file (its upload happens at close), an XRootD one (the open keeps its
    name busy), a writable file with a local copy to send back (--cache whole)."""

    def remote(driver: Driver, flags: int, local_copy: str | None = None) -> RemoteFile:
        opened = RemoteFile(driver, Handle(3), "/x", "/x", flags, False, 0)
        opened.local_copy = local_copy
        return opened

    chirp, local = ChirpDriver("127.0.0.1", 1), LocalDriver(tmp_path)
    ftp, xrootd = FtpDriver("127.0.0.1", 1), XRootDDriver("127.0.0.1", 1)
    for driver in (chirp, local, ftp, xrootd):
        assert remote(driver, os.O_RDONLY).quiet_release
    assert remote(chirp, os.O_WRONLY | os.O_CREAT).quiet_release
    assert remote(local, os.O_RDWR).quiet_release
    assert not remote(ftp, os.O_WRONLY).quiet_release
    assert not remote(xrootd, os.O_RDWR).quiet_release
    assert not remote(chirp, os.O_RDWR, local_copy=str(tmp_path / "copy")).quiet_release


def test_a_file_still_held_is_never_released(server: RunningServer, tmp_path: Path) -> None:
    """Descriptor 3 and its dup 4 of one read-only remote file: closing 3, then reading 150
    other files (two batches collected meanwhile), the file is still read through 4
    (seeded: a scan blind to descriptors releases it, and the read finds nothing)."""
    script = "exec 3< {mnt}/f007 4<&3 3<&- && " + READ_ALL + ' && read v <&4 && [ "$v" = 7 ]'
    status, scans = _run(server, tmp_path, script)
    assert status == 0
    assert scans >= 2
    status, _ = _run(server, tmp_path, script, seeded="blind")
    assert status != 0


@pytest.fixture(scope="module")
def ftp_server() -> Iterator[RunningServer]:
    with served("ftp/pyftpdlib") as running:
        yield running


def test_a_writable_file_is_released_at_its_last_close(
    ftp_server: RunningServer, tmp_path: Path
) -> None:
    """An FTP upload finishes when the handle closes: right after the shell's redirection
    ends, the server's own directory holds the bytes (seeded: writable files batched like
    read-only ones, and the file is not there yet)."""
    mount = f"{tmp_path / 'mnt'}={ftp_server.url('/')}"

    def upload(name: str, seeded: str = "none") -> subprocess.CompletedProcess[str]:
        script = f"echo uploaded > {tmp_path / 'mnt'}/{name}; cat {ftp_server.data_dir / name}"
        return _run_cli(["-M", mount], script, seeded=seeded)

    done = upload("released")
    assert done.returncode == 0 and "uploaded" in done.stdout, done.stderr
    done = upload("batched", seeded="writable-batched")
    assert "uploaded" not in done.stdout, done.stdout


_FLOCK_HANDOVER = """
import fcntl, os, sys, time
path = sys.argv[1]
fd = os.open(path, os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
child = os.fork()
if child == 0:
    os.close(fd)  # inherited: the parent's copy is the locked open's last descriptor
    other = os.open(path, os.O_RDONLY)
    fcntl.flock(other, fcntl.LOCK_EX)  # waits for the parent's close
    os._exit(0)
time.sleep(0.3)
os.close(fd)  # the last descriptor of the locked open: the lock goes, the child gets it
for _ in range(100):  # then nothing the agent sees for 5 s but this wait
    done, status = os.waitpid(child, os.WNOHANG)
    if done:
        sys.exit(0)
    time.sleep(0.05)
os.kill(child, 9)
sys.exit(1)
"""


def test_a_locked_files_release_lets_the_waiter_go_at_once(
    server: RunningServer, tmp_path: Path
) -> None:
    """flock on a read-only remote open, then its close: the process waiting for the lock
    gets it while the holder is still running (seeded: batching that ignores locks keeps
    the lock until a collection the holder never causes)."""
    program = tmp_path / "handover.py"
    program.write_text(_FLOCK_HANDOVER)
    script = f"{sys.executable} {program} {{mnt}}/f001"
    assert _run(server, tmp_path, script)[0] == 0
    assert _run(server, tmp_path, script, seeded="locks-ignored")[0] != 0
