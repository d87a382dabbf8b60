"""Real programs under ``aviary run``: on both Chirp servers they give what they give locally.

Each check is a shell script run twice: natively over a fresh local directory, and under
the agent over a fresh directory on the place being tested (a local directory, cctools'
chirp_server, aviary's Chirp server). Its output must be the same (paths aside), the tree
it leaves in the server's export directory must be the native tree (names, kinds, modes,
sizes and bytes), and the directory the agent was started in must stay empty: every write
lands where the program named it.
"""

from __future__ import annotations

import itertools
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from servers import RunningServer
from tests.helpers import ROOT, start_or_skip

PLACES = ("local", "chirp/cctools", "chirp/aviary")
_serial = itertools.count()


@dataclass(frozen=True)
class Place:
    """Where a check's files go: the path programs use, and where they land on disk."""

    name: str
    root: str  # the directory programs are given ($B lives under it)
    export: Path  # the same directory on this machine's disk (a server's export)

    @property
    def remote(self) -> bool:
        return self.name != "local"


@pytest.fixture(scope="module", params=PLACES)
def place(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Place]:
    if request.param == "local":
        directory = tmp_path_factory.mktemp("place")
        yield Place("local", str(directory), directory)
        return
    server: RunningServer = start_or_skip(request.param)
    try:
        yield Place(request.param, f"/chirp/127.0.0.1:{server.port}", server.data_dir)
    finally:
        server.stop()


@dataclass(frozen=True)
class Outcome:
    native: subprocess.CompletedProcess[str]
    traced: subprocess.CompletedProcess[str]
    native_tree: Path
    traced_tree: Path
    cwd: Path


