"""A file a program creates and reads back (an assembler's object) under ``--cache cto``.

Covers: ``RemoteFile.mirror`` and the write handlers for a mirrored placeholder
(``sys_read_write._write_mirrored``): an empty file opened read-write keeps its bytes in its
placeholder as the program writes them, so that the kernel answers its reads and seeks,
while every write still reaches the server first.

Scenario: ``mirrored_writes.c`` writes, seeks, reads, writes through a dup and through a
second open of the same file, copies out of it and another remote file into it, truncates
it and sets O_APPEND; each step prints what it saw. Run on a local directory, it prints the kernel's
answers; under the agent on a Chirp mount (cto and off) it must print the same, the file on
the server must hold the same bytes, and under cto its fifty seeks and reads must not
reach the agent. Each seeded regression must be caught: the kernel's write left out (the
offset does not move), a copy into the file that skips its placeholder, a copy out of it
that reads the open's (empty) read buffer, another open's write not followed, and no mirror
at all (the seeks reach Python).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reference_agent.read_cache import MIRROR_MAX
from servers import RunningServer
from tests.helpers import ROOT, compile_c, served

PROGRAM = Path(__file__).with_name("mirrored_writes.c")
SOURCE = b"copied"  # the other file the program copies from


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with served("chirp/aviary") as running:
        (running.data_dir / "source").write_bytes(SOURCE)
        yield running


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_c(PROGRAM, tmp_path_factory.mktemp("mirrored") / "mirrored_writes")


@pytest.fixture(scope="module")
def native(program: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """What the kernel says on a local directory."""
    local = tmp_path_factory.mktemp("local")
    (local / "source").write_bytes(SOURCE)
    done = subprocess.run([str(program), str(local)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


#: ``aviary run`` with a seeded regression: "emulated" answers a mirrored write in the agent
#: (the kernel's offset stays), "copy-skips" writes a copy to the server only,
#: "copy-out-skips" copies out of the open's read buffer, not its placeholder, "unfollowed"
#: drops another open's change, "never" mirrors nothing, "uncapped" lets a mirror outgrow
#: its bound. It prints the largest placeholder a mirror left at its release.
_CLI = """
import os, sys
from reference_agent import files, sys_read_write
seeded = sys.argv.pop(1)
sys_read_write.MIRROR_MAX = int(sys.argv.pop(1))
largest = [0]
release = files._release
def measured(remote):
    if remote.fill_fd >= 0:
        largest[0] = max(largest[0], os.fstat(remote.fill_fd).st_size)
    return release(remote)
files._release = measured
if seeded == "uncapped":
    sys_read_write.MIRROR_MAX = 1 << 62
elif seeded == "emulated":
    mirrored = sys_read_write._write_mirrored
    def emulated(agent, call, remote, buffers, at, **how):
        outcome = mirrored(agent, call, remote, buffers, at, **how)
        return sum(length for _, length in buffers) if outcome is None else outcome
    sys_read_write._write_mirrored = emulated
elif seeded == "copy-skips":
    def pwrite(self, data, offset, *, kernel_follows=False):
        return self.driver.pwrite(self.handle, data, offset)
    files.RemoteFile.pwrite = pwrite
elif seeded == "copy-out-skips":
    def pread(self, size, offset):
        if self.reader is None:
            return self.driver.pread(self.handle, size, offset)
        return self.reader.read(self._fetch_into, size, offset)
    files.RemoteFile.pread = pread
elif seeded == "unfollowed":
    files.RemoteFile.follow = lambda self, change: None
elif seeded == "never":
    files.RemoteFile.mirror = lambda self, pid, fd: False
from harness.cli import main
try:
    status = main(sys.argv[1:])
finally:
    print(f"largest mirror {largest[0]}", file=sys.stderr)
sys.exit(status)
"""


def _agent(
    server: RunningServer,
    argv: list[str],
    mount_point: Path,
    cache: str = "cto",
    seeded: str = "none",
    mirror_max: int = MIRROR_MAX,
) -> tuple[str, str]:
    """``argv`` under the agent with a Chirp mount at ``mount_point``: stdout and stderr."""
    (server.data_dir / "object").unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", _CLI, seeded, str(mirror_max), "run", "--cache", cache,
         "--summary", "-M", f"{mount_point}=chirp://127.0.0.1:{server.port}/", "--", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def _run(
    server: RunningServer, program: Path, tmp_path: Path, cache: str, seeded: str = "none"
) -> tuple[str, int]:
    """The program's output under the agent, and how many of its seeks reached Python."""
    mount_point = tmp_path / f"mnt-{cache}-{seeded}"
    output, log = _agent(server, [str(program), str(mount_point)], mount_point, cache, seeded)
    seeks = re.search(r"^lseek\s+chirp://\S+\s+(\d+)", log, re.MULTILINE)
    return output, int(seeks.group(1)) if seeks else 0


def _final_line(output: str) -> bytes:
    """The bytes the program read back after reopening the file."""
    match = re.search(r"^reopened \d+ \[(.*)\]$", output, re.MULTILINE)
    assert match, output
    return match.group(1).encode()


@pytest.mark.parametrize("cache", ["cto", "off"])
def test_a_file_written_and_read_back_behaves_as_on_a_local_disk(
    server: RunningServer, program: Path, native: str, tmp_path: Path, cache: str
) -> None:
    output, seeks = _run(server, program, tmp_path, cache)
    assert output == native
    assert (server.data_dir / "object").read_bytes() == _final_line(native)
    if cache == "cto":
        assert seeks < 10, f"{seeks} seeks reached the agent"  # the mirror's are the kernel's
    else:
        assert seeks >= 50


@pytest.mark.parametrize(
    "seeded", ["emulated", "copy-skips", "copy-out-skips", "unfollowed", "never"]
)
def test_each_seeded_regression_is_caught(
    server: RunningServer, program: Path, native: str, tmp_path: Path, seeded: str
) -> None:
    output, seeks = _run(server, program, tmp_path, "cto", seeded)
    assert output != native or seeks >= 50


#: Writes a file in 16 KiB pieces well past a small mirror bound, then reads it back.
_LARGE_OUTPUT = """
import hashlib, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
pieces = [bytes([i]) * 16384 for i in range(16)]
for piece in pieces:
    os.write(fd, piece)
os.lseek(fd, 0, os.SEEK_SET)
back = b"".join(iter(lambda: os.read(fd, 65536), b""))
print(back == b"".join(pieces), os.pread(fd, 3, 100_000) == pieces[6][:3])
"""


@pytest.mark.parametrize("seeded", ["none", "uncapped"])
def test_a_mirror_stops_at_its_bound_and_the_file_reads_back_whole(
    server: RunningServer, tmp_path: Path, seeded: str
) -> None:
    """With the bound at 64 KiB, a 256 KiB output reads back whole through the agent and
    its placeholder holds no more than the bound (seeded: a mirror past it, caught)."""
    script = tmp_path / "large.py"
    script.write_text(_LARGE_OUTPUT)
    mount_point = tmp_path / f"mnt-{seeded}"
    argv = [sys.executable, str(script), str(mount_point / "object")]
    output, log = _agent(server, argv, mount_point, seeded=seeded, mirror_max=65536)
    assert output.split() == ["True", "True"]
    largest = int(re.findall(r"^largest mirror (\d+)$", log, re.MULTILINE)[-1])
    assert (largest <= 65536) == (seeded == "none"), largest
