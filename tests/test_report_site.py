"""``aviary report`` shows Figure 6 and the measured SP5 beside the seeds' numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.sp5 import Sp5Params
from report import site as report_site


def test_report_has_throughput_and_sp5_sections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = report_site.Budget(
        latency_iterations=3, micro_iterations=20, micro_repeat=1, andrew_files=10,
        conformance_examples=1, sim_events=2, repeat=2, throughput_size=2**20,
        throughput_blocks=(4096, 262144),
        sp5=Sp5Params(events=2, event_cpu_ms=2, small_files=5, small_size=4096, big_files=1,
                      big_size=2**20, big_reads=20),
    )  # fmt: skip
    monkeypatch.setitem(report_site.BUDGETS, "quick", tiny)
    monkeypatch.setattr(report_site, "loadable_servers", lambda: ["chirp/aviary"])
    assert report_site.run_site(tmp_path, "quick", ["figure6", "sp5"]) == 0
    page = (tmp_path / "index.html").read_text()
    assert "Figure 6: throughput of a file copy per block size" in page
    assert '<img src="figure6.png"' in page and (tmp_path / "figure6.png").exists()
    assert "bandwidth, 100 Mb/s LAN (MB/s)" in page  # the seeds' side of Figure 6
    assert "SP5 measured" in page and "4505 ± 155 s" in page  # the seeds' Figure 10 beside ours
    assert "cp wrote 256K)" in page
    summary = json.loads((tmp_path / "report.json").read_text())["sections"]
    assert all(s["status"] == 0 and s["seconds"] > 0 for s in summary.values())
    figure6 = json.loads((tmp_path / "figure6.json").read_text())
    assert figure6["repeat"] == 2 and figure6["file_bytes"] == 2**20
    assert [r["target"] for r in figure6["rows"]] == ["native", "aviary-local", "chirp/aviary"]
