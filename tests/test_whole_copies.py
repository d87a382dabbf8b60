"""``--cache whole``: what a program does through one descriptor of its local copy.

Covers: ``Agent.content_file`` (a copy's truncates, copies in and out and O_APPEND are the
kernel's, on the copy), ``RemoteFile.stat`` of a changed copy, ``sys_fsync`` sending the
copy, and ``whole_cache.write_back`` keeping the file's mode and the copy's times.

Scenario: ``SCENARIO`` writes, fstats, truncates up and down, fsyncs and reads the file
as another client sees it (the server's own directory; natively the same file), sets times
and mode, copies into and out of a copy with
copy_file_range and sendfile, and appends after F_SETFL O_APPEND; it prints what it sees.
Natively on a local directory and under ``aviary run --cache whole`` on a Chirp mount it
must print the same; ``cp`` of a file opened read-only (served from ``--cache-dir``'s
shared copy) must work, fstat of it telling the remote file. (Other opens in the same run share the copy:
``tests/test_file_semantics.py`` covers them.) A copy whose name was unlinked or renamed over while
it was open goes nowhere at close; one renamed while open goes to its new name. Each
seeded regression must be caught: fstat answered by the server, truncates and copies sent
to the server (the copy then undid them at close), fsync that does not send the copy, a
write-back that leaves the server's create mode, one that leaves the server's clock for
times, a copy sent back under a name that was unlinked or renamed over (the file comes
back, the replacement is overwritten), and renames not followed (a copy renamed while open
is sent back under its old name), and a --cache-dir copy left to the kernel's fstat (cp:
"replaced while being copied").
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.local import LocalDriver
from reference_agent.files import RemoteFile, RemoteFileTable
from servers import RunningServer
from tests.helpers import (
    Seen,
    native_steps,
    printed_steps_under_agent,
    scenario_script,
    served,
)

SCENARIO = r"""
import fcntl, json, os, subprocess, sys
base, elsewhere = sys.argv[1], sys.argv[2]  # elsewhere: where another client sees base
os.mkdir(base)
seen = []
def p(name):
    return os.path.join(base, name)
def whole(name, where=base):
    with open(os.path.join(where, name), "rb") as f:
        return f.read().hex()

