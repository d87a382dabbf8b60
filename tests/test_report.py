"""``aviary report`` measures real servers and writes the table, data and plot."""

from __future__ import annotations

import json
from pathlib import Path

from report.figure7 import OPERATIONS, run_report


def test_report_writes_measured_figure7(tmp_path: Path) -> None:
    status = run_report(tmp_path, iterations=3, servers=["chirp/cctools", "chirp/aviary"])
    assert status == 0
    data = json.loads((tmp_path / "figure7.json").read_text())["targets"]
    assert [r["target"] for r in data] == ["local", "chirp/cctools", "chirp/aviary"]
    for result in data:
        assert result["error"] is None
        assert [m["operation"] for m in result["measurements"]] == list(OPERATIONS)
        assert all(m["mean_us"] > 0 and m["iterations"] == 3 for m in result["measurements"])
        assert result["bandwidth_mb_s"] > 0
    chirp = {m["operation"]: m for m in data[1]["measurements"]}
    # The wire costs come from the counters: one round trip per stat, two per open+close.
    assert chirp["stat"]["round_trips"] == 1
    assert chirp["open/close"]["round_trips"] == 2
    assert chirp["read 8KB"]["bytes_received"] >= 8192
    local = {m["operation"]: m for m in data[0]["measurements"]}
    assert local["stat"]["round_trips"] == 0
    table = (tmp_path / "figure7.md").read_text()
    assert "| chirp/cctools |" in table and "| chirp/aviary |" in table
    assert (tmp_path / "figure7.png").read_bytes().startswith(b"\x89PNG")


def test_report_rejects_unknown_servers(tmp_path: Path) -> None:
    assert run_report(tmp_path, iterations=3, servers=["gopher/none"]) == 2
    assert not (tmp_path / "figure7.md").exists()
