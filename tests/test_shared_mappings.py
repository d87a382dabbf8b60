"""Shared writable mappings of remote files next to other ways of changing them.

Covers: ``RemoteFile.map_shared`` and ``send_mapped``, :mod:`reference_agent.mapped_copy`
and ``RemoteFileTable.changed`` for mapped opens: what a shared mapping stores goes back
at fsync and close, and only that; writes, appends and truncates made meanwhile through
other descriptors or by name stay on the server (they were told to the program as done)
and reach the mapping; reads through the open that made the mapping see its stores.

Scenario: ``SCENARIO`` maps files and changes them every other way at once, printing what
it sees and ending with each file's bytes. Run natively on a local directory it prints the
kernel's answers; under the agent on a Chirp mount, with ``--cache off`` and ``cto``, it
must print the same and leave the same bytes on the server. One file is also changed by
another client meanwhile (through the server's own directory, which the agent does not
see): only the mapping's store may go back over it. Each seeded regression must be
caught: the whole copy sent back and the file cut to its length (what the agent did
before, when another descriptor's write, an append and a truncate by name were lost
too: now the copy follows those, and the other client's change is what it undoes), reads
of the mapped open from the server (the stores unseen), and the mapping not told of other
descriptors' changes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers import RunningServer
from tests.helpers import (
    Seen,
    native_steps,
    printed_steps_under_agent,
    scenario_script,
    served,
)

SCENARIO = r"""
import json, mmap, os, sys
base, behind = sys.argv[1], sys.argv[2]  # behind: the same directory, not through the agent
os.mkdir(base)
seen = []
def p(name):
    return os.path.join(base, name)
def put(name, data):
    with open(p(name), "wb") as f:
        f.write(data)
def whole(name):
    with open(p(name), "rb") as f:
        return f.read().decode()

put("read-back", b"0123456789")  # the mapped open reads what its mapping stored
fd = os.open(p("read-back"), os.O_RDWR)
m = mmap.mmap(fd, 10)
m[0:3] = b"abc"
seen.append(["read-back", os.pread(fd, 10, 0).decode(), os.read(fd, 4).decode()])
m.close(); os.close(fd)

put("other-write", b"0123456789")  # another descriptor writes while the mapping lives
mapped = os.open(p("other-write"), os.O_RDWR)
m = mmap.mmap(mapped, 10)
m[9:10] = b"Z"
other = os.open(p("other-write"), os.O_RDWR)
os.pwrite(other, b"XX", 2)
seen.append(["other-write seen by the mapping", m[:10].decode()])
m.close(); os.close(mapped)
seen.append(["other-write after the mapped close", whole("other-write")])
os.close(other)

put("append", b"0123456789")  # an append while a mapping that stores nothing lives
mapped = os.open(p("append"), os.O_RDWR)
m = mmap.mmap(mapped, 10)
appender = os.open(p("append"), os.O_WRONLY | os.O_APPEND)
os.write(appender, b"tail"); os.close(appender)
m.close(); os.close(mapped)

put("truncated", b"0123456789")  # a truncate by name after a store
mapped = os.open(p("truncated"), os.O_RDWR)
m = mmap.mmap(mapped, 10)
m[0:1] = b"Q"
m.close()
os.truncate(p("truncated"), 3)
os.close(mapped)

put("own", b"0123456789")  # the mapped open's own writes, truncate and stores, then fsync
fd = os.open(p("own"), os.O_RDWR)
m = mmap.mmap(fd, 10)
os.pwrite(fd, b"ww", 4)
m[8:10] = b"mm"
os.ftruncate(fd, 12)
os.pwrite(fd, b"!", 11)
os.fsync(fd)
seen.append(["own after fsync", whole("own")])
m[0:1] = b"L"
m.close(); os.close(fd)

