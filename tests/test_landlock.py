"""The kernel layers of the sandbox alone: Landlock rulesets and the mount rules, in a child."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reference_agent import landlock
from reference_agent.landlock import ACCESS_FS, READ_RIGHTS, handled_rights, plan
from reference_agent.mount_rules import mount_plan
from tests.helpers import ROOT

ABI = landlock.abi_version()


def test_handled_rights_grow_with_the_abi() -> None:
    assert handled_rights(1) == (1 << 13) - 1
    assert handled_rights(2) == handled_rights(1) | ACCESS_FS["REFER"][0]
    assert handled_rights(3) == handled_rights(2) | ACCESS_FS["TRUNCATE"][0]
    assert handled_rights(4) == handled_rights(3)  # network rights: not the sandbox's
    assert handled_rights(5) == handled_rights(3) | ACCESS_FS["IOCTL_DEV"][0]
    assert handled_rights(7) == handled_rights(5)


def test_plan(tmp_path: Path) -> None:
    (tmp_path / "rw").mkdir()
    (tmp_path / "ro").mkdir()
    (tmp_path / "file").write_text("x")
    allowed = [str(tmp_path / n) for n in ("rw", "ro", "file", "missing")]
    grants = plan(allowed, [str(tmp_path / "ro")], ["/dev/null"], 3)
    assert grants is not None
    by_path = {g.path: g.access for g in grants}
    assert by_path[str(tmp_path / "rw")] == handled_rights(3)
    assert by_path[str(tmp_path / "ro")] == READ_RIGHTS & handled_rights(3)
    file_rights = ACCESS_FS["EXECUTE"][0] | ACCESS_FS["WRITE_FILE"][0] | ACCESS_FS["READ_FILE"][0]
    assert by_path[str(tmp_path / "file")] == file_rights | ACCESS_FS["TRUNCATE"][0]
    assert str(tmp_path / "missing") not in by_path  # no rule on what is not there
    assert "/dev/null" in by_path
    assert plan(None, [], [], 3) is None  # without --allow-only Landlock expresses nothing


# A child applies the rules, then tries to read and write; prints one word per attempt.
CHILD = textwrap.dedent(
    """
    import os, sys
    from reference_agent import landlock, mount_rules
    kind, base = sys.argv[1], sys.argv[2]
    def attempt(path, flags):
        try:
            os.close(os.open(path, flags, 0o644))
            return "ok"
        except OSError as exc:
            return os.strerror(exc.errno)
    if kind == "landlock":
        grants = [landlock.Grant(base + "/allowed", landlock.handled_rights(landlock.abi_version()))]
        ruleset = landlock.Ruleset(grants, landlock.abi_version())
        ruleset.restrict_self()
    elif kind == "mounts":
        mount_rules.mount_plan([base + "/denied"], [base + "/allowed"]).apply()
    for path, flags in (
        (base + "/allowed/f", os.O_RDONLY),
        (base + "/allowed/new", os.O_WRONLY | os.O_CREAT),
        (base + "/denied/f", os.O_RDONLY),
    ):
        print(attempt(path, flags))
    """
)


def run_child(kind: str, base: Path) -> list[str]:
    for name in ("allowed", "denied"):
        (base / name).mkdir(exist_ok=True)
        (base / name / "f").write_text(name)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(base)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_a_ruleset_confines_the_child(tmp_path: Path) -> None:
    assert ABI >= 1, "these machines have Landlock (DESIGN.md)"
    assert run_child("none", tmp_path) == ["ok", "ok", "ok"]  # the attempts are real
    assert run_child("landlock", tmp_path) == ["ok", "ok", "Permission denied"]


@pytest.mark.skipif(mount_plan(["/"], []) is None, reason="the mount rules need root")
def test_mount_rules_confine_the_child_and_nothing_else(tmp_path: Path) -> None:
    assert run_child("mounts", tmp_path) == [
        "ok",
        "Read-only file system",
        "No such file or directory",
    ]
    assert "aviary-denied" not in Path("/proc/self/mountinfo").read_text()
    assert (tmp_path / "denied" / "f").read_text() == "denied"  # the machine's view unchanged
