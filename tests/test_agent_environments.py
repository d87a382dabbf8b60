"""The agent's environments: private directories, identity, portable packages.

Real programs (sh, id, whoami, hostname, ls, python3) under the real agent,
through the real ``aviary`` command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reference_agent import _ptrace
from reference_agent.identity import HOSTNAME_FEATURE, IDENTITY_FEATURE
from reference_agent.namespace import MountlistError, parse_mountlist
from reference_agent.table import trapped_numbers
from tests.helpers import ROOT, served

AVIARY = [sys.executable, "-m", "harness.cli"]
SYSTEM_PYTHON = Path("/usr/bin/python3")

# Each instance writes its pid to one fixed name, waits until both instances
# have written, then reads the name back: sharing the file, one of them reads
# the other's pid. The barrier directory is outside the private /tmp.
FIXED_NAME = """
echo $$ > "$FIXED"
touch /barrier/$$
i=0
while [ "$(ls /barrier | wc -l)" -lt 2 ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i + 1)); done
echo "$$ $(cat "$FIXED")"
"""


def aviary(
    *argv: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AVIARY, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


# -- private directories --------------------------------------------------------------------


def _two_instances(tmp_path: Path, fixed: str, *options: list[str]) -> list[tuple[str, str, str]]:
    """Run two FIXED_NAME instances side by side; (pid, pid read back, stderr) of each."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    program = ["env", f"FIXED={fixed}", "sh", "-c", FIXED_NAME]
    processes = [
        subprocess.Popen(
            [*AVIARY, "run", "-M", f"/barrier={barrier}", *extra, "--", *program],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TMPDIR": str(tmp_path / "tmpdir")},
        )
        for extra in options
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        pid, read_back = out.split()
        results.append((pid, read_back, err))
    return results


def test_private_tmp_keeps_concurrent_instances_apart(tmp_path: Path) -> None:
    (tmp_path / "tmpdir").mkdir()
    kept = tmp_path / "kept"
    fixed = "/tmp/aviary-fixed"
    first, second = _two_instances(
        tmp_path,
        fixed,
        ["--private", "/tmp"],
        ["--private", "/tmp", "--keep-private", str(kept)],
    )
    assert first[0] == first[1] and second[0] == second[1]  # each read its own pid back
    assert not Path(fixed).exists()  # the real /tmp never saw it
    # What the kept task left behind is in one place, and stderr says where.
    assert (kept / "tmp" / "aviary-fixed").read_text() == f"{second[0]}\n"
    assert f"/tmp in {kept.resolve() / 'tmp'}" in second[2]
    # The other run's private directory (under its TMPDIR) is gone, and it said nothing.
    assert list((tmp_path / "tmpdir").iterdir()) == []
    assert first[2] == ""


def test_without_private_the_instances_collide(tmp_path: Path) -> None:
    # The control: the same two programs sharing one real fixed path.
    first, second = _two_instances(tmp_path, str(tmp_path / "shared-fixed"), [], [])
    assert first[1] == second[1]  # both read the last writer's pid
    assert {first[0], second[0]} != {first[1]}


def test_private_directory_starts_empty_and_is_inherited(tmp_path: Path) -> None:
    (tmp_path / "real-file").write_text("real\n")
    script = "ls -A /scratch | wc -l; echo child > /scratch/f; sh -c 'cat /scratch/f'; ls /scratch"
    result = aviary(
        "run", "--private", "/scratch", "--keep-private", str(tmp_path / "k"), "--",
        "sh", "-c", script,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "child", "f"]
    assert (tmp_path / "k" / "scratch" / "f").read_text() == "child\n"


def test_a_start_inside_a_private_path_starts_in_its_empty_copy(tmp_path: Path) -> None:
    (tmp_path / "real-file").write_text("real\n")
    result = aviary(
        "run", "--private", "/tmp", "--", "sh", "-c", "pwd; ls -A | wc -l", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path), "0"]


