"""``aviary report`` shows Figure 6 and the measured SP5 beside the seeds' numbers."""

from __future__ import annotations

import json
import subprocess
import sys
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
    assert '<img src="figure6-report.png"' in page and (tmp_path / "figure6-report.png").exists()
    assert '<img src="sp5-report.png"' in page
    assert "bandwidth, 100 Mb/s LAN (MB/s)" in page  # the seeds' side of Figure 6
    assert "SP5 measured" in page and "4505 ± 155 s" in page  # the seeds' Figure 10 beside ours
    assert "cp wrote 256K)" in page
    summary = json.loads((tmp_path / "report.json").read_text())["sections"]
    assert all(s["status"] == 0 and s["seconds"] > 0 for s in summary.values())
    figure6 = json.loads((tmp_path / "figure6.json").read_text())
    assert figure6["repeat"] == 2 and figure6["file_bytes"] == 2**20
    assert [r["target"] for r in figure6["rows"]] == ["native", "aviary-local", "chirp/aviary"]


def test_markdown_is_rendered_and_nan_reads_n_a() -> None:
    page = report_site.markdown_to_html(
        "# Title\n\n- one\n- two\n\nRun `aviary report`.\n\n| a | b |\n|---|---|\n| nan | 1.5 |\n"
        "| -nan | nanoseconds |\n"
    )
    assert "<li>one</li>" in page and "<code>aviary report</code>" in page
    assert "<table>" in page and "<td>n/a</td>" in page
    assert "nan<" not in page and "nanoseconds" in page  # a word that starts with nan stays
    assert "<script>" not in report_site.markdown_to_html("<script>alert(1)</script>")


def _failing(out: Path, budget: report_site.Budget) -> report_site.Section:
    raise RuntimeError("the server would not start")


def test_a_failed_section_is_a_red_box_and_the_others_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    steps = {"broken": _failing, "figure10": report_site.STEPS["figure10"]}
    monkeypatch.setattr(report_site, "STEPS", steps)
    assert report_site.run_site(tmp_path, "quick") == 1
    page = (tmp_path / "index.html").read_text()
    assert "<div class=failed>" in page and "RuntimeError: the server would not start" in page
    assert "Simulated Figure 10" in page and '<img src="figure10.png"' in page
    assert "aviary: report: broken failed: RuntimeError" in capsys.readouterr().err
    summary = json.loads((tmp_path / "report.json").read_text())["sections"]
    assert summary["broken (failed)"]["error"].startswith("RuntimeError")


def test_figure5_without_a_checkout_fails_visibly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(report_site, "REPO_ROOT", tmp_path / "not-a-checkout")
    assert report_site.run_site(tmp_path / "out", "quick", ["figure5"]) == 1
    page = (tmp_path / "out" / "index.html").read_text()
    assert "<div class=failed>" in page and "the conformance suite is not at" in page
    assert "figure5 failed" in capsys.readouterr().err


def test_report_runs_from_another_directory(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "harness.cli", "report", "--only", "simulated,figure10",
               "--out", "site"]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    page = (tmp_path / "site" / "index.html").read_text()
    assert "class=failed" not in page
    for image in ("figure8-simulated.png", "figure10.png"):
        assert f'<img src="{image}"' in page and (tmp_path / "site" / image).exists()
    assert "Break-even, from the model" in page and ">nan<" not in page


def test_unwritable_output_is_one_line_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert report_site.run_site(blocker / "out", "quick", ["figure10"]) == 2
    assert "aviary: report: cannot write to" in capsys.readouterr().err


def test_notes_explain_get_put_writes(tmp_path: Path) -> None:
    section = report_site.Section("Figure 7", "measured", "| a |\n|---|\n| 1 |\n", None, [], 0,
                                  report_site.FIGURE7_NOTES)  # fmt: skip
    report_site._index(tmp_path, [section], "quick", 1.0)
    page = (tmp_path / "index.html").read_text()
    assert "<div class=notes>" in page and "uploads the whole file at close" in page
    assert "class=failed" not in page


def test_only_redoes_its_sections_and_keeps_the_others(tmp_path: Path) -> None:
    assert report_site.run_site(tmp_path, "quick", ["figure10"]) == 0
    assert report_site.run_site(tmp_path, "quick", ["simulated"]) == 0
    page = (tmp_path / "index.html").read_text()
    assert "Simulated Figure 10" in page and "Simulated Figure 8" in page
    assert page.count("(kept from the run of ") == 1  # figure10 kept, simulated made now
    summary = json.loads((tmp_path / "report.json").read_text())["sections"]
    assert len(summary) == 2
    (tmp_path / report_site.SECTIONS_FILE).write_text("{not json")
    assert report_site.run_site(tmp_path, "quick", ["simulated"]) == 0  # unreadable: kept none
    assert "Simulated Figure 10" not in (tmp_path / "index.html").read_text()
