"""``aviary run``: unmodified programs with a Chirp server spliced into their namespace."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest

from reference_agent import _ptrace
from reference_agent.identity import HOSTNAME_FEATURE, IDENTITY_FEATURE
from reference_agent.namespace import Namespace
from reference_agent.sandbox import SandboxRules, guard_for
from reference_agent.table import (
    SANDBOX_FEATURE,
    SYSCALL_TABLE,
    Entry,
    guarded_calls,
    sys_sandbox_only,
    trapped_numbers,
)
from servers import RunningServer
from tests.helpers import start_or_skip

AVIARY = [sys.executable, "-m", "harness.cli"]


def aviary_run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AVIARY, "run", *argv], capture_output=True, text=True, timeout=timeout)


def sh(script: str, *options: str) -> subprocess.CompletedProcess[str]:
    return aviary_run(*options, "--", "sh", "-c", script)


@pytest.fixture(params=("chirp/cctools", "chirp/aviary"))
def server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    running = start_or_skip(request.param)
    try:
        yield running
    finally:
        running.stop()


def remote_root(server: RunningServer) -> str:
    return f"/chirp/127.0.0.1:{server.port}"


# A small Andrew-like session: copy a tree, list it, scan it, change it, delete it.
SESSION = """
set -e
cd "$BASE"
mkdir -p tree/sub
cp /etc/passwd tree/a.txt
printf 'line one\\nline two\\n' > tree/sub/b.txt
echo appended >> tree/sub/b.txt
ln -s a.txt tree/link
ls -a tree | sort
ls -l tree/link | awk '{print $1, $NF}'
wc -l < tree/a.txt
cat tree/sub/b.txt
grep -r two tree | sed "s|^|found: |"
mv tree/sub/b.txt tree/sub/c.txt
find tree | sort
stat -c '%F %s' tree/sub/c.txt
cd tree/sub && pwd | sed "s|$BASE|BASE|" && cd ../..
rm -rf tree
ls
"""


def test_session_output_matches_native(server: RunningServer, tmp_path: Path) -> None:
    native = subprocess.run(
        ["sh", "-c", SESSION],
        capture_output=True,
        text=True,
        env={**os.environ, "BASE": str(tmp_path)},
        timeout=60,
    )
    assert native.returncode == 0, native.stderr
    traced = aviary_run("--", "env", f"BASE={remote_root(server)}", "sh", "-c", SESSION)
    assert traced.returncode == 0, traced.stderr
    assert traced.stdout == native.stdout
    assert "found: tree/sub/b.txt:line two" in traced.stdout


def test_mountlist_form_and_python_import(server: RunningServer, tmp_path: Path) -> None:
    mountlist = tmp_path / "mounts"
    mountlist.write_text(f"# remote packages\n/mnt/remote {remote_root(server)}/lib\n")
    (server.data_dir / "lib").mkdir()
    package = server.data_dir / "lib" / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("ANSWER = 42\n")
    if server.as_user:  # the server serves as an unprivileged user: let it read what we wrote
        os.system(f"chown -R {server.as_user} {server.data_dir / 'lib'}")
    result = aviary_run(
        "-m",
        str(mountlist),
        "--",
        sys.executable,
        "-c",
        "import sys; sys.path.insert(0, '/mnt/remote'); "
        "import pkg; print(pkg.ANSWER, pkg.__file__)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "42 /mnt/remote/pkg/__init__.py\n"


def test_remote_script_make_and_gcc(server: RunningServer) -> None:
    base = remote_root(server)
    script = f"""
    set -e
    cd {base}
    printf '#!/bin/sh\\necho script got "$1"\\n' > hello.sh
    chmod 755 hello.sh
    ./hello.sh word
    printf '#include <stdio.h>\\nint main(void) {{ puts("built remotely"); return 0; }}\\n' > main.c
    printf 'main: main.c\\n\\tgcc -o main main.c\\n' > Makefile
    make -s
    ./main
    """
    result = sh(script)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "script got word\nbuilt remotely\n"


def test_git_and_tar(server: RunningServer, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "f1").write_text("one\n")
    (source / "f2").write_text("two\n")
    archive = tmp_path / "a.tgz"
    subprocess.run(["tar", "czf", str(archive), "-C", str(source), "."], check=True)
    base = remote_root(server)
    script = f"""
    set -e
    mkdir {base}/x && tar xzf {archive} --no-same-owner -C {base}/x && cat {base}/x/f1 {base}/x/f2
    cd {base} && mkdir repo && cd repo
    git init -q && cp {base}/x/f1 . && git add f1
    git -c user.email=a@b -c user.name=n commit -qm first && git log --format=%s
    """
    result = sh(
        f"export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*'; {script}"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "one\ntwo\nfirst\n"


def test_threads_share_descriptors(server: RunningServer) -> None:
    program = (
        "import threading, os\n"
        f"fd = os.open('{remote_root(server)}/shared', os.O_RDWR | os.O_CREAT, 0o644)\n"
        "def work(i):\n"
        "    os.pwrite(fd, bytes([65 + i]) * 10, i * 10)\n"
        "threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "print(os.pread(fd, 40, 0).decode()); print(os.fstat(fd).st_size)\n"
    )
    result = aviary_run("--", sys.executable, "-c", program)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "A" * 10 + "B" * 10 + "C" * 10 + "D" * 10 + "\n40\n"


def test_descriptors_are_lowest_free_and_offsets_shared_after_fork(server: RunningServer) -> None:
    program = (
        "import os\n"
        f"path = '{remote_root(server)}/f'\n"
        "open(path, 'w').write('0123456789')\n"
        "os.close(0)\n"
        "fd = os.open(path, os.O_RDONLY)\n"
        "print('fd', fd)\n"
        "copy = os.dup(fd)\n"
        "print(os.read(fd, 3))\n"
        "if os.fork() == 0:\n"
        "    os.read(copy, 2); os._exit(0)\n"
        "os.wait()\n"
        "print(os.read(fd, 100), os.lseek(fd, 0, os.SEEK_CUR))\n"
        "flags = __import__('fcntl').fcntl(fd, __import__('fcntl').F_GETFL)\n"
        "print(flags & os.O_ACCMODE == os.O_RDONLY)\n"
    )
    result = aviary_run("--", sys.executable, "-c", program)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "fd 0\nb'012'\nb'56789' 10\nTrue\n"


def test_exit_status_and_signals() -> None:
    assert sh("exit 3").returncode == 3
    assert sh("kill -TERM $$").returncode == 128 + 15
    assert aviary_run("--", "/no/such/program").returncode == 127


@pytest.mark.parametrize(
    ("mountlist", "message"),
    [
        ("/a\n", "mountlist:1: expected LOGICAL PHYSICAL"),
        ("/g gopher://host/x\n", "unknown protocol 'gopher'"),
        ("/c /chirp/host:port/x\n", "bad server address"),
    ],
)
def test_bad_mountlists_fail_before_anything_runs(
    tmp_path: Path, mountlist: str, message: str
) -> None:
    path = tmp_path / "mountlist"
    path.write_text(mountlist)
    marker = tmp_path / "ran"
    result = aviary_run("-m", str(path), "--", "touch", str(marker))
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not marker.exists()


def test_holes_are_loud(server: RunningServer) -> None:
    result = aviary_run(
        "--", sys.executable, "-c",
        f"import os\n"
        f"try:\n    os.mkfifo('{remote_root(server)}/fifo')\nexcept OSError as e:\n    print(e.errno)\n",
    )  # fmt: skip
    assert result.returncode == 0
    assert result.stdout.strip() == "38"  # ENOSYS: Chirp has no fifos
    assert "mknodat on remote path" in result.stderr and "not supported" in result.stderr


def test_trace_and_summary(server: RunningServer, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    result = sh(
        f"echo x > {remote_root(server)}/t && cat {remote_root(server)}/t",
        "--trace",
        str(trace),
        "--summary",
    )
    assert result.returncode == 0 and result.stdout == "x\n"
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    remote = [r for r in records if r["driver"].startswith("chirp://")]
    assert any(r["syscall"] in ("openat", "open") and r["path"].endswith("/t") for r in remote)
    assert all({"pid", "syscall", "path", "driver", "result", "us"} <= set(r) for r in records)
    assert "syscall" in result.stderr and "chirp://127.0.0.1" in result.stderr


def test_whole_file_cache_writes_back_on_close(server: RunningServer) -> None:
    base = remote_root(server)
    result = sh(
        f"printf abc > {base}/w && printf def >> {base}/w && cat {base}/w", "--cache", "whole"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "abcdef"
    with server.driver() as driver:
        assert driver.read_file("/w") == b"abcdef"


def test_service_directory_never_reaches_a_network() -> None:
    result = sh("ls -a /chirp; ls /chirp/not..a..host 2>&1; echo done")
    assert result.returncode == 0
    assert result.stdout.splitlines()[:2] == [".", ".."]
    assert result.stdout.endswith("done\n")


def test_table_names_match_the_kernel_table() -> None:
    for name, entry in SYSCALL_TABLE.items():
        assert entry.name == name
        assert _ptrace.syscall_number(name) >= 0
        assert entry.handler.__doc__, name
        if entry.support != "full":
            assert entry.note, f"{name} is {entry.support} without a note"
    whole, off = trapped_numbers("whole"), trapped_numbers("off")
    assert _ptrace.syscall_number("read") in off and _ptrace.syscall_number("read") not in whole
    assert _ptrace.syscall_number("getpid") not in off


def test_mmap_utimensat_and_ptrace_refusal(server: RunningServer) -> None:
    base = remote_root(server)
    program = (
        "import mmap, os\n"
        f"path = '{base}/m'\n"
        "open(path, 'wb').write(b'mapped bytes')\n"
        "with open(path, 'rb') as f:\n"
        "    view = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\n"
        "    print(view[:6].decode())\n"
        "os.utime(path, (1_000_000_000, 1_200_000_000))\n"
        "print(os.stat(path).st_mtime_ns)\n"
    )
    result = aviary_run("--", sys.executable, "-c", program)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "mapped\n1200000000000000000\n"
    nested = aviary_run("--", "strace", "-o", "/dev/null", "true")
    assert nested.returncode != 0
    assert "Operation not permitted" in nested.stderr


def test_root_mounted_remotely_with_local_exceptions(server: RunningServer, tmp_path: Path) -> None:
    # The seeds' SP5 ran with "/ /chirp/..."; the system directories stay local here.
    local = [
        "/usr",
        "/bin",
        "/lib",
        "/lib64",
        "/etc",
        "/proc",
        "/dev",
        "/tmp",
        "/root",
        "/sys",
        "/work",
    ]
    mountlist = tmp_path / "mounts"
    mountlist.write_text(f"/ {remote_root(server)}/\n" + "".join(f"{d} LOCAL\n" for d in local))
    result = aviary_run(
        "-m",
        str(mountlist),
        "--",
        "sh",
        "-c",
        "mkdir /data && echo remote > /data/f && cat /data/f && ls /",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "remote\ndata\n"
    with server.driver() as driver:
        assert driver.read_file("/data/f") == b"remote\n"


def unreported(trapped: Iterable[int], report: Mapping[str, Entry]) -> list[str]:
    """The trapped syscalls the report does not list, or lists without a note where its
    support is not full (or where only the sandbox traps it: the note says what it checks)."""
    found = []
    for nr in sorted(trapped):
        name = _ptrace.syscall_name(nr)
        entry = report.get(name)
        if entry is None:
            found.append(f"{name}: not in the report")
        elif not entry.note and (entry.support != "full" or entry.needs == SANDBOX_FEATURE):
            found.append(f"{name}: {entry.support} without a note")
    return found


def everything_trapped(calls: Mapping[str, Entry]) -> set[int]:
    """What the filter can trap: the namespace's calls with every feature, and a sandbox's."""
    guard = guard_for(SandboxRules.build(deny=["/nowhere"]), Namespace([]), calls)
    assert guard is not None
    features = {IDENTITY_FEATURE, HOSTNAME_FEATURE}
    return trapped_numbers("off", features) | trapped_numbers("whole") | guard.trapped_numbers()


def test_every_call_the_filter_can_trap_is_in_the_report() -> None:
    """The namespace's calls and the sandbox's: one table lists them all, each with its
    support and a note where that is not full."""
    trapped = everything_trapped(guarded_calls())
    assert _ptrace.syscall_number("chroot") in trapped  # the sandbox's view is in it
    assert unreported(trapped, SYSCALL_TABLE) == []


def test_the_report_check_finds_a_call_left_out() -> None:
    """Seeded omissions: a call the report lost, a note dropped, and a call the sandbox
    checks that the report never heard of."""
    lost = {name: entry for name, entry in SYSCALL_TABLE.items() if name != "chroot"}
    assert unreported(everything_trapped(guarded_calls()), lost) == ["chroot: not in the report"]
    silent = dict(SYSCALL_TABLE)
    silent["futimesat"] = dataclasses.replace(SYSCALL_TABLE["futimesat"], note="")
    assert unreported(everything_trapped(guarded_calls()), silent) == [
        "futimesat: full without a note"
    ]
    extra = Entry("syslog", sys_sandbox_only, "refused", "", refused_because="kernel control")
    wider = {**guarded_calls(), "syslog": extra}
    assert unreported(everything_trapped(wider), SYSCALL_TABLE) == ["syslog: not in the report"]
