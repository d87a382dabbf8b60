"""``aviary conformance trust``: the same default runs repeated, each failure named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def trust(tmp_path: Path, *arguments: str) -> tuple[subprocess.CompletedProcess[str], list[Any]]:
    log = tmp_path / "trust.jsonl"
    command = [sys.executable, "-m", "harness.cli", "conformance", "trust", "--log", str(log),
               *arguments]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    runs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return done, runs


def test_repeated_runs_that_pass_are_counted(tmp_path: Path) -> None:
    done, runs = trust(
        tmp_path, "--driver", "local", "--rounds", "2", "--", "-k", "random_access and direct"
    )
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert [(run["round"], run["status"], run["failed"]) for run in runs] == [
        (1, 0, {}),
        (2, 0, {}),
    ]
    assert "local: 2 runs, 0 failed" in done.stdout
    assert "[2/2] round 2 local: ok" in done.stderr


def test_a_failing_run_is_named_with_its_property_and_evidence(tmp_path: Path) -> None:
    # A seeded bug (stat reports size 0) stands in for a flaky property: every run fails.
    done, runs = trust(
        tmp_path, "--driver", "tests.broken_drivers:StatSizeZero --through direct",
        "--rounds", "1", "--", "-k", "random_access",
    )  # fmt: skip
    assert done.returncode == 1
    assert len(runs) == 1 and runs[0]["status"] != 0
    assert list(runs[0]["failed"]) == ["stat-size-zero/none/direct random_access"]
    assert "1 runs, 1 failed" in done.stdout and "random_access" in done.stdout


def test_bad_bounds_are_one_line(tmp_path: Path) -> None:
    done, runs = trust(tmp_path, "--driver", "local", "--rounds", "0")
    assert done.returncode == 2 and runs == []
    assert done.stderr.strip().count("\n") == 0 and "must be positive" in done.stderr