def _run(
    script: str, base: str, local: Path, cwd: Path, agent_options: tuple[str, ...] | None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "B": base, "L": str(local), "PYTHONPATH": str(ROOT), "LC_ALL": "C"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    prefix = [] if agent_options is None else [sys.executable, "-m", "harness.cli", "run"]
    # Chirp servers create files with umask 077 (a declared limit): the native run does too.
    script = "umask 077\n" + script
    argv = [*prefix, *(agent_options or ()), *(["--"] if prefix else []), "sh", "-ec", script]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def run_check(place: Place, tmp_path: Path, script: str, *agent_options: str) -> Outcome:
    """Run ``script`` natively and under the agent on ``place``; $B is a fresh directory."""
    name = f"check{next(_serial)}"
    native_tree, native_local = tmp_path / "native" / name, tmp_path / "native-local"
    traced_local, cwd = tmp_path / "traced-local", tmp_path / "cwd"
    for directory in (native_tree.parent, native_local, traced_local, cwd):
        directory.mkdir()
    native = _run(script, str(native_tree), native_local, tmp_path, None)
    traced = _run(script, f"{place.root}/{name}", traced_local, cwd, agent_options)
    native = _normalised(native, str(native_tree), str(native_local))
    traced = _normalised(traced, f"{place.root}/{name}", str(traced_local))
    return Outcome(native, traced, native_tree, place.export / name, cwd)


def _normalised(
    done: subprocess.CompletedProcess[str], base: str, local: str
) -> subprocess.CompletedProcess[str]:
    done.stdout = done.stdout.replace(base, "$B").replace(local, "$L")
    return done


#: A server's own files in the directories it exports (aviary's Chirp keeps ACLs there).
SERVER_FILES = (".__acl",)


def tree(
    root: Path, skip_bytes: tuple[str, ...] = (), ignore: tuple[str, ...] = ()
) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root``: kind, mode, size, and the bytes of regular files.

    Files whose path contains one of ``skip_bytes`` (a database, an object file naming
    its own path, a commit with its time) are compared by kind and mode only.
    """
    entries: dict[str, tuple[object, ...]] = {}
    if not root.exists():
        return entries
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if path.name in SERVER_FILES or any(part in relative for part in ignore):
            continue
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            entries[relative] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            entries[relative] = ("dir", stat.S_IMODE(st.st_mode))
        else:
            if any(part in relative for part in skip_bytes):
                entries[relative] = ("file", stat.S_IMODE(st.st_mode))
            else:
                entries[relative] = (
                    "file",
                    stat.S_IMODE(st.st_mode),
                    st.st_size,
                    path.read_bytes(),
                )
    return entries


def assert_same(
    outcome: Outcome,
    skip_bytes: tuple[str, ...] = (),
    ignore: tuple[str, ...] = (),
    limit: tuple[str, ...] = (),
) -> None:
    """The same output and tree, nothing in the cwd; ``limit``: the one complaint allowed.

    ``limit`` are the words of a declared protocol limit's message (reference_agent.limits):
    the traced program may exit non-zero only if every complaint it printed has them all.
    """
    native, traced = outcome.native, outcome.traced
    assert native.returncode == 0, native.stderr
    complaints = [line for line in traced.stderr.splitlines() if not line.startswith("aviary:")]
    if limit and traced.returncode != 0:
        assert complaints, traced.stderr
        assert all(all(word in line for word in limit) for line in complaints), traced.stderr
    else:
        assert traced.returncode == 0, traced.stderr
    assert traced.stdout == native.stdout
    traced_tree = tree(outcome.traced_tree, skip_bytes, ignore)
    assert traced_tree == tree(outcome.native_tree, skip_bytes, ignore)
    assert list(outcome.cwd.iterdir()) == [], "a write landed in the agent's local cwd"


# A small tree with a symlink, modes and whole-second times (Chirp keeps whole seconds).
MAKE_TREE = """
mkdir -p "$B/t/sub"
printf 'alpha\\n' > "$B/t/a"
printf 'beta\\n' > "$B/t/sub/b"
chmod 640 "$B/t/a"; chmod 750 "$B/t/sub"
ln -s sub/b "$B/t/link"
touch -d '2020-01-02 03:04:05' "$B/t/a" "$B/t/sub/b"
"""
LIST_TREE = "find . -path ./.git -prune -o -printf '%p %y %m %s %l\\n' | sort"
TIMES = "find . -type f -printf '%p %TY-%Tm-%Td %TH:%TM:%.2TS\\n' | sort"


def test_tar_keeps_symlinks_modes_and_times(place: Place, tmp_path: Path) -> None:
    # The archive is made from a local tree owned by root: extracting it as root changes
    # owners, which --chown ignore lets tar do on a mount whose server keeps its own.
    # glibc's fchmodat(AT_SYMLINK_NOFOLLOW) opens the directory O_PATH and chmods
    # /proc/self/fd/N: the agent must send that to the remote directory.
    script = (
        MAKE_TREE.replace("$B/t", "$L/t")
        + f"""
mkdir "$B"; tar cf "$B/t.tar" -C "$L" t; cd "$B"; mkdir x; cd x; tar xf ../t.tar
{LIST_TREE}; {TIMES}; tar tf ../t.tar | sort
cd ..; tar cf again.tar -C x t; tar tf again.tar | sort
"""
    )
    assert_same(run_check(place, tmp_path, script, "--chown", "ignore"), skip_bytes=(".tar",))


# As root, git refuses a repository another user owns; a Chirp server owns every file.
GIT = "git() { command git -c safe.directory='*' \"$@\"; }\n"


def test_git_init_add_commit_log(place: Place, tmp_path: Path) -> None:
    # Blobs and trees are listed before the commits, which carry their time in their names.
    script = (
        GIT
        + """
mkdir "$B"; cd "$B"; git init -q r; cd r
echo hello > f; mkdir d; echo x > d/y; git add f d
git write-tree; git ls-files -s; find .git/objects -type f | sort
git -c user.name=A -c user.email=a@b commit -q -m first
echo more >> f; git -c user.name=A -c user.email=a@b commit -q -am second
git log --format=%s; git status --porcelain; git cat-file -p HEAD:f; git fsck 2>&1
"""
    )
    # Object files are made mode 0444; a Chirp server makes every new file 0600 (a limit).
    assert_same(run_check(place, tmp_path, script), ignore=(".git/",))


def test_python_imports_from_the_mount(place: Place, tmp_path: Path) -> None:
    script = f"""
mkdir -p "$B/pkg"; cd "$B"; echo 'X = 42' > pkg/__init__.py; echo 'Y = 7' > pkg/m.py
{sys.executable} -c 'import pkg.m, pkg; print(pkg.X + pkg.m.Y)'
{sys.executable} -c 'import pkg.m; print(pkg.m.__file__.endswith("pkg/m.py"))'
"""
    assert_same(run_check(place, tmp_path, script), skip_bytes=("__pycache__",))


def test_gcc_builds_and_runs_a_program(place: Place, tmp_path: Path) -> None:
    script = """
mkdir "$B"; cd "$B"
printf '#include <stdio.h>\\nint main(void){puts("built");return 0;}\\n' > h.c
gcc -O0 -o h h.c; ./h; gcc -c h.c -o h.o; ls
"""
    assert_same(run_check(place, tmp_path, script), skip_bytes=("h.o", "h"))


def test_sqlite3_rollback_journal(
    place: Place, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    script = """
mkdir "$B"; cd "$B"
sqlite3 db "create table t(x); insert into t values (1); insert into t values (2);"
sqlite3 db "begin; insert into t values (3); commit; select sum(x) from t; pragma integrity_check;"
"""
    assert_same(run_check(place, tmp_path, script), skip_bytes=("db",))


def test_sqlite3_wal(place: Place, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    script = """
mkdir "$B"; cd "$B"
sqlite3 db "pragma journal_mode=wal; create table t(x); insert into t values (1);"
sqlite3 db "insert into t values (2); select sum(x) from t; pragma journal_mode;"
"""
    assert_same(run_check(place, tmp_path, script), skip_bytes=("db",))


def test_sqlite3_wal_index_mapped_shared(place: Place, tmp_path: Path) -> None:
    # The WAL files exist first (creating them is checked above); the -shm file is mapped
    # shared and writable, and one process uses it through a whole session.
    script = """
mkdir "$B"; cd "$B"; : > db; : > db-journal; : > db-wal; : > db-shm
sqlite3 db "pragma journal_mode=wal; create table t(x); insert into t values (1);
insert into t values (2); select sum(x) from t; pragma wal_checkpoint; select count(*) from t;"
"""
    assert_same(run_check(place, tmp_path, script), skip_bytes=("db",))


def test_sqlite3_two_writers_under_locks(place: Place, tmp_path: Path) -> None:
    # Two sqlite3 processes write at once: only the agent's locks keep the database whole.
    # The files exist first and the journal is kept: creating them is checked above.
    script = """
mkdir "$B"; cd "$B"; : > db; : > db-journal
sqlite3 db "pragma journal_mode=persist; create table t(x);" > /dev/null
w() { i=0; while [ $i -lt 20 ]; do echo "begin immediate; insert into t values ($1); commit;"
  i=$((i+1)); done | sqlite3 -cmd ".timeout 30000" -cmd "pragma journal_mode=persist" db >/dev/null; }
w 1 & w 2; wait
sqlite3 db "select count(*), sum(x) from t; pragma integrity_check;"
"""
    assert_same(run_check(place, tmp_path, script), skip_bytes=("db",))


def test_make_notices_a_touched_file(place: Place, tmp_path: Path) -> None:
    script = """
mkdir "$B"; cd "$B"
printf 'out: in\\n\\tcp in out\\n' > Makefile
echo one > in; touch -d '2020-01-01 00:00:00' in
make; make
echo two > in; touch -d '2021-01-01 00:00:00' in
make; cat out
"""
    assert_same(run_check(place, tmp_path, script))


def test_a_hash_bang_script_runs(place: Place, tmp_path: Path) -> None:
    script = """
mkdir "$B"; cd "$B"
printf '#!/bin/sh\\necho "script $1 in $(basename "$PWD")"\\n' > s; chmod 755 s
./s one; "$B/s" two
"""
    outcome = run_check(place, tmp_path, script)
    assert_same(outcome)


def test_test_x_answers_as_exec_does(place: Place, tmp_path: Path) -> None:
    """``test -x`` asks access(X_OK): a file with an x bit runs from the mount, so it must
    say yes, whatever the server's own execute right (Chirp's ACL "x", which the test
    servers do not grant); a file without one says no, and a directory is searchable."""
    script = """
