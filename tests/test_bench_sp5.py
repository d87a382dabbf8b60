"""``aviary bench sp5``: the synthetic SP5 natively, under the agent locally and on Chirp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main

TINY = ["--events", "3", "--event-bytes", "10K-20K", "--event-cpu-ms", "5", "--small-files", "10",
        "--small-size", "4K", "--big-files", "1", "--big-size", "1M", "--big-reads", "50"]  # fmt: skip


def test_bench_sp5_local_and_chirp(tmp_path: Path) -> None:
    argv = ["bench", "sp5", "--driver", "local,chirp", "--server", "chirp/aviary", *TINY,
            "--repeat", "2", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((tmp_path / "sp5.json").read_text())
    assert data["benchmark"] == "sp5" and data["repeat"] == 2 and data["params"]["events"] == 3
    assert {"cpu_model", "cores", "kernel", "python", "date", "packages"} <= set(data["machine"])
    assert data["cpu_iterations_per_event"] > 0
    rows = {row["target"]: row for row in data["rows"]}
    assert list(rows) == ["native", "aviary-local", "chirp/aviary"]
    expected_read = 10 * 4096 + 50 * 512
    for row in rows.values():
        assert row["error"] is None, row
        assert len(row["init_s"]) == 2 and all(t > 0 for t in row["init_s"])
        assert [len(run) for run in row["event_s"]] == [3, 3]
        assert row["bytes_read"] == expected_read
        assert all(30_000 <= b <= 60_000 for b in row["bytes_written"])
        for key in ("init_spread", "event_spread"):
            spread = row[key]
            assert spread["minimum"] <= spread["median"] <= spread["maximum"]
        assert row["event_spread"]["n"] == 6
    assert [rows[t]["seeds_row"] for t in rows] == [
        "same, os, files", "same, parrot, files", "same, parrot, chirp"]  # fmt: skip
    # The seeds' Figure 10 same-host rows, as ratios to native, are beside ours.
    seeds = data["seeds_ratios_to_native"]
    assert seeds["same, os, files"] == [1.0, 1.0]
    assert seeds["same, parrot, chirp"][0] == pytest.approx(777 / 446)
    table = (tmp_path / "sp5.md").read_text()
    assert "| chirp/aviary |" in table and "same, parrot, chirp | 1.74× | 1.03× |" in table


def test_bench_sp5_refuses_other_protocols(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "sp5", "--server", "ftp/vsftpd", "--out", str(tmp_path)]) == 2
    assert (
        capsys.readouterr().err == "aviary: bench sp5: runs on local, chirp only, not ftp/vsftpd\n"
    )
    assert main(["bench", "sp5", "--event-bytes", "9K-1K", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "sp5.json").exists()
