"""``aviary run`` on remote mounts: every write lands where the program named it.

Each test runs a real program under the real agent against both Chirp servers
(cctools' and aviary's), and where the question is the kernel's own semantics,
the same probe runs natively on a local directory and its answers are the
expected ones.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers import RunningServer
from tests.helpers import ROOT, start_or_skip

SERVERS = ("chirp/cctools", "chirp/aviary")
#: EOPNOTSUPP and ENOTSUP are one number on Linux; errno.errorcode names it so.
NOT_SUPPORTED = errno.errorcode[errno.EOPNOTSUPP]


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    running = start_or_skip(request.param)
    try:
        yield running
    finally:
        running.stop()


def remote_root(server: RunningServer) -> str:
    return f"/chirp/127.0.0.1:{server.port}"


def aviary(
    *argv: str, cwd: Path, options: tuple[str, ...] = (), timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``aviary run [OPTIONS] -- ARGV`` started in the local directory ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", *options, "--", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def remote_dir(server: RunningServer, tmp_path: Path, name: str) -> str:
    """A fresh directory on the server (made through the agent, so the server's ACLs apply)."""
    path = f"{remote_root(server)}/{name}"
    made = aviary("mkdir", path, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    return path


def listing(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if not name.startswith(".__"))


# -- 1. the working directory follows every process --------------------------------------------

#: The issue's reproduction: a root shell that stays in the local start directory runs a
#: second shell whose four background jobs cd to the server and make files from command
#: substitutions (a fork whose child forks at once). With the tracer kept busy, a child
#: often runs before its creator's fork event is handled; it must still see the remote
#: directory. (Without the hold, every run here put files into the start directory.)
ROUNDS = 10
JOBS = 4
SUBSTITUTIONS = (
    "for j in $(seq {jobs}); do ( for n in $(seq {rounds}); do cd {d} && "
    "for i in 1 2 3 4 5 6; do x=$(echo data$i > f$j$i | cat); done; done ) & done; wait"
)


def test_command_substitutions_write_into_the_remote_cwd(
    server: RunningServer, tmp_path: Path
) -> None:
    start = tmp_path / "start"
    start.mkdir()
    d = remote_dir(server, start, "d")
    inner = SUBSTITUTIONS.format(jobs=JOBS, rounds=ROUNDS, d=d)
    run = aviary("dash", "-c", f"dash -c '{inner}'; echo done", cwd=start)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "done\n"
    assert run.stderr == ""
    assert listing(start) == [], "files written into the local start directory"
    names = sorted(f"f{j}{i}" for j in range(1, JOBS + 1) for i in range(1, 7))
    assert listing(server.data_dir / "d") == names
    assert (server.data_dir / "d" / "f46").read_text() == "data6\n"


#: Batches of children forked without waiting, each opening a relative name at once: with
#: the tracer busy, a child's first syscall often stops before its creator's fork event.
#: The root shell stays in the local start directory, so a child given any directory but
#: its creator's writes there.
FORKER = r"""
import os, sys
os.chdir(sys.argv[1])
pids = []
for i in range(int(sys.argv[2])):
    pid = os.fork()
    if pid == 0:
        fd = os.open(f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644)
        os._exit(0 if os.write(fd, b"x") == 1 else 1)
    pids.append(pid)
    if len(pids) == 20 or i == int(sys.argv[2]) - 1:
        failed = [p for p in pids if os.waitpid(p, 0)[1] != 0]
        assert not failed, failed
        pids = []
"""
CHILDREN = 100


def test_forked_children_start_in_their_creators_cwd(server: RunningServer, tmp_path: Path) -> None:
    start = tmp_path / "start"
    start.mkdir()
    d = remote_dir(server, start, "k")
    forker = tmp_path / "forker.py"
    forker.write_text(FORKER)
    run = aviary("sh", "-c", f"{sys.executable} {forker} {d} {CHILDREN}; echo rc=$?", cwd=start)
    assert run.stdout == "rc=0\n", run.stderr
    assert listing(start) == [], "files written into the local start directory"
    assert len(listing(server.data_dir / "k")) == CHILDREN


#: Threads share one working directory (CLONE_FS); a forked child and a spawned one
#: (vfork) get a copy; exec keeps it.
THREADS_AND_CHILDREN = r"""
import os, subprocess, sys, threading
base = sys.argv[1]
os.chdir(base)
os.mkdir("sub")
t = threading.Thread(target=os.chdir, args=("sub",))
t.start(); t.join()
print("thread moved main:", os.getcwd() == base + "/sub")
pid = os.fork()
if pid == 0:
    os.chdir("..")
    with open("from-fork", "w") as f:
        f.write("fork")
    os._exit(0)
os.waitpid(pid, 0)
print("fork kept its own:", os.getcwd() == base + "/sub")
subprocess.run(["sh", "-c", "echo spawn > from-spawn; cd .. && echo up > from-spawn-up"], check=True)
print("spawn kept its own:", os.getcwd() == base + "/sub")
import ctypes, signal
libc = ctypes.CDLL(None, use_errno=True)
for flags in (0x200, 0):  # the raw clone call, with and without CLONE_FS
    pid = libc.syscall(56, flags | signal.SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        os.chdir(base)
        os._exit(0)
    os.waitpid(pid, 0)
    print("clone", hex(flags), "moved its creator:", os.getcwd() == base)
    os.chdir(base + "/sub")
"""


def test_threads_share_the_cwd_children_copy_it(server: RunningServer, tmp_path: Path) -> None:
    d = remote_dir(server, tmp_path, "t")
    run = aviary(sys.executable, "-c", THREADS_AND_CHILDREN, d, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "thread moved main: True",
        "fork kept its own: True",
        "spawn kept its own: True",
        "clone 0x200 moved its creator: True",
        "clone 0x0 moved its creator: False",
    ]
    assert listing(server.data_dir / "t") == ["from-fork", "from-spawn-up", "sub"]
    assert listing(server.data_dir / "t" / "sub") == ["from-spawn"]
    assert listing(tmp_path) == []


def test_a_removed_remote_cwd_never_falls_back_to_local(
    server: RunningServer, tmp_path: Path
) -> None:
    d = remote_dir(server, tmp_path, "gone")
    script = f"cd {d} && rmdir {d} && {{ echo x > f; echo rc=$?; pwd; }}"
    run = aviary("sh", "-c", script, cwd=tmp_path)
    assert run.stdout.startswith("rc=2\n"), run.stdout + run.stderr  # dash: a failed redirect
    assert "cannot create f" in run.stderr
    assert listing(tmp_path) == []
    assert not (server.data_dir / "gone").exists()


#: futimesat(2) is a path call the agent does not trap: with a remote working directory its
#: relative name must not reach the local directory the kernel last had.
UNTRAPPED = r"""
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
os.chdir(sys.argv[1])
result = libc.syscall(261, -100, b"victim", None)
print("ok" if result == 0 else errno.errorcode[ctypes.get_errno()])
"""


def test_an_untrapped_relative_call_fails_in_a_remote_cwd(
    server: RunningServer, tmp_path: Path
) -> None:
    d = remote_dir(server, tmp_path, "u")
    victim = tmp_path / "victim"
    victim.write_text("local")
    os.utime(victim, (1_000_000_000, 1_000_000_000))
    run = aviary(sys.executable, "-c", UNTRAPPED, d, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "ENOENT\n"
    assert victim.stat().st_mtime == 1_000_000_000


def test_fchdir_to_a_descriptor_of_the_service_directory(
    server: RunningServer, tmp_path: Path
) -> None:
    remote_dir(server, tmp_path, "v")
    script = (
        "import os; os.fchdir(os.open('/chirp', os.O_RDONLY)); print(os.getcwd()); "
        f"os.chdir('127.0.0.1:{server.port}'); print(os.listdir('.'))"
    )
    run = aviary(sys.executable, "-c", script, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"/chirp\n{['v']}\n"


# -- 2. unix socket names ------------------------------------------------------------------------

SOCKETS = r"""
import errno, os, socket, sys
os.chdir(sys.argv[1])
for name in ("rel.sock", sys.argv[1] + "/abs.sock"):
    for op in ("bind", "connect"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            getattr(s, op)(name)
            print(op, "ok")
        except OSError as e:
            print(op, errno.errorcode[e.errno])
        s.close()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("\0aviary-abstract-%d" % os.getpid())
print("abstract ok")
"""


def test_unix_socket_names_never_reach_the_local_directory(
    server: RunningServer, tmp_path: Path
) -> None:
    d = remote_dir(server, tmp_path, "s")
    run = aviary(sys.executable, "-c", SOCKETS, d, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        f"bind {NOT_SUPPORTED}",
        "connect ENOENT",
        f"bind {NOT_SUPPORTED}",
        "connect ENOENT",
        "abstract ok",
    ]
    assert listing(tmp_path) == [], "a socket was made in the local directory"
    assert listing(server.data_dir / "s") == []


def test_unix_socket_names_under_a_local_mount_are_rewritten(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    script = (
        "import socket; s = socket.socket(socket.AF_UNIX); s.bind('/logical/x.sock'); "
        "c = socket.socket(socket.AF_UNIX); s.listen(); c.connect('/logical/x.sock'); print('ok')"
    )
    run = aviary(sys.executable, "-c", script, cwd=tmp_path, options=("-M", f"/logical={real}"))
    assert run.returncode == 0, run.stderr
    assert run.stdout == "ok\n"
    assert listing(real) == ["x.sock"]


# -- 5. *at calls relative to a local directory descriptor ------------------------------------


def test_rsync_to_and_from_the_server(server: RunningServer, tmp_path: Path) -> None:
    """rsync walks from "/" with openat/fstatat/mkdirat/renameat on local descriptors.

    Owners are left out (--no-o --no-g): the servers keep their own; and a symlink's own
    times (--omit-link-times): Chirp can only set them through the link, so the agent
    refuses that (EOPNOTSUPP) and rsync would report it.
    """
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_text("hello\n")
    (src / "sub" / "b").write_text("deep\n")
    (src / "link").symlink_to("a")
    (src / "a").chmod(0o640)
    os.utime(src / "a", (1_000_000_000, 1_000_000_000))
    remote = f"{remote_root(server)}/copy/"
    back = tmp_path / "back"
    sync = "rsync -a --no-o --no-g --omit-link-times"
    script = f"{sync} {src}/ {remote} && {sync} {remote} {back}/"
    run = aviary("sh", "-c", script, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    on_server = server.data_dir / "copy"
    for tree in (on_server, back):
        assert listing(tree) == ["a", "link", "sub"]
        assert (tree / "a").read_text() == "hello\n"
        assert (tree / "sub" / "b").read_text() == "deep\n"
        assert os.readlink(tree / "link") == "a"
        assert (tree / "a").stat().st_mode & 0o777 == 0o640
        assert int((tree / "a").stat().st_mtime) == 1_000_000_000
    assert listing(tmp_path) == ["back", "src"]


# -- 3-4, 6. the kernel's answers for names, links and open flags ------------------------------

PROBE = r"""
import ctypes, errno, json, os, stat, sys
base = sys.argv[1]
out = {}
libc = ctypes.CDLL(None, use_errno=True)
def attempt(name, fn):
    try:
        value = fn()
        out[name] = "ok" if value is None else value
    except OSError as e:
        out[name] = errno.errorcode[e.errno]
def put(path, data):
    with open(path, "w") as f:
        f.write(data)
def fchmodat2(path, mode, flags):
    if libc.syscall(452, -100, os.fsencode(path), mode, flags) != 0:
        raise OSError(ctypes.get_errno(), "fchmodat2")
os.mkdir(f"{base}/a"); os.mkdir(f"{base}/a/b"); put(f"{base}/f", "file")
attempt("rename_dot", lambda: os.rename(f"{base}/a/b/.", f"{base}/c"))
attempt("rename_dotdot", lambda: os.rename(f"{base}/a/b/..", f"{base}/c"))
attempt("rename_onto_dot", lambda: os.rename(f"{base}/f", f"{base}/a/."))
attempt("b_still_there", lambda: os.path.isdir(f"{base}/a/b") and not os.path.exists(f"{base}/c"))
attempt("rmdir_dot", lambda: os.rmdir(f"{base}/a/b/."))
attempt("rmdir_dotdot", lambda: os.rmdir(f"{base}/a/b/.."))
attempt("mkdir_dot", lambda: os.mkdir(f"{base}/a/b/."))
attempt("unlink_dot", lambda: os.unlink(f"{base}/a/."))
attempt("stat_file_slash", lambda: os.stat(f"{base}/f/") and None)
attempt("open_file_slash", lambda: os.close(os.open(f"{base}/f/", os.O_RDONLY)))
attempt("rename_file_slash", lambda: os.rename(f"{base}/f/", f"{base}/g"))
attempt("unlink_file_slash", lambda: os.unlink(f"{base}/f/"))
attempt("mkdir_new_slash", lambda: os.mkdir(f"{base}/n/"))
attempt("rename_dir_slash", lambda: os.rename(f"{base}/n/", f"{base}/m/"))
os.symlink("missing", f"{base}/dangling")
attempt("excl_on_dangling", lambda: os.close(os.open(f"{base}/dangling", os.O_CREAT | os.O_EXCL | os.O_WRONLY)))
attempt("dangling_target_made", lambda: os.path.lexists(f"{base}/missing"))
put(f"{base}/target", "t")
os.utime(f"{base}/target", (1000000000, 1000000000))
os.symlink("target", f"{base}/link")
attempt("utime_nofollow", lambda: os.utime(f"{base}/link", (1500000000, 1500000000), follow_symlinks=False))
attempt("target_mtime", lambda: int(os.stat(f"{base}/target").st_mtime))
os.chmod(f"{base}/target", 0o640)
attempt("fchmodat2_nofollow", lambda: fchmodat2(f"{base}/link", 0o600, 0x100))
attempt("target_mode", lambda: oct(stat.S_IMODE(os.stat(f"{base}/target").st_mode)))
attempt("creat_nofollow", lambda: os.close(os.open(f"{base}/new", os.O_CREAT | os.O_NOFOLLOW | os.O_RDWR, 0o644)))
attempt("creat_nofollow_made", lambda: os.path.isfile(f"{base}/new"))
attempt("open_nofollow_link", lambda: os.close(os.open(f"{base}/link", os.O_RDONLY | os.O_NOFOLLOW)))
def o_path_link():
    fd = os.open(f"{base}/link", os.O_PATH | os.O_NOFOLLOW)
    try:
        kind = "link" if stat.S_ISLNK(os.fstat(fd).st_mode) else "other"
        buf = ctypes.create_string_buffer(64)
        n = libc.readlinkat(fd, b"", buf, 64)
        return [kind, buf.raw[:n].decode() if n >= 0 else errno.errorcode[ctypes.get_errno()]]
    finally:
        os.close(fd)
attempt("o_path_nofollow", o_path_link)
def proc_fd_name():
    fd = os.open(f"{base}/target", os.O_RDONLY)
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == f"{base}/target"
    finally:
        os.close(fd)
attempt("proc_fd_names_the_file", proc_fd_name)
# glibc's fchmodat(AT_SYMLINK_NOFOLLOW) (tar): an O_PATH open, then chmod("/proc/self/fd/N").
def glibc_fchmodat_nofollow(path, mode):
    if libc.fchmodat(-100, os.fsencode(path), mode, 0x100) != 0:
        raise OSError(ctypes.get_errno(), "fchmodat")
    return oct(stat.S_IMODE(os.lstat(path).st_mode))
attempt("fchmodat_nofollow_file", lambda: glibc_fchmodat_nofollow(f"{base}/target", 0o604))
attempt("fchmodat_nofollow_link", lambda: glibc_fchmodat_nofollow(f"{base}/link", 0o600))
def with_fd(name, flags, fn):
    fd = os.open(f"{base}/{name}", flags)
    try:
        return fn(fd)
    finally:
        os.close(fd)
def via(name, flags, fn):
    return with_fd(name, os.O_PATH | flags, fn)
def proc(fd, below=""):
    return f"/proc/self/fd/{fd}{below}"
def fchownat_empty(fd, uid):
    if libc.fchownat(fd, b"", uid, -1, 0x1000) != 0:
        raise OSError(ctypes.get_errno(), "fchownat")
attempt("o_path_link_chown_same", lambda: via("link", os.O_NOFOLLOW, lambda fd: fchownat_empty(fd, -1)))
attempt("o_path_link_chown_other", lambda: via("link", os.O_NOFOLLOW, lambda fd: fchownat_empty(fd, 4242)))
attempt("o_path_fchmod", lambda: via("target", 0, lambda fd: os.fchmod(fd, 0o600)))
attempt("o_path_lseek", lambda: via("target", 0, lambda fd: os.lseek(fd, 0, os.SEEK_SET)))
attempt("o_path_proc_stat", lambda: via("target", 0, lambda fd: os.stat(proc(fd)).st_size))
attempt("proc_fd_lists_the_directory", lambda: via("a", 0, lambda fd: sorted(os.listdir(proc(fd)))))
attempt("proc_fd_below_the_directory", lambda: via("a", 0, lambda fd: os.path.isdir(proc(fd, "/b"))))
attempt("proc_fd_link_chmod", lambda: via("link", os.O_NOFOLLOW, lambda fd: os.chmod(proc(fd), 0o600)))
attempt("proc_fd_link_below", lambda: via("link", os.O_NOFOLLOW, lambda fd: os.stat(proc(fd, "/x"))))
attempt("dotdot_missing_create", lambda: os.close(os.open(f"{base}/missing/../made", os.O_CREAT | os.O_WRONLY, 0o644)))
attempt("dotdot_missing_made", lambda: os.path.lexists(f"{base}/made"))
attempt("dotdot_file", lambda: os.stat(f"{base}/f/../f") and None)
attempt("dotdot_directory", lambda: os.stat(f"{base}/a/../f").st_size)
attempt("dir_seek_end", lambda: with_fd("a", os.O_RDONLY, lambda fd: os.lseek(fd, 0, os.SEEK_END) > 0))
attempt("dir_seek_past_end", lambda: with_fd("a", os.O_RDONLY, lambda fd: os.lseek(fd, 1, os.SEEK_END)))
def read_after_listing(fd):
    buffer = ctypes.create_string_buffer(4096)
    while libc.syscall(217, fd, buffer, 4096) > 0:  # getdents64 to the end
        pass
    answers = []
    for read in (lambda: os.read(fd, 1), lambda: os.readv(fd, [bytearray(1)])):
        try:
            answers.append(read())
        except OSError as e:
            answers.append(errno.errorcode[e.errno])
    return answers
attempt("dir_read_after_listing", lambda: with_fd("a", os.O_RDONLY, read_after_listing))
import tempfile
def rename_with_dirfd(fd, old, new):
    os.rename(old, new, src_dir_fd=fd)
attempt("renameat_bad_dirfd", lambda: rename_with_dirfd(987, "x", f"{base}/f2"))
with tempfile.TemporaryFile() as local_file:
    attempt("renameat_file_dirfd", lambda: rename_with_dirfd(local_file.fileno(), "x", f"{base}/f2"))
attempt("renameat_remote_file_dirfd", lambda: via("f", 0, lambda fd: rename_with_dirfd(fd, "x", f"{base}/f2")))
print(json.dumps(out))
"""


def probe(
    run_dir: Path, base: str, *, traced: bool, options: tuple[str, ...] = ()
) -> dict[str, object]:
    argv = [sys.executable, "-c", PROBE, base]
    run = (
        aviary(*argv, cwd=run_dir, options=options)
        if traced
        else subprocess.run(argv, cwd=run_dir, capture_output=True, text=True, timeout=60)
    )
    assert run.returncode == 0, run.stderr
    answers: dict[str, object] = json.loads(run.stdout)
    return answers


@pytest.fixture(scope="module")
def native_answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    base = tmp_path_factory.mktemp("native")
    return probe(base, str(base), traced=False)


#: Where a remote server cannot give the native answer, the agent's documented one.
REMOTE_LIMITS = {
    # Chirp sets times and modes only through a link: refused rather than change the target.
    "utime_nofollow": NOT_SUPPORTED,
    # Servers keep their own owners: a real ownership change is EPERM (--chown fail).
    "o_path_link_chown_other": "EPERM",
    # A descriptor of the link itself: its /proc name is refused rather than followed
    # (the kernel stats the link there: a remote one can only be looked at by its name).
    "proc_fd_link_below": "ENOTDIR",
}


def test_native_answers_are_the_kernels(native_answers: dict[str, object]) -> None:
    """The reference itself, so that a change of kernel shows up here and not as a mystery."""
    assert native_answers["rename_dot"] == "EBUSY"
    assert native_answers["excl_on_dangling"] == "EEXIST"
    assert native_answers["fchmodat2_nofollow"] == NOT_SUPPORTED
    assert native_answers["o_path_nofollow"] == ["link", "target"]
    assert native_answers["proc_fd_names_the_file"] is True


def test_local_directory_gives_the_native_answers(
    native_answers: dict[str, object], tmp_path: Path
) -> None:
    base = tmp_path / "base"
    base.mkdir()
    assert probe(tmp_path, str(base), traced=True) == native_answers


def test_local_mount_gives_the_native_answers(
    native_answers: dict[str, object], tmp_path: Path
) -> None:
    """Names rewritten onto a mounted local directory keep their "/." and "/" endings."""
    real = tmp_path / "real"
    real.mkdir()
    answers = probe(tmp_path, "/logical", traced=True, options=("-M", f"/logical={real}"))
    # /proc shows the real path of a local file, as the kernel does.
    assert answers == {**native_answers, "proc_fd_names_the_file": False}


def test_remote_directory_gives_the_native_answers(
    server: RunningServer, native_answers: dict[str, object], tmp_path: Path
) -> None:
    base = remote_dir(server, tmp_path, "probe")
    answers = probe(tmp_path, base, traced=True)
    expected = {**native_answers, **REMOTE_LIMITS}
    differences = {
        key: (answers.get(key), value)
        for key, value in expected.items()
        if answers.get(key) != value
    }
    assert not differences, f"(agent, expected) per probe: {differences}"
    assert listing(tmp_path) == []