mkdir "$B"; cd "$B"
printf '#!/bin/sh\\necho ran\\n' > s; chmod 755 s
printf 'data\\n' > d; chmod 644 d
mkdir sub
for name in s d sub missing; do
    if test -x "$name"; then echo "$name x"; else echo "$name not x"; fi
done
./s
"""
    outcome = run_check(place, tmp_path, script)
    assert_same(outcome)
    assert outcome.traced.stdout.splitlines()[:3] == ["s x", "d not x", "sub x"]


def test_cp_a_keeps_symlinks_modes_and_times(
    place: Place, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    script = (
        MAKE_TREE.replace("$B/t", "$L/t")
        + f"""
mkdir "$B"; status=0; cp -a "$L/t" "$B/copy" || status=$?; cd "$B"; cp -a copy again || status=$?
cd again; {LIST_TREE}; {TIMES}; exit $status
"""
    )
    # A symlink's own times cannot be set on Chirp (a declared limit): cp -a says so.
    limit = ("preserving times for", "/link'", "Operation not supported") if place.remote else ()
    assert_same(run_check(place, tmp_path, script, "--chown", "ignore"), limit=limit)


def test_cp_a_as_root_fails_on_ownership_by_default(place: Place, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing owners needs root")
    script = 'mkdir -p "$L/t" "$B"; echo a > "$L/t/a"; cp -a "$L/t" "$B/copy"'
    outcome = run_check(place, tmp_path, script)
    assert outcome.native.returncode == 0, outcome.native.stderr
    if place.remote:  # the server keeps its own owners: the truth, not a silent success
        assert outcome.traced.returncode != 0
        assert "failed to preserve ownership" in outcome.traced.stderr
        assert "Operation not permitted" in outcome.traced.stderr
        assert (outcome.traced_tree / "copy" / "a").read_text() == "a\n"
    else:
        assert outcome.traced.returncode == 0, outcome.traced.stderr


def test_chown_ignore_lets_cp_a_and_tar_finish(place: Place, tmp_path: Path) -> None:
    # No symlinks here: what this checks is the ownership option alone.
    script = f"""
