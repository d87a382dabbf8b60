"""``aviary bench latency``: Figure 7 per driver and server, repeated, with the machine's description."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.latency import OPERATIONS
from harness.cli import main


def test_bench_latency_local_and_chirp(tmp_path: Path) -> None:
    argv = ["bench", "latency", "--driver", "local,chirp", "--server", "chirp/aviary",
            "--iterations", "3", "--repeat", "2", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((tmp_path / "figure7.json").read_text())
    assert data["benchmark"] == "latency" and data["repeat"] == 2 and data["iterations"] == 3
    assert {"cpu_model", "cores", "kernel", "python", "date", "packages"} <= set(data["machine"])
    targets = {t["target"]: t for t in data["targets"]}
    assert list(targets) == ["local", "chirp/aviary"]
    for target in targets.values():
        assert target["error"] is None
        assert [m["operation"] for m in target["measurements"]] == list(OPERATIONS)
        for m in target["measurements"]:
            assert len(m["repeat_medians_us"]) == 2, m
            assert 0 < m["min_us"] <= m["q1_us"] <= m["median_us"] <= m["q3_us"] <= m["max_us"]
        assert len(target["bandwidth_runs_mb_s"]) == 2 and target["bandwidth_mb_s"] > 0
    chirp = {m["operation"]: m for m in targets["chirp/aviary"]["measurements"]}
    assert chirp["stat"]["round_trips"] == 1  # the counters saw the wire: a real server
    table = (tmp_path / "figure7.md").read_text()
    assert "| chirp/aviary |" in table and "2 repeat(s)" in table
    assert (tmp_path / "figure7.png").read_bytes().startswith(b"\x89PNG")


def test_bench_latency_bad_names_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "latency", "--driver", "gopher", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("aviary: bench latency: unknown driver(s) gopher") and err.count("\n") == 1
    )
    assert main(["bench", "latency", "--server", "chirp/none", "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "figure7.json").exists()
