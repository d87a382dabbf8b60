"""``aviary bench micro`` measures Figure 3 natively and under every agent, in one run."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from benchmarks import micro as bench_micro
from benchmarks.micro import COLUMNS, PEERS, bandwidth_file_size, run_micro
from harness.cli import main


def test_run_micro(tmp_path: Path) -> None:
    status = run_micro(tmp_path, iterations=200, repeat=1)
    assert status == 0
    data = json.loads((tmp_path / "figure3.json").read_text())
    assert data["columns"] == list(COLUMNS)
    assert {"cpu_model", "cores", "kernel", "python", "date", "packages"} <= set(data["machine"])
    rows = {row["agent"]: row for row in data["rows"]}
    assert list(rows)[:3] == ["native", "aviary", "aviary --no-pin"]
    assert {"strace -f", "strace -f, pinned", "proot", "parrot_run -Q"} <= set(rows)
    native = rows["native"]["values"]
    for name, row in rows.items():
        if row["status"] == "not installed":
            assert row["note"].startswith("not installed: "), name
            assert not row["values"], name
            continue
        assert row["status"] == "measured", (name, row["note"])
        assert len(row["runs"]) == 1
        assert set(row["values"]) == set(COLUMNS)
        for column in COLUMNS:  # one run: the spread is that run
            spread = row["spread"][column]
            assert spread["min"] == spread["max"] == row["values"][column], (name, column)
        assert all(v > 0 for v in row["values"].values()), name
        for column in COLUMNS:
            expected = row["values"][column] / native[column]
            assert math.isclose(row["ratio_to_native"][column], expected), (name, column)
    aviary = rows["aviary"]
    # The agent really ran: a trapped stat costs a ptrace stop, an untrapped getpid does not.
    assert aviary["values"]["stat"] > native["stat"]
    assert aviary["values"]["open/close"] > native["open/close"]
    for peer in PEERS:
        if rows[peer]["status"] == "measured":
            for column in COLUMNS:
                expected = aviary["values"][column] / rows[peer]["values"][column]
                assert math.isclose(aviary["vs"][peer][column], expected), (peer, column)
    assert [t["column"] for t in data["targets"]] == ["getpid", "bandwidth", "stat", "open/close"]
    table = (tmp_path / "figure3.md").read_text()
    assert "| native |" in table and "| aviary |" in table and "| parrot_run -Q |" in table
    assert "getpid within 1.5x of native: " in table
    assert (tmp_path / "figure3.png").read_bytes().startswith(b"\x89PNG")


def test_run_micro_missing_peer_is_a_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which

    def which(name: str) -> str | None:
        return None if name == "proot" else real_which(name)

    monkeypatch.setattr("benchmarks.micro.shutil.which", which)
    assert run_micro(tmp_path, iterations=20, repeat=1) == 0
    rows = {
        row["agent"]: row for row in json.loads((tmp_path / "figure3.json").read_text())["rows"]
    }
    assert rows["proot"]["status"] == "not installed"
    assert rows["proot"]["note"] == "not installed: apt-get install proot"
    assert "proot" not in rows["aviary"]["vs"]
    assert "not installed: apt-get install proot" in (tmp_path / "figure3.md").read_text()


def test_run_micro_repeats_give_a_spread(tmp_path: Path) -> None:
    assert (
        main(["bench", "micro", "--iterations", "20", "--repeat", "3", "--out", str(tmp_path)]) == 0
    )
    rows = {r["agent"]: r for r in json.loads((tmp_path / "figure3.json").read_text())["rows"]}
    for name in ("native", "aviary"):
        row = rows[name]
        assert len(row["runs"]) == 3
        for column in COLUMNS:
            runs = [run[column] for run in row["runs"]]
            assert row["spread"][column]["min"] == min(runs)
            assert row["spread"][column]["max"] == max(runs)
            assert row["values"][column] == sorted(runs)[1]
    assert "median [min–max] of 3 run(s)" in (tmp_path / "figure3.md").read_text()


def test_run_micro_rejects_bad_arguments(tmp_path: Path) -> None:
    assert run_micro(tmp_path, iterations=0, repeat=1) == 2
    assert not (tmp_path / "figure3.md").exists()


def test_bandwidth_file_size() -> None:
    assert bandwidth_file_size(20_000) == bench_micro.BANDWIDTH_FILE
    assert bandwidth_file_size(10**9) == bench_micro.BANDWIDTH_FILE
    assert bandwidth_file_size(200) == bench_micro.MIN_BANDWIDTH_FILE
    assert bandwidth_file_size(12_345) % bench_micro.BANDWIDTH_BLOCK == 0


def test_run_micro_failing_run_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_agents = bench_micro._agents

    def agents(cpu: int) -> list[bench_micro.Agent]:
        broken = bench_micro.Agent("broken", "fails", ("sh", "-c", "echo boom >&2; exit 3", "sh"))
        return [*real_agents(cpu)[:1], broken]

    monkeypatch.setattr(bench_micro, "_agents", agents)
    assert run_micro(tmp_path, iterations=20, repeat=2) == 1
    assert "aviary: bench micro: broken: exit status 3: boom" in capsys.readouterr().err
    rows = json.loads((tmp_path / "figure3.json").read_text())["rows"]
    assert rows[1]["status"] == "failed" and rows[1]["note"] == "failed: exit status 3: boom"