mkdir -p "$L/t/sub" "$B"; echo a > "$L/t/a"; echo b > "$L/t/sub/b"; chmod 640 "$L/t/a"
touch -d '2020-01-02 03:04:05' "$L/t/a" "$L/t/sub/b"; tar cf "$L/t.tar" -C "$L" t
cp -a "$L/t" "$B/copy"; cd "$B"; mkdir x; tar xf "$L/t.tar" -C x
cd copy; {LIST_TREE}; {TIMES}; cd ../x/t; {LIST_TREE}; {TIMES}
"""
    outcome = run_check(place, tmp_path, script, "--chown", "ignore")
    assert_same(outcome)
    said = "ownership changes of remote files are dropped"
    assert outcome.traced.stderr.count(said) == (1 if place.remote else 0)


#: rsync's summary after any failed attribute: not itself a complaint about anything.
RSYNC_SUMMARY = "rsync error: some files/attrs were not transferred"


def test_rsync_a_copies_a_local_tree_to_the_mount(place: Place, tmp_path: Path) -> None:
    # rsync sets a symlink's own times only when they differ from the copy's. The link's
    # time is pinned in the past, so that rsync always asks: left at its creation time,
    # the copy made in the same second matched it and the check passed or failed by the
    # clock (a Chirp server cannot set a link's own times: a declared limit).
    script = (
        MAKE_TREE.replace("$B/t", "$L/t")
        + f"""
