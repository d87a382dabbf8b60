"""The simulation's validation: real runs at added latency beside the model's predictions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from faultnet.kernel import KernelNet
from harness.cli import main
from report import site as report_site
from simulation.validate import FIGURE7_OPERATIONS, TOLERANCE, run_validation, write_report
from simulation.workloads import STAGES


def test_validation_measures_and_predicts_every_stage_and_operation(tmp_path: Path) -> None:
    """Ten files at RTT 0 and 5 ms, through the kernel back-end, under the real agent."""
    if KernelNet.missing() is not None:
        pytest.skip(str(KernelNet.missing()))
    report = run_validation("chirp-aviary", [0.0, 0.005], files=10, repeat=1, figure7_runs=5)

    # The network really was slower: the echo through the relay saw the added 5 ms, before the
    # Figure 7 calls and while the Andrew-like run went on.
    zero, slow = report.settings
    assert slow.network_rtt_s >= 0.005 > zero.network_rtt_s
    assert slow.run_rtt_s >= 0.005 > zero.run_rtt_s
    # Calibration and measurement interleave: one before the first run and one after each,
    # and each run is predicted from the two either side of it.
    assert [c.index for c in report.calibrations] == [0, 1, 2]
    assert [s.calibrations for s in report.settings] == [(0, 1), (1, 2)]
    assert all(c.run_rtt_s < 0.005 for c in report.calibrations)
    # The agent's path was probed at 5 ms (not at 0, its reference), one stat a round trip,
    # and each stage's prediction carries it per round trip.
    assert zero.agent_path is None and slow.agent_path is not None
    assert slow.agent_path.round_trips_per_call == 1.0 and slow.agent_path.excess.count == 3
    assert report.agent_path is not None and report.agent_path.points == (slow.agent_path,)
    # The model replays the operations the agent's trace recorded from the drivers' counters
    # (ls -l's lstat of a name is only there, not in a syscall mapping: the lstat of the
    # tree ls is given; the names it lists are answered from the listing, no operation),
    # and a new connection costs the handshake and the login.
    listing = {stage.name: stage for stage in report.stages}["list"].operations
    assert listing.get("lstat", 0) >= 1 and listing.get("readdir", 0) >= 1
    assert report.model.costs["connect"].round_trips >= 2

    rows = {(r.setting, r.kind, r.name): r for r in report.rows}
    items = [("andrew", s) for s in STAGES] + [("figure7", o) for o in FIGURE7_OPERATIONS]
    assert len(rows) == len(report.rows) == 2 * len(items)
    for kind, name in items:
        before, after = rows[("0", kind, name)], rows[("5 ms", kind, name)]
        for row in (before, after):
            assert row.measured_s > 0 and row.predicted_s > 0
            assert row.measured_runs_s == [row.measured_s]
            assert row.error_pct == pytest.approx(
                (row.predicted_s - row.measured_s) / row.measured_s * 100
            )
            assert row.within == (abs(row.error_pct) <= TOLERANCE * 100)
        # Every operation waits on the server once, and every stage at each of its round
        # trips (5 ms more each, less a margin for the RTT-0 run's own waits). A stage of a
        # few round trips (list: ls -l's names come with the listing) adds less than one
        # run's noise at RTT 0, so only its count is checked.
        trips = after.terms["round_trips_trace"] if kind == "andrew" else 1.0
        assert trips >= (5 if kind == "andrew" else 1), (kind, name, trips)
        if kind == "figure7" or trips >= 20:
            added = after.measured_s - before.measured_s
            assert added >= 0.004 * trips, (kind, name, trips, before.measured_s, after.measured_s)
        assert after.predicted_s > before.predicted_s, (kind, name)
    # The model's round trips are the ones the drivers made (their counters, in the trace).
    make = rows[("5 ms", "andrew", "make")].terms
    assert make["round_trips_model"] == pytest.approx(make["round_trips_trace"], rel=0.02)

    md, table, document, png = write_report(report, tmp_path)
    with table.open() as f:
        written = list(csv.DictReader(f))
    assert len(written) == len(report.rows)
    assert {"measured_s", "predicted_s", "error_pct", "within"} <= set(written[0])
    data = json.loads(document.read_text())
    assert data["within"] == report.within and len(data["rows"]) == len(report.rows)
    assert data["machine"]["cpu_model"] and data["load_start"] >= 0
    assert "| 5 ms |" in md.read_text() and png.stat().st_size > 1000
    # aviary report shows the last validation without running it again: model beside
    # measured, with the error, for every row.
    assert report_site.run_site(tmp_path, "quick", ["validation"]) == 0
    page = (tmp_path / "index.html").read_text()
    assert "Validation: the simulation against real runs" in page and "validation.png" in page
    assert (
        "model (median)" in page
        and "load average" in page
        and "a first-principles term of the model" in page
    )
    for row in report.rows:
        assert f"<td>{row.error_pct:+.1f}%</td>" in page, row


def test_validate_command_rejects_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        (["--rtt", "5ms"], "two or more"),
        (["--rtt", "0,fast"], "round-trip time"),
        (["--rtt", "0,1s"], "too long"),
        (["--protocol", "nest"], "no longer exists"),
        (["--protocol", "ftp"], "one TCP connection"),
        (["--protocol", "gopher"], "unknown protocol"),
    ]
    for argv, message in cases:
        status = main(["simulate", "validate", "--out", str(tmp_path), *argv])
        err = capsys.readouterr().err
        assert status == 2 and message in err and "Traceback" not in err, (argv, err)
        assert err.startswith("aviary: simulate validate: ")
    assert not list(tmp_path.iterdir())