fd = os.open(p("mirrored"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)  # written from empty
os.write(fd, b"abcdefgh")
m = mmap.mmap(fd, 8)
m[1:2] = b"B"
os.write(fd, b"ij")
other = os.open(p("mirrored"), os.O_RDWR)
os.pwrite(other, b"C", 2); os.close(other)
seen.append(["mirrored", os.pread(fd, 20, 0).decode(), m[:8].decode()])
m.close(); os.close(fd)

put("outside", b"0123456789")  # another client changes the file on the server meanwhile
fd = os.open(p("outside"), os.O_RDWR)
m = mmap.mmap(fd, 10)
m[0:1] = b"Q"
with open(os.path.join(behind, "outside"), "r+b") as f:
    f.seek(5); f.write(b"XX"); f.seek(0, 2); f.write(b"tail")
m.close(); os.close(fd)

for name in ("read-back", "other-write", "append", "truncated", "own", "mirrored", "outside"):
    seen.append([name, whole(name)])
print(json.dumps(seen))
"""

#: ``aviary run`` with a seeded regression: "whole" sends the whole copy back and cuts the
#: file to its length, "server-reads" reads the mapped open from the server, "unfollowed"
#: keeps other descriptors' changes from the mapping.
_CLI = """
import sys
from reference_agent import files
seeded = sys.argv.pop(1)
if seeded == "whole":
    def whole(self):
        if self.mapping is None:
            return
        data = self.mapping._placeholder()
        done = 0
        while done < len(data):
            done += self.driver.pwrite(self.handle, data[done:], done)
        if self.driver.fstat(self.handle).st_size != len(data):
            self.driver.ftruncate(self.handle, len(data))
    files.RemoteFile.send_mapped = whole
elif seeded == "server-reads":
    for name in ("pread", "read_views"):
        def unmapped(self, *args, _original=getattr(files.RemoteFile, name)):
            mapping, self.mapping = self.mapping, None
            try:
                return _original(self, *args)
            finally:
                self.mapping = mapping
        setattr(files.RemoteFile, name, unmapped)
elif seeded == "unfollowed":
    heard = files.RemoteFile.changed_elsewhere
    def unheard_by_mapping(self, change):
        mapping, self.mapping = self.mapping, None
        try:
            heard(self, change)
        finally:
            self.mapping = mapping
    files.RemoteFile.changed_elsewhere = unheard_by_mapping
from harness.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with served("chirp/aviary") as running:
        yield running


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scenario_script(tmp_path_factory, "shared-maps", SCENARIO)


@pytest.fixture(scope="module")
def native(script: Path, tmp_path_factory: pytest.TempPathFactory) -> Seen:
    """What the kernel says on a local directory."""
    return native_steps(script, tmp_path_factory)


def _under_agent(
    server: RunningServer, script: Path, tmp_path: Path, cache: str, seeded: str = "none"
) -> Seen:
    """What the scenario prints under the agent, with its files' bytes as the server holds
    them in place of what it read back itself."""
    work = server.data_dir / f"work-{cache}-{seeded}"  # made by the scenario
    mount_point = tmp_path / "mnt"
    options = ["--cache", cache, "-M", f"{mount_point}=chirp://127.0.0.1:{server.port}/"]
    argv = [sys.executable, str(script), str(mount_point / work.name), str(work)]
    seen = printed_steps_under_agent(_CLI, seeded, options, argv)
    files = {row[0] for row in seen[-7:]}
    on_server = [[name, (work / name).read_text()] for name in sorted(files)]
    return seen[:-7] + sorted(seen[-7:]) + on_server


def _expected(native: Seen) -> Seen:
    return native[:-7] + sorted(native[-7:]) + sorted(native[-7:])


@pytest.mark.parametrize("cache", ["off", "cto"])
def test_a_mapping_sends_back_only_what_it_stored(
    server: RunningServer, script: Path, native: Seen, tmp_path: Path, cache: str
) -> None:
    assert _under_agent(server, script, tmp_path, cache) == _expected(native)


@pytest.mark.parametrize("seeded", ["whole", "server-reads", "unfollowed"])
def test_each_seeded_regression_is_caught(
    server: RunningServer, script: Path, native: Seen, tmp_path: Path, seeded: str
) -> None:
    differing = [
        row
        for row, expected in zip(
            _under_agent(server, script, tmp_path, "off", seeded), _expected(native), strict=True
        )
        if row != expected
    ]
    assert differing, f"seeded {seeded!r} went unnoticed"