touch -h -d '2020-01-02 03:04:05' "$L/t/link"; mkdir "$B"; status=0
rsync -a "$L/t/" "$B/copy/" 2> "$L/rsync.err" || status=$?
grep -v '^{RSYNC_SUMMARY}' "$L/rsync.err" >&2 || true
cd "$B/copy"; {LIST_TREE}; {TIMES}; exit $status
"""
    )
    limit = ("failed to set times on", "/link", "Operation not supported") if place.remote else ()
    outcome = run_check(place, tmp_path, script, "--chown", "ignore")
    assert_same(outcome, limit=limit)
    # On Chirp the limit is met on every run (rsync's "some attributes" status), not by the clock.
    assert outcome.traced.returncode == (23 if place.remote else 0), outcome.traced.stderr


def test_find_newer_du_ln_s_and_mv(place: Place, tmp_path: Path) -> None:
    script = """
mkdir -p "$B/d"; cd "$B"
echo old > old; echo new > new; : > ref
touch -d '2020-01-01 00:00:00' old; touch -d '2020-06-01 00:00:00' ref
touch -d '2021-01-01 00:00:00' new
find . -newer ref | sort
du -b --apparent-size old new; du --inodes -s d
ln -s new l; readlink l; cat l
mv new d/renamed; mv d moved; ls moved; cat l 2>&1 || echo dangling
"""
    assert_same(run_check(place, tmp_path, script))


def test_mv_across_file_systems(place: Place, tmp_path: Path) -> None:
    script = """
mkdir "$B"; cd "$B"
echo there > f; mkdir d; echo inside > d/g
mv f "$L/f"; mv d "$L/d"; ls; cat "$L/f" "$L/d/g"
echo back > "$L/h"; mv "$L/h" h; cat h; ls "$L" | sort
"""
    outcome = run_check(place, tmp_path, script)
    assert_same(outcome)
    assert sorted(p.name for p in (tmp_path / "traced-local").iterdir()) == ["d", "f"]


def test_threads_with_pwrite(place: Place, tmp_path: Path) -> None:
    program = (
        "import os, sys, threading, zlib\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
        "def w(i):\n"
        "    for j in range(20):\n"
        "        os.pwrite(fd, bytes([65 + i]) * 100, (j * 4 + i) * 100)\n"
        "ts = [threading.Thread(target=w, args=(i,)) for i in range(4)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "data = os.pread(fd, 1 << 20, 0); print(len(data), zlib.crc32(data))\n"
    )
    script = f"""
mkdir "$B"; cd "$B"; cat > p.py <<'EOF'
{program}EOF
{sys.executable} p.py out
"""
    assert_same(run_check(place, tmp_path, script))


def test_every_limit_names_trapped_calls_and_is_documented() -> None:
    from reference_agent.limits import LIMITS
    from reference_agent.table import SYSCALL_TABLE

    document = (ROOT / "docs" / "agent-programs.md").read_text()
    assert len({limit.topic for limit in LIMITS}) == len(LIMITS)
    for limit in LIMITS:
        assert set(limit.calls) <= set(SYSCALL_TABLE), limit.topic
        line = f"- **{limit.topic}**: {limit.seen}. *Why:* {limit.why}."
        assert line in document.splitlines(), f"docs/agent-programs.md says {limit.topic} else"
    # And the other way: every limit the page lists is one of these, word for word.
    listed = [
        line for line in document.splitlines() if line.startswith("- **") and "*Why:*" in line
    ]
    assert len(listed) == len(LIMITS), listed


@pytest.mark.parametrize(
    "seeded",
    [
        'mkdir "$B"; case "$L" in *traced*) echo stray > misplaced;; esac',
        'mkdir "$B"; case "$L" in *traced*) echo 1 > "$B/f";; *) echo 2 > "$B/f";; esac',
        'mkdir "$B"; echo x > "$B/f"; case "$L" in *traced*) chmod 644 "$B/f";; esac',
        'mkdir "$B"; case "$L" in *traced*) echo one;; *) echo two;; esac',
    ],
    ids=["write-in-cwd", "bytes", "mode", "output"],
)
def test_the_comparison_catches_seeded_differences(tmp_path: Path, seeded: str) -> None:
    # The traced run (its $L is "traced-local") misbehaves on purpose; the check must see it.
    directory = tmp_path / "place"
    directory.mkdir()
    outcome = run_check(Place("local", str(directory), directory), tmp_path, seeded)
    with pytest.raises(AssertionError):
        assert_same(outcome)
