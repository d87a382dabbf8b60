"""``aviary bench micro --remote``: every way to a server is a row, peers included.

Covers: benchmarks/remote_micro.py through the command line, on real servers
(pyftpdlib and OpenSSH's sftp-server), the agent in both cache modes and the FUSE
peers (rclone mount, sshfs) mounted over the same servers.

Scenario: two calls per operation and a 1 MiB bandwidth file, so that the run is
short; the test checks that each row was measured and has a ratio to native in
every column, and that the table and plot were written. It asserts no time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.remote_micro import COLUMNS

ROOT = Path(__file__).resolve().parent.parent


def bench(out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "harness.cli", "bench", "micro", "--out", str(out), *options]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_remote_micro_has_a_row_per_way_with_ratios(tmp_path: Path) -> None:
    done = bench(
        tmp_path, "--remote", "ftp/pyftpdlib,sftp/openssh", "--iterations", "2", "--repeat", "1",
        "--bandwidth-size", "1M",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads((tmp_path / "remote-micro.json").read_text())
    rows = {(row["server"], row["way"]): row for row in document["rows"]}
    expected = {
        ("ftp/pyftpdlib", "native"), ("ftp/pyftpdlib", "aviary --cache off"),
        ("ftp/pyftpdlib", "aviary --cache cto"), ("ftp/pyftpdlib", "rclone mount"),
        ("sftp/openssh", "native"), ("sftp/openssh", "aviary --cache off"),
        ("sftp/openssh", "aviary --cache cto"), ("sftp/openssh", "rclone mount"),
        ("sftp/openssh", "sshfs"),
    }  # fmt: skip
    assert set(rows) == expected
    for key, row in rows.items():
        assert row["status"] == "measured", (key, row["note"])
        assert set(row["ratio_to_native"]) == set(COLUMNS), key
    assert rows[("sftp/openssh", "sshfs")]["kind"] == "peer"
    # The agent rows count round trips per call from a traced run; the cto buffer answers
    # repeated 8 KB preads of one file from its first fetch.
    for way in ("aviary --cache off", "aviary --cache cto"):
        assert set(rows[("ftp/pyftpdlib", way)]["round_trips"]) == set(COLUMNS)
    assert rows[("sftp/openssh", "aviary --cache off")]["round_trips"]["read 8KB"] >= 1
    assert rows[("sftp/openssh", "aviary --cache cto")]["round_trips"]["read 8KB"] < 0.5
    table = (tmp_path / "remote-micro.md").read_text()
    assert "| sftp/openssh | sshfs |" in table
    assert (tmp_path / "remote-micro.png").stat().st_size > 0


def test_remote_micro_refuses_an_unknown_server_in_one_line(tmp_path: Path) -> None:
    done = bench(tmp_path, "--remote", "ftp/nonesuch", "--iterations", "1")
    assert done.returncode == 2
    assert "unknown server ftp/nonesuch" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "remote-micro.json").exists()
