"""Reads of remote files answered in the agent's compiled loop, on the driver's connection.

Covers: ``reference_agent/_fastpath.c``'s reads (``FastPath.serve``), the Chirp
driver's ``direct_reads`` and ``direct_read_broke``, and ``RemoteFileTable.read_directly``.

Scenario: ``tests/scenarios/remote_reads.py`` reads one 5 MiB file the ways programs do
(blocks of several sizes, a byte at a time, pread, lseek from the start, here and the end,
a descriptor shared with a forked child and a dup, buffers at odd addresses, a bad
address, after a write through another open, at the end). Natively and under ``aviary
run`` on both Chirp servers, ``--cache off`` and ``cto``, it must print the same, with
reads answered in compiled code (``--summary`` counts them). Then servers that fail
under those reads, each a loopback Chirp server of one file whose connections the test
scripts: one that announces more bytes than were asked (EPROTO, at once), one that stops
answering and one that trickles its reply a byte at a time (ETIMEDOUT within the timeout
plus the recovery budget), one that closes the
connection in the middle of a reply and serves the next connection truthfully (the
program reads every byte right), and one whose connection is replaced while the agent
is busy elsewhere, the file then under another server descriptor (the next read must not
use the old one). Each seeded regression must be caught where it names: an offset the
compiled reads do not move, bytes realigned but copied from where they were, a
connection taken for the registered one by its descriptor number alone, and a reply
left half read without telling the driver, and a reply deadline renewed by every byte (a
trickling server then holds the program for as long as it trickles).

The same scenario runs where the agent answers reads in Python (SFTP, XRootD, WebDAV on
wsgidav and nginx, FTP; off and cto) and must print what it prints natively too: there it
found a WebDAV handle reading a file answer ESTALE after another handle of the same run
wrote the file (the driver held it to the version it opened); held to a new version the
driver sends itself now, the regression planted back ("versions-kept") is caught.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from drivers.chirp.codec import encode_stat
from tests.helpers import Seen, printed_steps, served
from tests.test_lying_servers import (
    BUDGET,
    TIMEOUT,
    TRICKLE_GAP,
    LyingServer,
    Peer,
    chirp_login,
)

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = Path(__file__).with_name("scenarios") / "remote_reads.py"
MIB = 1 << 20

#: ``aviary run`` with a regression planted in the compiled loop's source (built apart,
#: in a directory of the test's): "offset-unmoved" leaves the open's offset where it was
#: after a read, "shift-unused" moves the bytes to the program buffer's alignment but
#: copies from where they were, "connection-by-number" takes the registered connection
#: for whatever socket has its descriptor number now, "out-of-step-untold" leaves a reply
#: half read without telling the driver, "deadline-per-byte" renews a reply's deadline
#: with every byte (a trickle holds the program as long as it trickles).
SEEDS: dict[str, tuple[str, str]] = {
    "offset-unmoved": (
        "if (serves[nr] == FP_SEQUENTIAL) served_offsets[slot] += result;",
        "(void)served_offsets;",
    ),
    "shift-unused": ("            data += shift;\n", ""),
    "connection-by-number": (
        "if (fstat(s->sock, &st) != 0 || (unsigned long long)st.st_dev != s->sock_dev ||\n"
        "        (unsigned long long)st.st_ino != s->sock_ino) {",
        "if (fstat(s->sock, &st) != 0) {",
    ),
    "out-of-step-untold": ("    facts->broken_slot = slot;\n", ""),
    "deadline-per-byte": (
        "if (deadline->progress >= FP_PROGRESS_BYTES) {",
        "if (deadline->progress >= 1) {",
    ),
}
_CLI = """
import atexit, shutil, sys, tempfile
from pathlib import Path
from reference_agent import _fastpath
seeded, old, new = sys.argv[1:4]
del sys.argv[1:4]
if seeded != "none":
    source = _fastpath._SOURCE.read_text()
    assert old in source, seeded
    build = Path(tempfile.mkdtemp(prefix="aviary-seeded-"))
    atexit.register(shutil.rmtree, build, True)
    planted = build / "_fastpath.c"
    planted.write_text(source.replace(old, new))
    _fastpath._SOURCE = planted
    _fastpath._cache_dir = lambda: build