fd = os.open(p("a"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"abc")
seen.append(["written", os.fstat(fd).st_size, os.lseek(fd, 0, os.SEEK_END)])
os.ftruncate(fd, 8)
seen.append(["grown", os.fstat(fd).st_size, os.pread(fd, 20, 0).hex()])
os.ftruncate(fd, 2)
seen.append(["cut", os.fstat(fd).st_size, os.pread(fd, 20, 0).hex()])
os.fsync(fd)
seen.append(["after fsync, another client reads", whole("a", elsewhere)])
os.write(fd, b"Z")
os.utime(fd, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
os.fchmod(fd, 0o640)
seen.append(["times and mode", os.fstat(fd).st_mtime_ns, oct(os.fstat(fd).st_mode & 0o777)])
os.close(fd)
st = os.stat(p("a"))
seen.append(["after close", whole("a"), st.st_mtime_ns, oct(st.st_mode & 0o777)])

source = os.open(p("b"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(source, b"source bytes")
target = os.open(p("c"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
copied = os.copy_file_range(source, target, 6, 0)
sent = os.sendfile(target, source, 7, 5)
seen.append(["copies", copied, sent, os.pread(target, 20, 0).hex(), os.fstat(target).st_size])
os.close(source); os.close(target)
seen.append(["copied, after close", whole("c")])

fd = os.open(p("d"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"12345")
os.lseek(fd, 1, os.SEEK_SET)
fcntl.fcntl(fd, fcntl.F_SETFL, os.O_APPEND)
os.write(fd, b"Z")
seen.append(["appended", os.lseek(fd, 0, os.SEEK_CUR)])
os.close(fd)
seen.append(["appended, after close", whole("d")])
fd = os.open(p("e"), os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, b"unlinked while open")
os.unlink(p("e"))
os.close(fd)
fd = os.open(p("f"), os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, b"replaced while open")
with open(p("g"), "wb") as g:
    g.write(b"the replacement")
os.rename(p("g"), p("f"))
os.close(fd)
seen.append(["names gone while open", sorted(os.listdir(base)), whole("f")])
fd = os.open(p("h"), os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, b"data")
os.rename(p("h"), p("i"))
os.write(fd, b"+more")
os.close(fd)
seen.append(["renamed while open", sorted(os.listdir(base)), whole("i")])
with open(p("r"), "wb") as f:
    f.write(b"read me")
os.chmod(p("r"), 0o644)
fd = os.open(p("r"), os.O_RDONLY)
opened, named = os.fstat(fd), os.stat(p("r"))
fields = ("st_dev", "st_ino", "st_mode", "st_uid", "st_size")
seen.append(["stat and fstat of a file read", [getattr(opened, f) == getattr(named, f) for f in fields]])
os.close(fd)
copied = subprocess.run(["cp", p("r"), p("r2")], capture_output=True, text=True)
seen.append(["cp of it", copied.returncode, copied.stderr, os.path.exists(p("r2"))])
fd = os.open(p("r"), os.O_RDONLY)  # the runs' shared copy, held while the file is cut
os.truncate(p("r"), 2)
os.close(fd)
print(json.dumps(seen))
"""

#: ``aviary run`` with a seeded regression (see the module's docstring).
_CLI = """
import os, sys
from drivers.chirp._driver import ChirpDriver
from reference_agent import agent, files, sys_file
seeded = sys.argv.pop(1)
if seeded == "server-fstat":
    files.RemoteFile.stat = lambda self: self.cached or self.driver.fstat(self.handle)
elif seeded == "remote-truncate":
    agent.Agent.content_file = agent.Agent.remote_file
elif seeded == "no-fsync-push":
    fsync, sync, in_fsync = sys_file.sys_fsync, files.RemoteFile.sync, [False]
    def fsync_without_push(agent_, call):
        in_fsync[0] = True
        try:
            return fsync(agent_, call)
        finally:
            in_fsync[0] = False
    files.RemoteFile.sync = lambda self, in_place=False: None if in_fsync[0] else sync(self, in_place)
    sys_file.sys_fsync = fsync_without_push
elif seeded == "cached-copy-local":
    from reference_agent._common import rewrite_args
    sys_file._open_cached_copy = lambda agent_, call, index, resolved, target, st, copy: (
        rewrite_args(call, {index: copy})
    )
elif seeded == "shared-copy-written":
    def copy_takes(self, change):
        with open(self.local_copy, "r+b", buffering=0) as copy:
            os.ftruncate(copy.fileno(), change.length)
    files.RemoteFile._copy_takes = lambda self, change: (
        copy_takes(self, change) if self.local_copy is not None else None
    )
elif seeded == "create-mode":
    chmod = ChirpDriver.chmod
    def chmod_but_temporaries(self, path, mode):
        if ".aviary-" not in path:
            chmod(self, path, mode)
    ChirpDriver.chmod = chmod_but_temporaries
elif seeded == "server-clock":
    original = files.write_back
    files.write_back = lambda driver, path, data, mode, times_ns=None, linked=False: original(
        driver, path, data, mode, linked=linked
    )
elif seeded == "names-kept":
    files.RemoteFileTable.unnamed = lambda self, driver, path, former_name: None
elif seeded == "renames-unfollowed":
    agent.Agent.renamed = lambda self, *args: None
from harness.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with served("chirp/aviary") as running:
        yield running


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scenario_script(tmp_path_factory, "whole-copies", SCENARIO)


@pytest.fixture(scope="module")
def native(script: Path, tmp_path_factory: pytest.TempPathFactory) -> Seen:
    """What the kernel says on a local directory."""
    return native_steps(script, tmp_path_factory)


def _under_agent(server: RunningServer, script: Path, tmp_path: Path, seeded: str = "none") -> Seen:
    mount_point = tmp_path / "mnt"
    options = ["--cache", "whole", "--cache-dir", str(tmp_path / "cache"),
               "-M", f"{mount_point}=chirp://127.0.0.1:{server.port}/"]  # fmt: skip
    work = f"work-{seeded}-{tmp_path.name}"  # the server's own directory: another client's view
    argv = [sys.executable, str(script), str(mount_point / work), str(server.data_dir / work)]
    return printed_steps_under_agent(_CLI, seeded, options, argv)


def test_a_copy_behaves_as_the_file_through_its_descriptor(
    server: RunningServer, script: Path, native: Seen, tmp_path: Path
) -> None:
    assert _under_agent(server, script, tmp_path) == native


@pytest.mark.parametrize(
    "seeded",
    [
        "server-fstat",
        "remote-truncate",
        "no-fsync-push",
        "create-mode",
        "server-clock",
        "names-kept",
        "renames-unfollowed",
        "cached-copy-local",
    ],
)
def test_each_seeded_regression_is_caught(
    server: RunningServer, script: Path, native: Seen, tmp_path: Path, seeded: str
) -> None:
    assert _under_agent(server, script, tmp_path, seeded) != native


@pytest.mark.parametrize("seeded", ["none", "shared-copy-written"])
def test_the_runs_shared_copies_are_never_written(
    server: RunningServer, script: Path, tmp_path: Path, seeded: str
) -> None:
    """A --cache-dir copy is named by the remote size it was fetched at; a change by name
    while it is open (the scenario's last truncate) must leave it so, for the runs after
    (seeded: the copy takes the change as a run's own copy does, and is cut)."""
    _under_agent(server, script, tmp_path, seeded)
    sizes = {
        c.name: (int(c.name.split("-")[1]), c.stat().st_size)
        for c in (tmp_path / "cache").iterdir()
    }
    cut = [name for name, (named, held) in sizes.items() if named != held]
    assert (cut == []) == (seeded == "none"), sizes


@pytest.mark.parametrize("opening", [1, 0])
def test_a_copy_an_open_was_pointed_at_is_held_until_the_open_is_made(
    tmp_path: Path, opening: int
) -> None:
    """Between the agent pointing an open at a run's whole copy and the kernel making that
    open, no descriptor shows the copy: a collection then must keep it, or the open meets a
    removed file (sqlite's "disk I/O error" under load). Without an open under way (0), the
    same copy, held by nothing, is released and removed: the check can fail."""
    (tmp_path / "f").write_bytes(b"x")
    copy = tmp_path / "copy"
    copy.write_bytes(b"x")
    driver = LocalDriver(tmp_path)
    remote = RemoteFile(driver, driver.open("f", os.O_RDONLY), "/mnt/f", "f", os.O_RDONLY, False, 0)
    remote.local_copy, remote.opening = str(copy), opening
    table = RemoteFileTable()
    table.held_scan = lambda pids, keys: [False] * len(keys)  # no descriptor shows it
    holder = os.open(copy, os.O_RDONLY)
    table.add(os.getpid(), holder, remote)
    os.close(holder)
    released = table.collect([])
    if not released:
        driver.close(remote.handle)  # what the release closes once the open is made
    assert (released == [], copy.exists()) == ((True, True) if opening else (False, False))


def test_a_copy_whose_first_open_is_under_way_is_shared_by_the_next_open(tmp_path: Path) -> None:
    """Between the agent pointing a process's first open of a file at a new whole copy and
    the kernel making it, another process may open the file: it must find that copy, or
    the two work on two copies and their locks never meet (three sqlite writers under load:
    "disk I/O error", rows lost). The first open made, the copy is in the table; when every
    open of a new copy failed, the copy goes (handle closed, file removed)."""
    (tmp_path / "f").write_bytes(b"x")
    driver = LocalDriver(tmp_path)
    table = RemoteFileTable()

    def new_copy(name: str) -> RemoteFile:
        copy = tmp_path / name
        copy.write_bytes(b"x")
        remote = RemoteFile(driver, driver.open("f", os.O_RDWR), "/mnt/f", "f", os.O_RDWR, False, 0)
        remote.local_copy = str(copy)
        return remote

    first = new_copy("copy")
    table.copy_opening(first)
    assert table.live_copy(driver, "f") is first  # before the kernel made the first open
    table.copy_opening(first)  # the second open joins the copy
    holder = os.open(first.local_copy or "", os.O_RDONLY)
    table.copy_opened(first, os.getpid(), -errno.EMFILE)  # the first open failed after all
    assert table.live_copy(driver, "f") is first and Path(first.local_copy or "").exists()
    table.copy_opened(first, os.getpid(), holder)  # the second is made: the copy is known
    assert table.live_copy(driver, "f") is first and table.lookup(os.getpid(), holder) is first
    os.close(holder)

    lone = new_copy("lone")
    table.copy_opening(lone)
    table.copy_opened(lone, os.getpid(), -errno.ENOENT)  # its only open failed
    assert not Path(lone.local_copy or "").exists()
    driver.close(first.handle)  # what its release would close