def test_single_file_redirects_relative_to_the_start(tmp_path: Path) -> None:
    script = "echo result > output.txt; cat output.txt; cat ./sub/../output.txt"
    result = aviary("run", "-M", "output.txt=output.7.txt", "--", "sh", "-c", script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "result\nresult\n"
    assert (tmp_path / "output.7.txt").read_text() == "result\n"
    assert not (tmp_path / "output.txt").exists()
    # The mountlist file form, with an absolute physical name too.
    (tmp_path / "mounts").write_text(f"output.txt {tmp_path}/output.3.txt\n")
    result = aviary(
        "run", "-m", "mounts", "--", "sh", "-c", "echo three > output.txt", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "output.3.txt").read_text() == "three\n"


def test_relative_mountlist_names_need_a_base() -> None:
    [mount] = parse_mountlist("out.txt out.7.txt\n", base="/job")
    assert (mount.logical, mount.physical) == ("/job/out.txt", "/job/out.7.txt")
    [access] = parse_mountlist("data rx\n", base="/job")  # letters of rwx stay an ACCESS
    assert (access.physical, access.access.write) == ("/job/data", False)
    with pytest.raises(MountlistError, match="logical path must be absolute"):
        parse_mountlist("out.txt out.7.txt\n")


# -- identity -------------------------------------------------------------------------------

IDENTITY = ("--uid", "4242", "--gid", "4343", "--user", "alice", "--hostname", "far.example")
# One child (python) of a child (sh): the identity holds for the whole tree.
CHILD_VIEW = (
    "import os, socket, json; st = os.stat('{path}'); "
    "print(json.dumps([os.getresuid(), os.getresgid(), os.getgroups(), socket.gethostname(), "
    "st.st_uid, st.st_gid, os.uname().nodename]))"
)


def test_identity_is_what_id_whoami_hostname_and_ls_show(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.write_text("x")
    script = (
        f"id; whoami; hostname; ls -l {mine} | cut -d' ' -f3,4; echo $USER; "
        f'{sys.executable} -c "{CHILD_VIEW.format(path=mine)}"'
    )
    result = aviary("run", *IDENTITY, "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:5] == [
        "uid=4242(alice) gid=4343(alice) groups=4343(alice)",
        "alice",
        "far.example",
        "alice alice",
        "alice",
    ]
    assert json.loads(lines[5]) == [
        [4242] * 3, [4343] * 3, [4343], "far.example", 4242, 4343, "far.example"
    ]  # fmt: skip
    # The control: the same commands without the options show the real identity.
    plain = aviary("run", "--", "sh", "-c", script)
    assert plain.returncode == 0, plain.stderr
    assert "alice" not in plain.stdout and "4242" not in plain.stdout


def test_files_not_owned_by_the_real_user_keep_their_owner(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.write_text("x")
    os.chown(other, 1234, 5678)  # the tests run as root
    result = aviary(
        "run", "--uid", "4242", "--gid", "4343", "--", "stat", "-c", "%u %g", str(other)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "1234 5678\n"


def test_remote_files_show_the_fake_owner() -> None:
    with served("chirp/aviary") as server:
        base = f"/chirp/127.0.0.1:{server.port}"
        script = (
            f"echo data > {base}/f && ls -l {base}/f | cut -d' ' -f3,4 && stat -c '%u %g' {base}/f"
        )
        result = aviary("run", *IDENTITY, "--", "sh", "-c", script)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "alice alice\n4242 4343\n"
        plain = aviary("run", "--", "stat", "-c", "%u %g", f"{base}/f")
        assert plain.returncode == 0 and plain.stdout != "4242 4343\n"


def test_identity_calls_are_trapped_only_when_asked() -> None:
    getuid, uname = _ptrace.syscall_number("getuid"), _ptrace.syscall_number("uname")
    assert getuid not in trapped_numbers("off") and uname not in trapped_numbers("off")
    assert getuid in trapped_numbers("off", {IDENTITY_FEATURE})
    assert uname in trapped_numbers("off", {HOSTNAME_FEATURE})
    assert uname not in trapped_numbers("off", {IDENTITY_FEATURE})


# -- bad options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--uid", "abc"], "aviary: run: --uid abc: not a number from 0 to 4294967294"),
        (["--gid", "4294967295"], "aviary: run: --gid 4294967295: not a number"),
        (["--user", "a:b"], "aviary: run: --user 'a:b': not a valid user name"),
        (["--hostname", "x" * 70], "not a valid host name"),
        (["--keep-private", "/nowhere"], "--keep-private needs at least one --private PATH"),
        (["--private", "/"], "--private /: the root cannot be private"),
        (["--private", "/tmp", "--private", "/tmp/a"], "--private /tmp/a: overlaps --private /tmp"),
        (["--private", "/tmp", "-M", "/tmp=/var/tmp"], "/tmp is already mounted at -M:1"),
    ],
)
def test_bad_environment_options_are_one_line(
    tmp_path: Path, options: list[str], message: str
) -> None:
    marker = tmp_path / "ran"
    result = aviary("run", *options, "--", "touch", str(marker))
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not marker.exists()


def test_lists_are_never_overwritten_and_keep_private_must_be_empty(tmp_path: Path) -> None:
    existing = tmp_path / "names"
    existing.write_text("keep me\n")
    result = aviary("run", "--name-list", str(existing), "--", "true")
    assert result.returncode == 2 and "already exists" in result.stderr
    assert existing.read_text() == "keep me\n"
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").touch()
    result = aviary("run", "--private", "/tmp", "--keep-private", str(busy), "--", "true")
    assert result.returncode == 2 and "not an empty directory" in result.stderr


# -- portable packages ------------------------------------------------------------------------

PROGRAM = """#!/usr/bin/python3
import decimal, json, os, sys
os.stat("data.txt", dir_fd=os.open(".", os.O_RDONLY))  # a name relative to a descriptor
print(json.dumps({"sum": str(decimal.Decimal("1.1") + decimal.Decimal("2.2"))}))
print("packaged", getattr(json, "PACKAGED", False))
maps = {line.split()[-1] for line in open("/proc/self/maps") if line.split()[-1].startswith("/")}
print("maps", json.dumps(sorted(maps)))
for name in sys.argv[1:]:
    try:
        __import__(name)
        print("imported", name)
    except ImportError:
        print("missing", name)
"""


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    """A Python program run once under --name-list/--env-list; its directory."""
    if not SYSTEM_PYTHON.exists():
        pytest.skip("needs the system python3 at /usr/bin/python3")
    program = tmp_path / "prog.py"
    program.write_text(PROGRAM)
    program.chmod(0o755)
    (tmp_path / "data.txt").write_text("data\n")
    result = aviary(
        "run", "--name-list", "names", "--env-list", "env", "--", "./prog.py",
        cwd=tmp_path, env={"AVIARY_MARK": "recorded"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == ['{"sum": "3.3"}', "packaged False"]
    return tmp_path


def _stdlib() -> str:
    return subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_name_and_env_lists_record_what_the_program_used(recorded: Path) -> None:
    names = [line.rpartition("|") for line in (recorded / "names").read_text().splitlines()]
    pairs = {(path, syscall) for path, _, syscall in names}
    assert (str(recorded / "prog.py"), "execve") in pairs
    assert (str(recorded / "data.txt"), "newfstatat") in pairs
    stdlib = _stdlib()
    assert (f"{stdlib}/json/__init__.py", "newfstatat") in pairs  # looked at
    assert any(p.startswith(f"{stdlib}/json/__pycache__/__init__.") for p, s in pairs)  # read
    assert any(p.endswith("/libc.so.6") and s == "openat" for p, s in pairs)
    assert len(pairs) == len(names)  # each (path, syscall) once
    env = (recorded / "env").read_text().split("\0")
    assert env[-2:] == [f"PWD={recorded}", ""] and "AVIARY_MARK=recorded" in env


def test_package_runs_from_its_own_files_with_the_originals_hidden(recorded: Path) -> None:
    package = recorded / "pkg"
    made = aviary(
        "package", "create", "--name-list", "names", "--env-list", "env", "--out", "pkg",
        cwd=recorded,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    manifest = json.loads((package / "manifest.json").read_text())
    stdlib = _stdlib()
    assert manifest["files"][f"{stdlib}/json/__init__.py"]["kind"] == "file"
    assert manifest["files"]["/usr/bin/python3"]["kind"] == "symlink"  # a chain, kept
    assert manifest["files"]["/usr/bin/python3.11"]["kind"] == "file"
    assert not any(path.startswith("/proc/") for path in manifest["files"])
    # Mark the package's copy of json: only a run from the package can see the mark.
    with open(package / "root" / stdlib.lstrip("/") / "json" / "__init__.py", "a") as copy:
        copy.write("\nPACKAGED = True\n")
    result = aviary("package", "run", str(package), "--", "./prog.py", "wave", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ['{"sum": "3.3"}', "packaged True"]
    # Every mapped file came from the package: the interpreter, libc, the loader itself.
    maps = json.loads(lines[2].removeprefix("maps "))
    root = str((package / "root").resolve())
    assert any(m.endswith("/ld-linux-x86-64.so.2") for m in maps)
    assert maps and all(m.startswith(root + "/") for m in maps), maps
    # A module the recorded run never imported is not there: the host's library is hidden,
    # though the same program run here, outside the package, finds it.
    assert lines[3] == "missing wave"
    here = subprocess.run(
        ["./prog.py", "wave"], cwd=recorded, capture_output=True, text=True, timeout=60
    )
    assert here.stdout.splitlines()[1:4:2] == ["packaged False", "imported wave"]


def test_package_errors_are_one_line(tmp_path: Path) -> None:
    result = aviary("package", "run", str(tmp_path / "nope"), "--", "true")
    assert result.returncode == 2
    assert (
        result.stderr
        == f"aviary: package run: {tmp_path / 'nope'}: not a package (no readable manifest.json)\n"
    )
    result = aviary(
        "package", "create", "--name-list", str(tmp_path / "missing"),
        "--env-list", str(tmp_path / "missing-env"), "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "--name-list" in result.stderr and "No such file" in result.stderr
    (tmp_path / "names").write_text("not a name list\n")
    (tmp_path / "env").write_text("PWD=/\0")
    result = aviary(
        "package", "create", "--name-list", str(tmp_path / "names"),
        "--env-list", str(tmp_path / "env"), "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode == 2 and "expected PATH|SYSCALL" in result.stderr