from harness.cli import main
sys.exit(main(sys.argv[1:]))
"""


def aviary(
    seeded: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``aviary ARGS`` with the regression ``seeded`` planted ("none": as it is)."""
    old, new = SEEDS.get(seeded, ("", ""))
    return subprocess.run(
        [sys.executable, "-c", _CLI, seeded, old, new, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def served_reads(stderr: str) -> int:
    """How many reads of remote files ``--summary`` says the compiled loop answered."""
    found = re.search(r"\((\d+) of them reads of remote files\)", stderr)
    assert found is not None, stderr
    return int(found.group(1))


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Seen:
    work = tmp_path_factory.mktemp("native") / "work"
    return printed_steps([sys.executable, str(PROGRAM), str(work)])


def steps_under_agent(seeded: str, key: str, cache: str) -> tuple[Seen, int]:
    """What the scenario prints under ``aviary run`` on a fresh ``key`` server, and how many
    reads the compiled loop answered."""
    with served(key) as server:
        done = aviary(
            seeded, "run", "--summary", "--cache", cache, "-M", f"/mnt={server.url('/')}", "--",
            sys.executable, str(PROGRAM), "/mnt/work", env=server.client_env,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen: Seen = json.loads(done.stdout)
    return seen, served_reads(done.stderr)


@pytest.mark.parametrize("cache", ["off", "cto"])
@pytest.mark.parametrize("key", ["chirp/aviary", "chirp/cctools"])
def test_reads_answered_in_compiled_code_read_what_a_local_disk_reads(
    native: Seen, key: str, cache: str
) -> None:
    seen, answered = steps_under_agent("none", key, cache)
    assert answered > 0  # the compiled reads took part
    for expected, got in zip(native, seen, strict=True):
        assert got == expected


#: The same reads where the agent answers them in Python (no driver but Chirp's lets
#: compiled code read), "versions-kept" holding a WebDAV handle that reads a file to the
#: version it opened even after another handle of the same driver sent a new one (the
#: read of a write through another open is then ESTALE).
OTHER_PROTOCOLS = ("sftp/openssh", "root/xrootd", "dav/wsgidav", "dav/nginx", "ftp/pyftpdlib")
_VERSIONS_KEPT = """
import sys
from drivers.webdav._driver import WebDavDriver
WebDavDriver._put_version = lambda self, path, data, base: self._put(path, data)
from harness.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("cache", ["off", "cto"])
@pytest.mark.parametrize("key", OTHER_PROTOCOLS)
def test_reads_on_other_protocols_read_what_a_local_disk_reads(
    native: Seen, key: str, cache: str
) -> None:
    with served(key) as server:
        done = aviary(
            "none", "run", "--cache", cache, "-M", f"/mnt={server.url('/')}", "--",
            sys.executable, str(PROGRAM), "/mnt/work", env=server.client_env,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for expected, got in zip(native, json.loads(done.stdout), strict=True):
        assert got == expected


def test_webdav_versions_kept_by_handles_are_caught() -> None:
    with served("dav/wsgidav") as server:
        done = subprocess.run(
            [sys.executable, "-c", _VERSIONS_KEPT, "run", "--cache", "cto",
             "-M", f"/mnt={server.url('/')}", "--", sys.executable, str(PROGRAM), "/mnt/work"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={**os.environ, **server.client_env, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    assert done.returncode != 0 and "Stale file handle" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("seeded", "step"),
    [
        ("offset-unmoved", "read in blocks of 1048576"),
        ("shift-unused", "reads into buffers at odd addresses"),
    ],
)
def test_each_seeded_regression_of_the_reads_is_caught(
    native: Seen, seeded: str, step: str
) -> None:
    seen, _ = steps_under_agent(seeded, "chirp/aviary", "off")
    differing = [expected[0] for expected, got in zip(native, seen, strict=True) if got != expected]
    assert step in differing, differing


# -- servers that fail under the compiled reads -----------------------------------------------------

CONTENT = bytes(range(256)) * (3 * MIB // 256)  # what /data holds
OTHER = b"\xee" * len(CONTENT)  # what the "wrong" file holds
SERVER_FD = (5, 9)  # the server descriptor of /data on the first connection, and on later ones
PreadAnswer = Callable[[Peer, int, int, int, int], bool]


def file_server(pread: PreadAnswer) -> Callable[[Peer], None]:
    """A Chirp server of one regular file, /data (CONTENT), its replies to preads left to
    ``pread(peer, connection, fd, count, offset)`` (False: stop answering); connections
    are numbered from 0 as they come."""
    stat_line = encode_stat(os.stat(__file__)).split()
    stat_line[2] = str(0o100644)  # a regular file of CONTENT's size
    stat_line[7] = str(len(CONTENT))
    file_stat = " ".join(stat_line).encode()
    dir_stat = encode_stat(os.stat("/")).encode()
    count = [0]
    lock = threading.Lock()

    def script(peer: Peer) -> None:
        with lock:
            connection = count[0]
            count[0] += 1
        if not chirp_login(peer):
            return
        fd = SERVER_FD[min(connection, 1)]
        while (request := peer.line()) is not None:
            verb, *args = request.decode().split()
            if verb in ("stat", "lstat"):
                answer = b"0\n" + (file_stat if args[0] == "/data" else dir_stat) + b"\n"
            elif verb == "open":
                answer = f"{fd}\n".encode() + file_stat + b"\n"
            elif verb == "fstat":
                answer = b"0\n" + file_stat + b"\n"
            elif verb == "pread":
                if not pread(peer, connection, int(args[0]), int(args[1]), int(args[2])):
                    return
                continue
            elif verb == "close":
                answer = b"0\n"
            else:
                answer = b"-8\n"  # INVALID_REQUEST
            if not peer.send(answer):
                return

    return script


def truthful(peer: Peer, fd: int, count: int, offset: int, connection: int) -> bool:
    """A pread answered as a server would: /data's bytes, another file's for another fd."""
    content = CONTENT if fd == SERVER_FD[min(connection, 1)] else OTHER
    data = content[offset : offset + count]
    return peer.send(f"{len(data)}\n".encode() + data)


def reader_program(reads: int, stat_between: bool = False) -> list[str]:
    """A program that reads /mnt/data in 1 MiB reads, ``reads`` of them (stat'ing it by name
    between the first two), and prints how many bytes came and their MD5."""
    between = "os.stat('/mnt/data')" if stat_between else "pass"
    source = (
        "import hashlib, os, sys\n"
        "fd = os.open('/mnt/data', os.O_RDONLY)\n"
        "parts = [os.read(fd, 1 << 20)]\n"
        f"{between}\n"
        f"parts += [os.read(fd, 1 << 20) for _ in range({reads - 1})]\n"
        "data = b''.join(parts)\n"
        "print(len(data), hashlib.md5(data).hexdigest())\n"
    )
    return [sys.executable, "-c", source]


def run_against(
    pread: PreadAnswer, program: list[str], seeded: str = "none"
) -> tuple[subprocess.CompletedProcess[str], float, int]:
    """``program`` under ``aviary run --cache off --timeout TIMEOUT`` on a scripted server:
    how it ended, how long it took and how many connections the server saw."""
    server = LyingServer(file_server(pread))
    start = time.monotonic()
    try:
        done = aviary(
            seeded, "run", "--summary", "--cache", "off", "--timeout", str(TIMEOUT),
            "-M", f"/mnt=chirp://127.0.0.1:{server.port}/", "--", *program,
            env={"AVIARY_RECOVERY": str(BUDGET), "AVIARY_CHIRP_AUTH": "address"},
        )  # fmt: skip
    finally:
        elapsed = time.monotonic() - start
        server.close()
    return done, elapsed, server.connections


def expected_output(reads: int) -> str:
    data = CONTENT[: reads * MIB]
    return f"{len(data)} {hashlib.md5(data).hexdigest()}\n"


def test_a_reply_larger_than_asked_is_a_protocol_error_at_once() -> None:
    def more(peer: Peer, connection: int, fd: int, count: int, offset: int) -> bool:
        return peer.send(f"{count + 1}\n".encode() + b"x" * (count + 1))

    done, elapsed, connections = run_against(more, reader_program(1))
    assert done.returncode != 0 and "Protocol error" in done.stderr, done.stderr
    assert "internal error" not in done.stderr, done.stderr
    assert connections <= 2, connections  # a lie is not asked again and again
    assert elapsed <= TIMEOUT + BUDGET + 5, elapsed  # no wait for the timeout: it is a lie


def test_a_server_that_stops_answering_fails_the_read_within_its_bounds() -> None:
    def silent(peer: Peer, connection: int, fd: int, count: int, offset: int) -> bool:
        peer.hold()
        return False

    done, elapsed, _ = run_against(silent, reader_program(1))
    assert done.returncode != 0 and "timed out" in done.stderr, done.stderr
    # The compiled read waits one timeout, the driver then spends its recovery budget;
    # the agent's own start and end get a few seconds more.
    assert elapsed <= 2 * TIMEOUT + BUDGET + 5, elapsed


def _trickles(peer: Peer, connection: int, fd: int, count: int, offset: int) -> bool:
    """The count line, then a byte every TRICKLE_GAP, each well within the timeout, 200
    at most (then silence): a reply that never ends but never stops either."""
    if not peer.send(f"{count}\n".encode()):
        return False
    for byte in CONTENT[:200]:
        if peer.stop.wait(TRICKLE_GAP) or not peer.send(bytes([byte])):
            return False
    peer.hold()
    return False


def test_a_trickling_reply_fails_the_read_within_its_bounds() -> None:
    """A reply's deadline is renewed only by progress (64 KiB), as the drivers keep it: a
    byte every 50 ms does not hold the program past the timeout."""
    done, elapsed, _ = run_against(_trickles, reader_program(1))
    assert done.returncode != 0 and "timed out" in done.stderr, done.stderr
    assert elapsed <= 2 * TIMEOUT + BUDGET + 5, elapsed
    seeded, seeded_elapsed, _ = run_against(_trickles, reader_program(1), "deadline-per-byte")
    assert seeded_elapsed > 2 * TIMEOUT + BUDGET + 5, (seeded_elapsed, seeded.stderr)


def test_a_reply_cut_short_is_read_again_on_a_new_connection() -> None:
    """The first connection closes in the middle of the second read's reply; the driver
    reconnects, reopens /data (another server descriptor) and reads it again: the
    program gets every byte right."""

    def cut(peer: Peer, connection: int, fd: int, count: int, offset: int) -> bool:
        if connection == 0 and offset >= MIB:
            peer.send(f"{count}\n".encode() + CONTENT[offset : offset + count // 2])
            return False
        return truthful(peer, fd, count, offset, connection)

    done, _, connections = run_against(cut, reader_program(3))
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected_output(3)
    assert connections == 2
    assert served_reads(done.stderr) >= 2  # before the cut, and on the new connection


def _replaced_connection(peer: Peer, connection: int, fd: int, count: int, offset: int) -> bool:
    """The first connection serves one read and then goes (the server restarted); on the
    next, /data has another server descriptor and the old one names another file."""
    if not truthful(peer, fd, count, offset, connection):
        return False
    return connection > 0


def test_a_connection_replaced_behind_the_compiled_reads_is_not_taken_for_the_old() -> None:
    done, _, connections = run_against(_replaced_connection, reader_program(3, stat_between=True))
    assert done.returncode == 0, done.stderr
    assert connections == 2  # the stat between the reads found the first one gone
    assert done.stdout == expected_output(3)


@pytest.mark.parametrize(
    ("seeded", "pread", "reads", "stat_between"),
    [
        ("connection-by-number", _replaced_connection, 3, True),
        ("out-of-step-untold", None, 2, False),
    ],
)
def test_each_seeded_regression_of_a_connection_is_caught(
    seeded: str, pread: PreadAnswer | None, reads: int, stat_between: bool
) -> None:
    """Under the seed the program is told bytes that are not the file's."""
    if pread is None:
        pread = _stalls_then_resumes
    program = reader_program(reads, stat_between)
    done, _, _ = run_against(pread, program)
    assert done.returncode == 0 and done.stdout == expected_output(reads), done.stderr
    seeded_run, _, _ = run_against(pread, program, seeded)
    assert seeded_run.stdout != expected_output(reads), seeded_run.stderr


def _stalls_then_resumes(peer: Peer, connection: int, fd: int, count: int, offset: int) -> bool:
    """The first connection's first reply stops in the middle for longer than the timeout;
    then the rest comes, shaped as a reply of its own. A driver that sends its next request
    on that connection reads the rest as its answer."""
    if connection > 0 or offset > 0:
        return truthful(peer, fd, count, offset, connection)
    rest = b"3\nBAD"
    head = CONTENT[: count - len(rest)]
    if not peer.send(f"{count}\n".encode() + head):
        return False
    time.sleep(TIMEOUT * 1.5)
    return peer.send(rest)
