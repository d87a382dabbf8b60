"""``aviary run --deny/--allow-only/--read-only/--hide``: escape attempts against a secret file.

Every attempt runs a real program under the real agent and tries to read
``secret/key``; the secret must never appear in what the program prints, and
each attempt must fail with the errno the sandbox promises.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reference_agent import _ptrace
from reference_agent.namespace import Namespace
from reference_agent.sandbox import SandboxRules, guard_for
from reference_agent.table import guarded_calls, trapped_numbers
from servers import RunningServer
from tests.helpers import ROOT, compile_c, served

AVIARY = [sys.executable, "-m", "harness.cli", "run"]
ESCAPE_SOURCE = Path(__file__).with_name("sandbox_escape.c")
SECRET = "TOPSECRET-7f3a"


def aviary(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AVIARY, *argv], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """tree/secret/key (denied in the tests), tree/allowed with ways towards it."""
    root = tmp_path / "tree"
    (root / "secret").mkdir(parents=True)
    (root / "secret" / "key").write_text(SECRET + "\n")
    (root / "secret" / "prog").write_text("#!/bin/sh\necho ran the denied program\n")
    (root / "secret" / "prog").chmod(0o755)
    with socket.socket(socket.AF_UNIX) as listener:  # leaves a socket file behind
        listener.bind(str(root / "secret" / "sock"))
    allowed = root / "allowed"
    allowed.mkdir()
    (allowed / "f").write_text("allowed data\n")
    (allowed / "link").symlink_to("../secret/key")
    (allowed / "abslink").symlink_to(root / "secret" / "key")
    (allowed / "dirlink").symlink_to(root / "secret")
    (allowed / "script").write_text(f"#!{root}/secret/prog\n")
    (allowed / "script").chmod(0o755)
    return root


@pytest.fixture(scope="module")
def escape_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    return compile_c(ESCAPE_SOURCE, tmp_path_factory.mktemp("escape") / "sandbox_escape")


# A Python program that tries every path-level way it can think of, one JSON line each:
# {"attempt": ..., "outcome": "EACCES" | "read:<data>" | "ok"}.
ATTEMPTS = textwrap.dedent(
    """
    import ctypes, errno, json, os, socket, subprocess, sys
    tree = sys.argv[1]
    secret, allowed = tree + "/secret", tree + "/allowed"
    libc = ctypes.CDLL(None, use_errno=True)

    def attempt(name, action):
        try:
            result = action()
        except OSError as exc:
            outcome = errno.errorcode.get(exc.errno, str(exc.errno))
        else:
            outcome = "read:" + result if isinstance(result, str) else "ok"
        print(json.dumps({"attempt": name, "outcome": outcome}), flush=True)

    def read(path, **kw):
        fd = os.open(path, os.O_RDONLY, **kw)
        try:
            return os.read(fd, 100).decode()
        finally:
            os.close(fd)

    def raw(call, *args):
        if getattr(libc, call)(*args) < 0:
            raise OSError(ctypes.get_errno(), call)

    parent = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    os.chdir(allowed)
    attempt("plain", lambda: read(secret + "/key"))
    attempt("relative dotdot", lambda: read("../secret/key"))
    attempt("dotdot inside", lambda: read(allowed + "/../secret/./key"))
    attempt("symlink relative", lambda: read(allowed + "/link"))
    attempt("symlink absolute", lambda: read(allowed + "/abslink"))
    attempt("symlink to the directory", lambda: read(allowed + "/dirlink/key"))
    attempt("new symlink", lambda: (os.symlink(secret + "/key", "new"), read("new"))[1])
    attempt("proc self root", lambda: read("/proc/self/root" + secret + "/key"))
    attempt("proc pid cwd", lambda: read(f"/proc/{os.getpid()}/cwd/../secret/key"))
    attempt("proc thread-self cwd", lambda: read("/proc/thread-self/cwd/../secret/key"))
    attempt("dev fd", lambda: read(f"/dev/fd/{parent}/secret/key"))
    attempt("proc self fd", lambda: read(f"/proc/self/fd/{parent}/secret/key"))
    attempt("openat dirfd", lambda: read("secret/key", dir_fd=parent))
    unix, datagram = socket.AF_UNIX, socket.SOCK_DGRAM
    attempt("connect unix", lambda: socket.socket(unix).connect(secret + "/sock"))
    attempt("bind unix", lambda: socket.socket(unix).bind(secret + "/new.sock"))
    attempt("sendto unix", lambda: socket.socket(unix, datagram).sendto(b"x", secret + "/sock"))
    attempt("sendmsg unix", lambda: socket.socket(unix, datagram).sendmsg([b"x"], [], 0, secret + "/sock"))
    attempt("stat", lambda: os.stat(secret + "/key"))
    attempt("lstat via dotdot", lambda: os.lstat("../secret/key"))
    attempt("access", lambda: raw("access", (secret + "/key").encode(), 0))
    attempt("listdir", lambda: os.listdir(secret))
    attempt("chdir", lambda: os.chdir(secret))
    attempt("readlink inside", lambda: os.readlink(secret + "/key"))
    attempt("getxattr", lambda: os.getxattr(secret + "/key", "user.x"))
    attempt("hard link", lambda: os.link(secret + "/key", allowed + "/hard"))
    attempt("rename out", lambda: os.rename(secret + "/key", allowed + "/moved"))
    attempt("rename the parent", lambda: os.rename(tree, tree + ".moved"))
    attempt("truncate", lambda: os.truncate(secret + "/key", 0))
    attempt("chmod", lambda: os.chmod(secret + "/key", 0o777))
    attempt("utime", lambda: os.utime(secret + "/key"))
    attempt("unlink", lambda: os.unlink(secret + "/key"))
    attempt("mkdir inside", lambda: os.mkdir(secret + "/sub"))
    attempt("exec denied program", lambda: subprocess.run([secret + "/prog"]))
    attempt("exec script with denied interpreter", lambda: subprocess.run([allowed + "/script"]))
    attempt("allowed file", lambda: read(allowed + "/f"))
    """
)


def attempts(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {line["attempt"]: line["outcome"] for line in lines}


@pytest.mark.parametrize(("hide", "refusal"), [(False, "EACCES"), (True, "ENOENT")])
def test_every_way_to_a_denied_file_is_refused(tree: Path, hide: bool, refusal: str) -> None:
    options = ["--deny", str(tree / "secret"), *(["--hide"] if hide else [])]
    result = aviary(*options, "--", sys.executable, "-c", ATTEMPTS, str(tree))
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    outcomes = attempts(result)
    assert outcomes.pop("allowed file") == "read:allowed data\n"
    assert len(outcomes) == 34, outcomes
    # Moving a rule's ancestor is refused with EACCES even when hiding: it exists to be seen.
    expected = {name: refusal for name in outcomes} | {"rename the parent": "EACCES"}
    wrong = {name: outcome for name, outcome in outcomes.items() if outcome != expected[name]}
    assert not wrong, wrong
    assert (tree / "secret" / "key").read_text() == SECRET + "\n"  # nothing changed it


def test_the_same_attempts_succeed_without_the_sandbox(tree: Path) -> None:
    """The attempts are real: unsandboxed, most of them reach the secret."""
    result = aviary("--", sys.executable, "-c", ATTEMPTS, str(tree))
    outcomes = attempts(result)
    assert outcomes["symlink relative"] == f"read:{SECRET}\n"
    assert outcomes["proc self root"] == f"read:{SECRET}\n"
    assert outcomes["dev fd"] == f"read:{SECRET}\n"
    assert outcomes["openat dirfd"] == f"read:{SECRET}\n"
    assert outcomes["connect unix"] == "ECONNREFUSED"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("int80", {"int80": "result=-38 errno=38"}),  # i386 numbering: ENOSYS
        ("x32", {"x32": "result=-1 errno=38"}),
        ("uring", {"io_uring_setup": "result=-1 errno=38"}),
        ("ptrace", {"traceme": "result=-1 errno=1", "attach": "result=-1 errno=1"}),
        ("vmwrite", {"process_vm_writev": "result=-1 errno=1"}),
        (
            "seccomp",
            {"prctl_seccomp": "result=-1 errno=1", "seccomp_listener": "result=-1 errno=1"},
        ),
        (
            "handle",
            {"name_to_handle_at": "result=-1 errno=13", "open_by_handle_at": "result=-1 errno=1"},
        ),
        ("openat", {"openat": "result=-1 errno=13", "openat2": "result=-1 errno=13"}),
    ],
)
def test_ways_around_the_agent_are_refused(
    tree: Path, escape_program: Path, mode: str, expected: dict[str, str]
) -> None:
    key = str(tree / "secret" / "key")
    args = {
        "int80": [key],
        "x32": [key],
        "vmwrite": [key],
        "handle": [key],
        "openat": [str(tree), "secret/key"],
    }.get(mode, [])
    result = aviary("--deny", str(tree / "secret"), "--", str(escape_program), mode, *args)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    seen = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert seen == expected


def test_int80_reads_the_secret_natively(tree: Path, escape_program: Path) -> None:
    """The 32-bit attempt is a real one: without the agent it reads the file."""
    native = subprocess.run(
        [str(escape_program), "int80", str(tree / "secret" / "key")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert f"DATA:{SECRET}" in native.stdout


def test_a_thread_rewriting_the_path_during_the_check_gets_nothing(
    tree: Path, escape_program: Path
) -> None:
    """TOCTOU: a second thread flips the path buffer between an allowed and a denied file.

    The agent copies the path it checked into its own scratch memory and points the
    syscall at that copy, so the kernel opens exactly what was checked.
    """
    allowed = tree / "allowed" / "kez"  # as long as secret/key, so the flip is clean
    allowed.write_text("allowed\n")
    denied = tree / "secret" / "key"
    # --no-pin: the threads run on both CPUs, the widest window a race can have.
    deny = ["--no-pin", "--deny", str(tree / "secret"), "--", str(escape_program)]
    result = aviary(*deny, "toctou", str(allowed), str(denied), "1.5", timeout=120)
    assert_race_lost(result)


def test_a_symlink_swapped_after_the_check_leads_nowhere(tree: Path, escape_program: Path) -> None:
    """The same race on the file system: a thread renames symlinks over the opened name.

    A local open runs as ``openat2`` of the checked, symlink-free path with
    RESOLVE_NO_SYMLINKS, so the kernel never follows the swapped link.
    """
    allowed = tree / "allowed" / "kez"
    allowed.write_text("allowed\n")
    link = tree / "allowed" / "swapped"
    deny = ["--no-pin", "--deny", str(tree / "secret"), "--", str(escape_program)]
    result = aviary(
        *deny, "symlink", str(link), str(allowed), str(tree / "secret" / "key"), "1.5", timeout=120
    )
    assert_race_lost(result)


def assert_race_lost(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    assert "DATA:" not in result.stdout and SECRET not in result.stdout
    counts = re.search(r"opened=(\d+) refused=(\d+)", result.stdout)
    assert counts is not None, result.stdout
    opened, refused = int(counts[1]), int(counts[2])
    assert opened > 0 and refused > 0  # the agent saw both paths: the race really ran


def test_allow_only_denies_the_rest_and_needs_the_system_allowed(tree: Path) -> None:
    allowed = tree / "allowed"
    script = (
        f"cat {allowed}/f; cat {tree}/secret/key; cat {allowed}/link; ls /; "
        f"stat -c %F {tree}; echo x > /dev/null && echo devnull; cat /etc/hostname"
    )
    result = aviary("--allow-only", str(allowed), "--allow-system", "--", "/bin/sh", "-c", script)
    assert SECRET not in result.stdout + result.stderr
    assert result.stdout == "allowed data\ndirectory\ndevnull\n"
    assert result.stderr.count("Permission denied") == 4  # key, link, ls /, /etc/hostname
    # Without --allow-system the shell's own binary and loader are outside: refused up front.
    bare = aviary("--allow-only", str(allowed), "--", "/bin/sh", "-c", "true")
    assert bare.returncode == 126
    assert bare.stderr == "aviary: run: /bin/sh: Permission denied\n"


def test_read_only_trees_refuse_every_change(tree: Path) -> None:
    allowed = tree / "allowed"
    script = (
        f"cat {allowed}/f; echo x >> {allowed}/f; touch {allowed}/new; mkdir {allowed}/d; "
        f"rm {allowed}/f; mv {allowed}/f {tree}/out; mv {tree} {tree}.moved; "
        f"echo elsewhere > {tree}/secret/other && cat {tree}/secret/other"
    )
    result = aviary("--read-only", str(allowed), "--", "/bin/sh", "-c", script)
    assert result.stdout == "allowed data\nelsewhere\n"
    assert result.stderr.count("Read-only file system") == 6, result.stderr
    assert (allowed / "f").read_text() == "allowed data\n"
    assert sorted(p.name for p in allowed.iterdir()) == [
        "abslink",
        "dirlink",
        "f",
        "link",
        "script",
    ]


def test_mountlist_access_letters_restrict_a_local_mount(tree: Path, tmp_path: Path) -> None:
    mountlist = tmp_path / "mounts"
    mountlist.write_text(f"{tree}/view {tree}/allowed r\n{tree}/tools /bin rw\n")
    script = (
        f"cat {tree}/view/f; echo x > {tree}/view/f; {tree}/tools/true && echo ran; "
        f"cat {tree}/allowed/f"
    )
    result = aviary("-m", str(mountlist), "--", "/bin/sh", "-c", script)
    assert result.stdout == "allowed data\nallowed data\n", result.stderr
    assert result.stderr.count("Permission denied") == 2  # the write and the exec


def test_a_read_only_remote_mount(tree: Path, tmp_path: Path) -> None:
    with served("chirp/aviary") as server:
        write_remote_file(server, "data/f", "remote\n")
        mountlist = tmp_path / "mounts"
        mountlist.write_text(f"/remote chirp://127.0.0.1:{server.port}/data rx\n")
        result = aviary(
            "-m", str(mountlist), "--", "/bin/sh", "-c",
            "cat /remote/f; echo changed > /remote/f; rm /remote/f; mkdir /remote/d; ls /remote",
        )  # fmt: skip
        assert result.stdout == "remote\nf\n", result.stderr
        assert result.stderr.count("Permission denied") == 3
        with server.driver() as driver:
            assert driver.read_file("/data/f") == b"remote\n"
        denied = aviary(
            "-m", str(mountlist), "--deny", "/remote/f", "--", "/bin/sh", "-c", "cat /remote/f"
        )
        assert denied.stdout == "" and "Permission denied" in denied.stderr


def write_remote_file(server: RunningServer, path: str, text: str) -> None:
    with server.driver() as driver:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            directory = "/" + "/".join(parts[:depth])
            with contextlib.suppress(FileExistsError):
                driver.mkdir(directory, 0o755)
        handle = driver.open("/" + path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            driver.pwrite(handle, text.encode(), 0)
        finally:
            driver.close(handle)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--hide"], "aviary: run: --hide needs --deny or --allow-only\n"),
        (["--allow-system"], "aviary: run: --allow-system only widens --allow-only\n"),
        (["--deny", ""], "aviary: run: an empty path cannot be a sandbox rule\n"),
        (["--cache-dir", "/tmp/x"], "aviary: run: --cache-dir needs --cache whole\n"),
    ],
)
def test_bad_sandbox_options_are_one_line_errors(options: list[str], message: str) -> None:
    result = aviary(*options, "--", "true")
    assert result.returncode == 2
    assert result.stderr == message


# Every x86_64 syscall that takes a path (from the kernel's syscall table), so that a new
# one cannot slip past the sandbox unnoticed.
PATH_TAKING = {
    "open", "openat", "openat2", "creat", "stat", "lstat", "newfstatat", "statx", "access",
    "faccessat", "faccessat2", "readlink", "readlinkat", "statfs", "chdir", "chroot", "execve",
    "execveat", "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat",
    "renameat2", "link", "linkat", "symlink", "symlinkat", "mknod", "mknodat", "truncate",
    "chmod", "fchmodat", "fchmodat2", "chown", "lchown", "fchownat", "utime", "utimes",
    "futimesat", "utimensat", "getxattr", "lgetxattr", "listxattr", "llistxattr", "setxattr",
    "lsetxattr", "removexattr", "lremovexattr", "getxattrat", "setxattrat", "listxattrat",
    "removexattrat", "file_getattr", "file_setattr", "inotify_add_watch", "fanotify_mark",
    "name_to_handle_at", "quotactl", "acct", "mount", "umount2", "pivot_root", "swapon",
    "swapoff", "uselib", "open_tree", "open_tree_attr", "move_mount", "fspick", "mount_setattr",
}  # fmt: skip


def test_every_path_taking_syscall_is_checked_or_refused() -> None:
    calls = guarded_calls()
    covered = {
        name for name, entry in calls.items() if entry.paths or entry.opens or entry.refused_because
    }
    assert covered >= PATH_TAKING, sorted(PATH_TAKING - covered)
    for name in covered:
        assert name in _ptrace.SYSCALL_NUMBERS, name


def test_no_sandbox_keeps_the_filter_as_small_as_before() -> None:
    assert guard_for(None, Namespace([]), guarded_calls()) is None
    guard = guard_for(SandboxRules.build(deny=["/nowhere"]), Namespace([]), guarded_calls())
    assert guard is not None
    extra = guard.trapped_numbers() - trapped_numbers("off")
    assert _ptrace.syscall_number("futimesat") in extra
    assert _ptrace.syscall_number("open_by_handle_at") in extra
