"""The compiled fast path: taken for plainly local paths and descriptors, never for remote ones.

Each test runs a real shell under the real agent in this process; the shell's
``test -e`` is one stat (newfstatat) per use. The seeded tests configure the C
side with no prefixes at all, as a fast path that forgot the namespace would be,
or with no placeholders, as one that forgot which descriptors are remote, and
show that the remote checks then fail: they would catch those defects.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from drivers import Handle
from drivers.local import LocalDriver
from reference_agent import _fastpath, _ptrace, table
from reference_agent.agent import Agent, AgentOptions
from reference_agent.call import Call
from reference_agent.files import RemoteFile, RemoteFileTable, scan_held
from reference_agent.interpreters import interpreter_of
from reference_agent.namespace import Namespace
from servers import RunningServer
from tests.helpers import ROOT, start_or_skip

LOOPS = 40
SH = shutil.which("sh") or "/bin/sh"


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = start_or_skip("chirp/aviary")
    try:
        (running.data_dir / "there").write_text("remote\n")
        yield running
    finally:
        running.stop()


def run_shell(script: str, namespace: Namespace, *, fast_path: bool = True) -> tuple[Agent, int]:
    """``sh -c SCRIPT`` under a fresh agent that counts its calls: the agent, the exit status."""
    agent = Agent(namespace, AgentOptions(summary=True, fast_path=fast_path), report=lambda _: None)
    return agent, agent.run([SH, "-c", script], table)


def answered(agent: Agent) -> int:
    fast = agent.fast_path
    assert isinstance(fast, _fastpath.FastPath), f"fast path off: {fast}"
    return fast.answered


def in_python(script: str, names: Sequence[str]) -> tuple[list[int], list[int]]:
    """How many of each local call ``script`` made reached Python with the fast path on,
    and with it off (which must see them all); both runs must succeed."""
    counts = []
    for fast_path in (True, False):
        agent, status = run_shell(script, Namespace(), fast_path=fast_path)
        assert status == 0
        if fast_path:
            assert answered(agent) >= LOOPS
        else:
            assert agent.fast_path == "turned off (--no-fast-path)"
        counts.append([agent.stats[(name, "local")].calls for name in names])
    return counts[0], counts[1]


def test_local_stats_are_answered_in_compiled_code(tmp_path: Path) -> None:
    present = tmp_path / "present"
    present.write_text("x")
    script = (
        f"i=0; while [ $i -lt {LOOPS} ]; do test -e {present} || exit 3; "
        f"test -e {tmp_path}/absent && exit 4; i=$((i+1)); done; exit 0"
    )
    fast, slow = in_python(script, ["newfstatat"])
    assert fast[0] < LOOPS
    assert slow[0] >= 2 * LOOPS


def test_relative_and_dotted_local_paths_are_answered(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    relative = (
        f"cd {tmp_path} && i=0; while [ $i -lt {LOOPS} ]; do test -e f || exit 3; i=$((i+1)); done"
    )
    agent, status = run_shell(relative, Namespace())
    assert status == 0
    assert answered(agent) >= LOOPS
    assert agent.stats[("newfstatat", "local")].calls < LOOPS
    # gcc's own paths look like this: /usr/lib/gcc/x86_64-linux-gnu/12/../../../...
    dotted = (
        f"i=0; while [ $i -lt {LOOPS} ]; do test -e {tmp_path}/./f && test -e {tmp_path}//f "
        f"&& test -e {tmp_path}/d/../f && ! test -e {tmp_path}/d/../../{tmp_path.name}/g "
        f"&& (cd {tmp_path}/d && test -e ../f) || exit 3; i=$((i+1)); done"
    )
    agent, status = run_shell(dotted, Namespace())
    assert status == 0
    assert answered(agent) >= 5 * LOOPS
    assert agent.stats[("newfstatat", "local")].calls < LOOPS


def test_redirections_and_removals_of_local_files_are_answered(tmp_path: Path) -> None:
    """A shell's redirection saves stdin with fcntl(F_DUPFD); rm removes with unlinkat."""
    local = tmp_path / "local"
    local.write_text("here\n")
    script = (
        f"i=0; while [ $i -lt {LOOPS} ]; do read v < {local} || exit 3; i=$((i+1)); done; "
        f"for i in $(seq {LOOPS}); do : > {tmp_path}/t$i; done; rm {tmp_path}/t*"
    )
    fast, slow = in_python(script, ["fcntl", "unlinkat"])
    assert not list(tmp_path.glob("t*"))
    assert all(count < LOOPS for count in fast), fast
    assert all(count >= LOOPS for count in slow), slow


