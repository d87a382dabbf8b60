"""The agent way of the conformance suite catches a broken agent, each bug by name.

tests/broken_agent.py runs ``aviary run`` with one seeded bug; the suite runs
through it (``--agent-command``) on aviary's own Chirp server, and the property
named here must fail while the good agent passes it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BROKEN_AGENT = ROOT / "tests" / "broken_agent.py"


def run_through(
    tmp_path: Path,
    *options: str,
    select: str,
    files: tuple[str, ...] = ("conformance/test_syscalls.py",),
) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    results = tmp_path / "results"
    command = [
        sys.executable, "-m", "pytest", *files, "-q",
        "-p", "no:cacheprovider", "--results-dir", str(results), "--examples", "5",
        "--hypothesis-seed", "20261203", "--hypothesis-profile", "aviary-verdict",
        "--driver", "chirp", "--server", "aviary",
        "--through", "agent", "-k", select, *options,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    outcomes: dict[str, str] = {}
    for path in sorted(results.glob("*.json")) if results.exists() else []:
        document = json.loads(path.read_text())
        outcomes.update({p["property"]: p["outcome"] for p in document["properties"]})
    return done, outcomes


@pytest.mark.parametrize(
    ("bug", "caught_by"),
    [
        ("offset_past_eof", "syscall_family[offsets]"),
        ("append_ignored", "syscall_family[append]"),
        ("seek_end_ignores_offset", "syscall_family[seek_end]"),
        ("missing_is_eio", "syscall_family[errno]"),
        ("chmod_does_nothing", "syscall_family[chmod]"),
        ("listing_drops_dotfiles", "syscall_family[getdents]"),
        ("dirfd_file_walks_below", "syscall_family[bad_descriptors]"),
    ],
)
def test_broken_agent_is_caught_by_name(tmp_path: Path, bug: str, caught_by: str) -> None:
    name = caught_by.split("[")[1].rstrip("]")
    agent = f"{sys.executable} {BROKEN_AGENT} {bug} run"
    done, outcomes = run_through(tmp_path, "--agent-command", agent, select=f"family and {name}")
    assert outcomes.get(caught_by) == "failed", (outcomes, done.stdout[-2000:])
    assert done.returncode != 0


def test_good_agent_passes_the_same_families(tmp_path: Path) -> None:
    names = "offsets or append or seek_end or errno or chmod or getdents or bad_descriptors"
    done, outcomes = run_through(tmp_path, select=f"family and ({names})")
    assert done.returncode == 0, done.stdout[-3000:]
    for name in ("offsets", "append", "seek_end", "errno", "chmod", "getdents", "bad_descriptors"):
        assert outcomes[f"syscall_family[{name}]"] == "passed", outcomes


def test_cache_cto_passes_the_close_to_open_model(tmp_path: Path) -> None:
    # The random comparison against the model of --cache cto (reads close-to-open, writes
    # through), and the fixed families that read back what was written, on one agent.
    done, outcomes = run_through(
        tmp_path, "--agent-cache", "cto",
        select="oracle_comparison or (family and (own_writes or offsets or large_transfer))",
        files=("conformance/test_machine.py", "conformance/test_syscalls.py"),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    assert outcomes["syscall_family[own_writes]"] == "passed", outcomes
    assert outcomes["oracle_comparison"] == "passed", outcomes


@pytest.mark.parametrize("bug", ["cache_misses_own_writes", "filled_misses_own_writes"])
def test_cache_cto_that_misses_own_writes_is_caught(tmp_path: Path, bug: str) -> None:
    agent = f"{sys.executable} {BROKEN_AGENT} {bug} run"
    done, outcomes = run_through(
        tmp_path, "--agent-command", agent, "--agent-cache", "cto", select="family and own_writes"
    )
    assert outcomes.get("syscall_family[own_writes]") == "failed", (outcomes, done.stdout[-2000:])
    assert done.returncode != 0


@pytest.mark.parametrize("bug", [None, "read_only_create_refused"])
def test_a_read_only_protocol_is_compared_with_a_read_only_mount(
    tmp_path: Path, bug: str | None
) -> None:
    # HTTP through the agent beside Linux on a read-only mount of the same tree: the cells
    # pass with the agent as it is, and a seeded EROFS for an existing file is caught.
    options = ["--agent-command", f"{sys.executable} {BROKEN_AGENT} {bug} run"] if bug else []
    command = [
        sys.executable, "-m", "pytest", "conformance/test_errno_matrix.py", "-q",
        "-p", "no:cacheprovider", "--results-dir", str(tmp_path / "results"),
        "--driver", "http", "--server", "python", "--through", "agent",
        "-k", "open_read_create and (exists or directory or missing_file)", *options,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if bug is None:
        assert done.returncode == 0, done.stdout[-3000:]
        assert "3 passed" in done.stdout
    else:
        assert done.returncode == 1, done.stdout[-3000:]
        assert (
            "FAILED conformance/test_errno_matrix.py::test_errno_matrix[python-agent-open_read_create-exists]"
            in done.stdout
        )
        assert "system '390 open ret=EROFS', Linux '390 open ret=fd off=0'" in done.stdout


def test_broken_agent_refuses_an_unknown_bug() -> None:
    done = subprocess.run(
        [sys.executable, str(BROKEN_AGENT), "no_such_bug", "run", "--", "/bin/true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "usage" in done.stderr


def run_mount(tmp_path: Path, *options: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    results = tmp_path / "results"
    command = [
        sys.executable, "-m", "pytest", "conformance/test_syscalls.py",
        "conformance/test_errno_matrix.py", "-q", "-p", "no:cacheprovider",
        "--results-dir", str(results), "--examples", "5", "--hypothesis-seed", "20261203",
        "--hypothesis-profile", "aviary-verdict",
        "--basetemp", str(tmp_path / "base"), "--through", "mount", *options,
    ]  # fmt: skip
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600), results


def test_a_mounted_directory_is_a_way_through(tmp_path: Path) -> None:
    # A local directory stands for any mount: the program runs natively on both sides.
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    done, results = run_mount(tmp_path, "--driver", "local", "--mount", str(mounted))
    assert done.returncode == 0, done.stdout[-3000:]
    document = json.loads((results / "local-none-mount.json").read_text())
    outcomes = {p["property"]: p["outcome"] for p in document["properties"]}
    assert outcomes["syscall_family[offsets]"] == "passed"
    assert outcomes["errno_matrix[rename_from-missing_parent]"] == "passed"
    assert set(outcomes.values()) == {"passed"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--driver", "local"), "--through mount needs --mount"),
        (("--driver", "chirp", "--mount", "rclone"), "speaks ftp, sftp, dav, not chirp"),
        (("--driver", "local", "--mount", "/nonexistent/dir"), "not a directory"),
    ],
)
def test_mount_options_fail_closed(tmp_path: Path, options: tuple[str, ...], message: str) -> None:
    done, _ = run_mount(tmp_path, *options)
    assert done.returncode != 0
    assert message in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_rclone_mount_comes_and_goes(tmp_path: Path) -> None:
    done, results = run_mount(
        tmp_path, "--driver", "ftp", "--server", "pyftpdlib", "--mount", "rclone",
        "-k", "offsets or append or seek_end",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    document = json.loads((results / "ftp-pyftpdlib-rclone.json").read_text())
    outcomes = {p["property"]: p["outcome"] for p in document["properties"]}
    assert outcomes["syscall_family[offsets]"] == "passed"
    # Unmounted by path when the session ended: no mount is left below the run's temp dirs.
    with open("/proc/self/mounts") as mounts:
        assert str(tmp_path) not in mounts.read()