def test_local_descriptors_are_answered_while_a_remote_file_is_open(
    server: RunningServer, tmp_path: Path
) -> None:
    """Reads, fstat (newfstatat "" AT_EMPTY_PATH), mmap and close of local files stay in C
    while descriptor 3 holds a remote file; that descriptor's read is still the agent's
    (its reads of remote files, in compiled code: the kernel would read the empty
    placeholder)."""
    local = tmp_path / "local"
    local.write_text("here\n")
    mount_point = tmp_path / "mnt"
    script = (
        f"exec 3< {mount_point}/there && i=0; while [ $i -lt {LOOPS // 4} ]; do "
        f'[ "$(cat {local})" = here ] || exit 3; i=$((i+1)); done; '
        'read line <&3 && [ "$line" = remote ]'
    )
    mount = f"{mount_point}=chirp://127.0.0.1:{server.port}/"
    result = aviary_run("--summary", "-M", mount, "--", SH, "-c", script)
    assert result.returncode == 0, result.stderr
    calls = {
        (fields[0], fields[1]): int(fields[2])
        for fields in (line.split() for line in result.stderr.splitlines())
        if len(fields) >= 4 and fields[2].isdigit()
    }
    # Each cat reads and fstats its file and closes it: none of that reached Python.
    for name in ("read", "close", "newfstatat", "fstat", "mmap"):
        assert calls.get((name, "local"), 0) < LOOPS // 4, (name, result.stderr)
    served = re.search(r"\((\d+) of them reads of remote files\)", result.stderr)
    assert served is not None, result.stderr
    remote_reads = calls.get(("read", f"chirp://127.0.0.1:{server.port}"), 0)
    assert remote_reads + int(served.group(1)) >= 1, result.stderr


#: ``aviary`` from the command line, optionally with a seeded defect: a fast path told no
#: prefix ("blind": a C side blind to the namespace passes every absolute path) or no
#: placeholder ("no-placeholders": it takes every descriptor for a local one), without
#: its execve entry ("exec-in-python"), or rebuilt to take any ELF program's loader for a
#: local one ("loader-ignored").
_CLI = """
import sys
from reference_agent import _fastpath
seeded = sys.argv.pop(1)
if seeded == "blind":
    configure = _fastpath.FastPath.configure
    _fastpath.FastPath.configure = lambda self, calls, prefixes: configure(self, calls, [])
elif seeded == "exec-in-python":
    _fastpath.FAST_CALLS = {k: v for k, v in _fastpath.FAST_CALLS.items() if k != "execve"}
elif seeded == "loader-ignored":
    import atexit, shutil, tempfile
    from pathlib import Path
    cache = Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, cache, True)
    checked = "local = loader[0] == '/' && stays_local(loader, length, collapsed);"
    source = _fastpath._SOURCE.read_text()
    assert checked in source
    (cache / "loader.c").write_text(source.replace(checked, "local = 1;"))
    _fastpath._SOURCE = cache / "loader.c"
    _fastpath._cache_dir = lambda: cache
elif seeded == "no-placeholders":
    set_placeholders = _fastpath.FastPath.set_placeholders
    _fastpath.FastPath.set_placeholders = lambda self, keys: set_placeholders(self, [])
from harness.cli import main
sys.exit(main(sys.argv[1:]))
"""


def aviary_run(*args: str, seeded: str = "none") -> subprocess.CompletedProcess[str]:
    """``aviary run ARGS`` in a child process: the agent must be its tracer's only parent
    (it waits for any child), so a server started by this test process cannot share it."""
    return subprocess.run(
        [sys.executable, "-c", _CLI, seeded, "run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def remote_run(server: RunningServer, mount_point: str, *, seeded: str = "none") -> str:
    """Stats of remote paths (a service path and a mount) and a read of a remote file under
    the agent; its summary, or what failed."""
    authority = f"127.0.0.1:{server.port}"
    parent, name = mount_point.rsplit("/", 1)
    parent_name = parent.rsplit("/", 1)[1]
    script = (
        f"test -e /chirp/{authority}/there && test -e {mount_point}/there "
        f"&& test -d {mount_point} && ! test -e /chirp/{authority}/absent "
        # Not in normal form: the namespace sees the mount where the text does not start with it.
        f"&& test -e {parent}//{name}/there && test -e {parent}/./{name}/there "
        f"&& test -e {mount_point}/../{name}/there && test -e {parent}/../{parent_name}/{name}/there "
        # Relative to a local working directory that holds the mount point.
        f"&& (cd {parent} && test -e {name}/there && test -d {name})"
        # A remote descriptor: read, fstat and close reach the agent while it is open.
        f'&& [ "$(cat {mount_point}/there)" = remote ]'
        f'&& exec 3< {mount_point}/there && read line <&3 && [ "$line" = remote ]'
    )
    mount = f"{mount_point}=chirp://{authority}/"
    result = aviary_run("--summary", "-M", mount, "--", SH, "-c", script, seeded=seeded)
    return result.stderr if result.returncode == 0 else f"exit {result.returncode}"


def test_remote_paths_are_never_answered_by_it(server: RunningServer, tmp_path: Path) -> None:
    summary = remote_run(server, str(tmp_path / "mnt"))
    assert "calls answered in compiled code" in summary
    remote_stats = [
        line.split()
        for line in summary.splitlines()
        if line.startswith("newfstatat") and "chirp://" in line
    ]
    assert remote_stats and int(remote_stats[0][2]) >= 4, summary


def test_a_fast_path_blind_to_the_namespace_is_caught(
    server: RunningServer, tmp_path: Path
) -> None:
    """The seeded defect: the same checks fail (the kernel stats local names that are not there)."""
    assert remote_run(server, str(tmp_path / "mnt"), seeded="blind") == "exit 1"


def test_a_fast_path_blind_to_remote_descriptors_is_caught(
    server: RunningServer, tmp_path: Path
) -> None:
    """The seeded defect: reads of a remote descriptor reach the empty placeholder."""
    assert remote_run(server, str(tmp_path / "mnt"), seeded="no-placeholders") == "exit 1"


def test_the_run_summary_says_what_it_answered(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.write_text("x")
    result = aviary_run("--summary", "--", SH, "-c", f"test -e {probe}")
    assert result.returncode == 0, result.stderr
    assert "calls answered in compiled code" in result.stderr
    off = aviary_run("--summary", "--no-fast-path", "--", SH, "-c", f"test -e {probe}")
    assert off.returncode == 0, off.stderr
    assert "fast path off: turned off (--no-fast-path)" in off.stderr


def test_anonymous_mmaps_never_stop_the_program() -> None:
    """The seccomp filter lets MAP_ANONYMOUS through: even with every trapped call in Python,
    200 anonymous mappings add no mmap stops (the interpreter's own file mappings remain)."""
    script = "import mmap; maps = [mmap.mmap(-1, 4096) for _ in range(200)]"
    result = aviary_run("--summary", "--no-fast-path", "--", sys.executable, "-c", script)
    assert result.returncode == 0, result.stderr
    stops = [
        int(fields[2])
        for fields in (line.split() for line in result.stderr.splitlines())
        if fields[:2] == ["mmap", "local"]
    ]
    assert stops and stops[0] < 100, result.stderr


def test_a_small_file_read_under_cache_cto_is_read_by_the_kernel(
    server: RunningServer, tmp_path: Path
) -> None:
    """Its first read hands the file to its placeholder; later reads and seeks stop in C,
    not in Python, and read what the server holds; a write on that read-only descriptor
    still reaches the agent (EBADF), never the placeholder."""
    mount_point = tmp_path / "mnt"
    script = (
        "import errno, os, sys\n"
        f"fd = os.open('{mount_point}/there', os.O_RDONLY)\n"
        f"got = [os.pread(fd, 1, i % 7) for i in range({LOOPS})]\n"
        "assert b''.join(got[:7]) == b'remote\\n', got\n"
        "assert os.lseek(fd, 0, os.SEEK_END) == 7 and os.read(fd, 1) == b''\n"
        "try:\n"
        "    os.write(fd, b'x')\n"
        "    sys.exit('a write on a read-only descriptor succeeded')\n"
        "except OSError as exc:\n"
        "    assert exc.errno == errno.EBADF, exc\n"
    )
    mount = f"{mount_point}=chirp://127.0.0.1:{server.port}/"
    result = aviary_run(
        "--summary", "--cache", "cto", "-M", mount, "--", sys.executable, "-c", script
    )
    assert result.returncode == 0, result.stderr
    calls = {
        (fields[0], fields[1]): int(fields[2])
        for fields in (line.split() for line in result.stderr.splitlines())
        if len(fields) >= 4 and fields[2].isdigit()
    }
    remote = f"chirp://127.0.0.1:{server.port}"
    assert calls.get(("pread64", remote), 0) <= 1, result.stderr  # the first, which fills
    assert calls.get(("lseek", remote), 0) == 0, result.stderr
    assert calls.get(("write", remote), 0) == 1, result.stderr
    assert (server.data_dir / "there").read_text() == "remote\n"


def _held_by_children(
    tmp_path: Path, scan: Callable[[Sequence[int], Sequence[tuple[int, int]]], list[bool]]
) -> list[bool]:
    """Two children each hold one of three files open (the second one's at a high descriptor,
    after many others); the third file is held by nobody. What ``scan`` says of the three."""
    files = [tmp_path / name for name in ("first", "second", "nobody")]
    for path in files:
        path.write_text(path.name)
    holds = (
        "import os, sys, time\n"
        "fds = [os.open('/dev/null', os.O_RDONLY) for _ in range(int(sys.argv[2]))]\n"
        "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", holds, str(path), str(extra)], stdout=subprocess.PIPE, text=True
        )
        for path, extra in ((files[0], 0), (files[1], 40))
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        keys = [(st.st_dev, st.st_ino) for st in (path.stat() for path in files)]
        return scan([child.pid for child in children], keys)
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_the_compiled_scan_of_held_placeholders_agrees_with_the_python_one(
    tmp_path: Path,
) -> None:
    """Which files the live tasks still hold: the compiled scan and ``scan_held`` say the same,
    for a file held by the first task, one held by the second at its last descriptor, and
    one held by none (seeded: a scan that stops at the first task misses the second)."""
    fast = _fastpath.load()
    assert isinstance(fast, _fastpath.FastPath), fast
    assert _held_by_children(tmp_path, scan_held) == [True, True, False]
    assert _held_by_children(tmp_path, fast.held) == [True, True, False]
    assert fast.held([os.getpid()], []) == []

    def first_task_only(pids: Sequence[int], keys: Sequence[tuple[int, int]]) -> list[bool]:
        return scan_held(pids[:1], keys)

    assert _held_by_children(tmp_path, first_task_only) != [True, True, False]


#: Run in a child process (it waits for any child): trap read and newfstatat, tell the
#: compiled loop that PROBE's file is a placeholder, and let a shell read a descriptor of it,
#: then stat a path under a prefix. The stops handed over must carry the call's number, the
#: registers, the file behind that descriptor and the path, as the kernel says them at that
#: stop, and nothing of an earlier stop. Prints "handed over" once both are checked; with
#: "stale" the C loop is rebuilt without clearing the descriptor fact between stops.
_HANDED_OVER = """
import atexit, os, shutil, sys, tempfile
from pathlib import Path
from reference_agent import _fastpath, _ptrace
from reference_agent._memory import read_c_string
from reference_agent._seccomp import spawn_traced
probe, seeded = sys.argv[1:]
cache = None
if seeded == "stale":
    cache = Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, cache, True)
    source = _fastpath._SOURCE.read_text().replace("has_descriptor = facts->has_path", "has_path")
    (cache / "stale.c").write_text(source)
    _fastpath._SOURCE = cache / "stale.c"
fast = _fastpath.load(cache)
read_nr = _ptrace.syscall_number("read")
stat_nr = _ptrace.syscall_number("newfstatat")
calls = {read_nr: _fastpath.FAST_CALLS["read"], stat_nr: _fastpath.FAST_CALLS["newfstatat"]}
fast.configure(calls, ["/elsewhere"])
st = os.stat(probe)

class Files:
    version = 1
    def __len__(self):
        return 1
    def placeholder_keys(self):
        return [(st.st_dev, st.st_ino, False, -1)]

wait = fast.waiter(Files(), lambda: {})
script = f"exec 3< {probe}; read line <&3; test -e /elsewhere/name"
pid = spawn_traced(["sh", "-c", script], None, None, {read_nr, stat_nr})
_ptrace.resume(pid)
checked = stats = 0
while True:
    event = wait()
    if isinstance(event, (_ptrace.Exited, _ptrace.Killed)):
        break
    if isinstance(event, _ptrace.SeccompStop) and event.nr == stat_nr:
        address = _ptrace.get_registers(event.pid).arg(1)
        path = (address, read_c_string(event.pid, address))
        assert event.path == path, f"path {event.path}"
        assert event.descriptor is None, f"descriptor {event.descriptor} at a stat"
        stats += event.path[1] == b"/elsewhere/name"
    elif isinstance(event, _ptrace.SeccompStop):
        registers = _ptrace.get_registers(event.pid)
        assert event.registers is not None and event.registers == registers, "registers"
        assert event.nr == _ptrace.event_message(event.pid) == read_nr, "number"
        fd = registers.arg(0)  # the shell reads through 0, a dup of 3
        assert event.descriptor == (fd, st.st_dev, st.st_ino), f"descriptor {event.descriptor}"
        checked += 1
    _ptrace.resume(event.pid)
print("handed over" if checked and stats == 1 else f"{checked} reads, {stats} stats")
"""


def test_a_stop_the_compiled_loop_hands_over_carries_what_it_read(tmp_path: Path) -> None:
    """The stop of a read on a placeholder's descriptor reaches Python with the call's number,
    the registers and the (device, inode) behind the descriptor, and a stat of a path under a
    prefix with that path, equal to what the kernel says at that stop (seeded: a C loop that
    keeps the descriptor fact of an earlier stop, caught at the stat)."""
    probe = tmp_path / "probe"
    probe.write_text("line\n")

    def handed_over(seeded: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", _HANDED_OVER, str(probe), seeded],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip

    done = handed_over("none")
    assert done.returncode == 0 and done.stdout == "handed over\n", done.stderr
    stale = handed_over("stale")
    assert "AssertionError: descriptor" in stale.stderr and "at a stat" in stale.stderr, stale


def test_the_table_takes_the_loops_word_for_the_stop_it_handles(tmp_path: Path) -> None:
    """What the compiled loop saw behind a descriptor answers a lookup of it without a stat
    of /proc (here it names no remote file, where the stat would find one); without that
    word the descriptor is stat'ed as before."""
    probe = tmp_path / "probe"
    probe.write_text("x")
    table = RemoteFileTable()
    with open(probe, "rb") as held:
        fd = held.fileno()
        remote = RemoteFile(LocalDriver(tmp_path), Handle(3), "/probe", "/probe", 0, False, 0)
        table.add(os.getpid(), fd, remote)
        assert table.lookup(os.getpid(), fd) is remote
        assert table.lookup(os.getpid(), fd, (0, 0)) is None
        assert table.lookup(os.getpid(), fd, remote.key) is remote
        table.close_all()


def test_a_call_takes_the_strings_and_descriptors_its_stop_carries() -> None:
    """A path argument read at the stop is not read from the tracee again (pid 0 cannot be
    read: a read would fail), and a descriptor fact answers for its own descriptor only."""
    registers = _ptrace.registers_of(_ptrace.UserRegisters(rdi=0x1000, rsp=0x8000))
    stop = _ptrace.SeccompStop(0, 2, registers, (0x1000, b"/there"), (5, 7, 9))
    call = Call(0, 2, "open", registers, stop)
    assert call.raw_string(0) == b"/there"
    assert call.seen_behind(5) == (7, 9)
    assert call.seen_behind(6) is None
    with pytest.raises(OSError):
        Call(0, 2, "open", registers).raw_string(0)


def test_absent_programs_and_plain_elf_programs_cost_no_stop_in_python(tmp_path: Path) -> None:
    """Ten execs of programs that are not there (a search through PATH) fail with 127, as
    natively, and ten of an ELF program whose loader is plainly local run, without reaching
    Python; an exec of a dangling link and of a script still do, and so does the ELF program
    once its loader's directory is a mount (seeded: execve left out of the compiled loop,
    22 stops; a compiled loop that does not look where the loader is, 2 with the mount)."""
    (tmp_path / "dangling").symlink_to(tmp_path / "nothing")
    program = shutil.which("true") or "/bin/true"
    loader = interpreter_of(program)
    assert loader is not None and loader.kind == "elf", "a dynamically linked true"
    script_file = tmp_path / "script"
    script_file.write_text("#!/bin/sh\nexit 0\n")
    script_file.chmod(0o755)
    script = (
        f"for i in 1 2 3 4 5 6 7 8 9 10; do {tmp_path}/absent$i 2>/dev/null; "
        f"[ $? = 127 ] || exit 3; {program} || exit 5; done; "
        f"{tmp_path}/dangling 2>/dev/null; [ $? = 127 ] || exit 4; {script_file}"
    )

    def exec_stops(*options: str, seeded: str = "none") -> int:
        result = aviary_run("--summary", *options, "--", SH, "-c", script, seeded=seeded)
        assert result.returncode == 0, result.stderr
        return sum(
            int(fields[2])
            for fields in (line.split() for line in result.stderr.splitlines())
            if len(fields) >= 4 and fields[0] == "execve" and fields[2].isdigit()
        )

    assert exec_stops() == 2  # the dangling link and the script
    assert exec_stops(seeded="exec-in-python") == 22
    loader_dir = os.path.dirname(loader.path)
    moved = f"{loader_dir}={loader_dir}"  # a mount over the loader: Python decides each exec
    assert exec_stops("-M", moved) == 12
    assert exec_stops("-M", moved, seeded="loader-ignored") == 2
