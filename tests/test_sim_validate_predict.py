"""The validation's predictor and its 15% verdict, on a testbed made of arithmetic.

The testbed's physics is the model's own (a stage is its client time plus its
round trips at the link's RTT plus the server's service), so a correct model
predicts every row; a model with one term doubled must fail the rows where
that term matters. No servers: these run in well under a second.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from simulation.agent_path import PathPoint
from simulation.calibration_record import summarise
from simulation.protocols import OpCost, ProtocolModel
from simulation.validate_predict import (
    client_seconds,
    combine,
    link_time,
    model_round_trips,
    predict,
)
from simulation.validate_render import markdown_from_document, summary, write_report
from simulation.validate_results import TOLERANCE, Calibration, Row, Setting
from simulation.workloads import STAGES, AndrewStage

SERVICE = 200e-6  # seconds per round trip at the server
CLIENT = {"copy": 0.2, "list": 0.1, "scan": 0.2, "make": 4.0, "delete": 0.1}  # programs' seconds
OPERATIONS = {"copy": 120, "list": 100, "scan": 200, "make": 1600, "delete": 75}
BASE_RTT = 150e-6  # the relay's path with no latency added
RTT = 0.0105  # what the echo measured at 10 ms asked
PATH = 0.7e-3  # seconds per round trip the agent's path pays beyond the echo, at 10 ms


def _cost(round_trips: float, service: float) -> OpCost:
    return OpCost(round_trips, 20.0, 80.0, 0.0, service)


def _model(round_trips: float = 1.0) -> ProtocolModel:
    costs = {op: _cost(round_trips, SERVICE) for op in ("stat", "open", "close", "pread", "pwrite")}
    costs["connect"] = _cost(4.0, 1e-3)
    return ProtocolModel("test", "measured here: test", costs)


STAGE_LIST = [AndrewStage(s, {"stat": OPERATIONS[s]}, 0, 0) for s in STAGES]


def _physics(rtt: float, service: float = SERVICE, path: float = 0.0) -> dict[str, float]:
    """What a run takes on the testbed: client time, and one round trip plus service per call.

    ``path``: what each round trip through the agent pays beyond ``rtt`` (0 at RTT 0).
    """
    connect = 4 * (rtt + path + 1e-3)  # the first stage opens the connection
    return {
        s: CLIENT[s] + OPERATIONS[s] * (rtt + path + service) + (connect if s == "copy" else 0.0)
        for s in STAGES
    }


def _path_point(excess: float) -> PathPoint:
    return PathPoint(0.01, summarise([excess] * 3), RTT + excess, RTT, BASE_RTT, BASE_RTT, 1.0)


def _calibration(
    index: int, model: ProtocolModel, slower: float = 1.0, service: float = SERVICE
) -> Calibration:
    run_s = {s: t * slower for s, t in _physics(BASE_RTT, service).items()}
    return Calibration(
        index, BASE_RTT, BASE_RTT, 1.0, model, STAGE_LIST, run_s,
        client_seconds(model, STAGE_LIST, run_s, BASE_RTT), dict(OPERATIONS),
    )  # fmt: skip


def _setting(
    rtt: float = RTT, repetition: int = 0, service: float = SERVICE, path: float = 0.0,
    measured_path: float | None = None,
) -> Setting:  # fmt: skip
    """A run at ``rtt`` whose agent pays ``path``; its probe measured ``measured_path``."""
    call, base = rtt + service, BASE_RTT + service
    probe = path if measured_path is None else measured_path
    return Setting(
        0.01, repetition, rtt, rtt, _physics(rtt, service, path), dict.fromkeys(STAGES, True),
        dict(OPERATIONS), {s: OPERATIONS[s] * rtt for s in STAGES}, dict(OPERATIONS),
        {"stat": call, "open/close": 2 * call, "read 1B": call, "read 8KB": call,
         "write 8KB": call},
        {"stat": base, "open/close": 2 * base, "read 1B": base, "read 8KB": base,
         "write 8KB": base},
        BASE_RTT, (0, 1), (1.0, 1.0), agent_path=_path_point(probe) if probe else None,
    )  # fmt: skip


def _rows(model: ProtocolModel, service: float = SERVICE) -> dict[tuple[str, str], Row]:
    before, after = _calibration(0, model, service=service), _calibration(1, model, service=service)
    rows = predict(before, after, _setting(service=service))
    return {(r.kind, r.name): r for r in rows}


def test_predict_matches_a_testbed_that_follows_the_model() -> None:
    rows = _rows(_model())
    assert len(rows) == len(STAGES) + 5
    for row in rows.values():
        assert row.within and abs(row.error_pct) < 1.0, row
    make = rows[("andrew", "make")]
    assert make.terms["round_trips_model"] == make.terms["round_trips_trace"] == 1600
    assert make.terms["network_model_s"] == pytest.approx(make.terms["network_measured_s"])
    assert make.terms["calibration_gap_pct"] == 0.0


def _halved_link(setting: Setting) -> Setting:
    """The echo read as one way instead of there and back: the model's link term halved."""
    return replace(
        setting,
        network_rtt_s=setting.network_rtt_s / 2,
        run_rtt_s=setting.run_rtt_s / 2,
        figure7_base_rtt_s=setting.figure7_base_rtt_s / 2,
    )


def test_the_agents_path_is_a_term_per_round_trip() -> None:
    """A testbed whose agent pays 0.7 ms per round trip beyond the echo: with the probe's
    term the stages are predicted exactly; with the term dropped (the probe reading 0)
    every stage comes out low by the path times its round trips."""
    model = _model()
    before, after = _calibration(0, model), _calibration(1, model)
    rows = {r.name: r for r in predict(before, after, _setting(path=PATH)) if r.kind == "andrew"}
    for stage, row in rows.items():
        assert abs(row.error_pct) < 0.5, (stage, row.error_pct)
        assert row.terms["path_per_round_trip_s"] == pytest.approx(PATH)
        assert row.terms["path_model_s"] == pytest.approx(PATH * OPERATIONS[stage])
    dropped = predict(before, after, _setting(path=PATH, measured_path=0.0))
    for row in (r for r in dropped if r.kind == "andrew"):
        low = PATH * OPERATIONS[row.name] + (4 * PATH if row.name == "copy" else 0.0)
        assert row.predicted_s == pytest.approx(row.measured_s - low), row.name
        assert row.error_pct < -2.0, (row.name, row.error_pct)
    # A probe that read below the echo (noise: the agent's path holds the echo's) adds nothing.
    below = predict(before, after, _setting(measured_path=-2e-3))
    assert all(r.terms.get("path_per_round_trip_s", 0.0) == 0.0 for r in below)
    assert [r.predicted_s for r in below] == [
        r.predicted_s for r in predict(before, after, _setting())
    ]


@pytest.mark.parametrize(
    ("model", "seeded"),
    [
        # The round trips doubled: every stage's network term is twice the truth at 10 ms,
        # and every Figure 7 call pays two link RTTs.
        (_model(round_trips=2.0), lambda s: s),
        # The link's RTT halved (one way taken for a round trip).
        (_model(), _halved_link),
    ],
    ids=["round trips doubled", "link RTT halved"],
)
def test_the_15_percent_verdict_catches_a_model_term_off_by_two(
    model: ProtocolModel, seeded: Callable[[Setting], Setting]
) -> None:
    """The checker catches a seeded bug: a term of the model off by a factor of 2 fails every row."""
    assert all(r.within for r in _rows(_model()).values())  # the same testbed, the right model
    setting = seeded(_setting())
    rows = predict(_calibration(0, model), _calibration(1, model), setting)
    for row in rows:
        assert not row.within, (row.kind, row.name, row.error_pct)


def test_combine_takes_medians_and_keeps_each_run() -> None:
    model = _model()
    runs = []
    for repetition, slower in enumerate((1.0, 3.0, 0.9)):  # load moves the calibrations
        before, after = _calibration(0, model, slower), _calibration(1, model, slower)
        runs.append(predict(before, after, _setting(repetition=repetition)))
    rows = combine(runs)
    assert len(rows) == len(STAGES) + 5
    make = next(r for r in rows if r.name == "make")
    assert len(make.measured_runs_s) == len(make.predicted_runs_s) == 3
    assert make.predicted_s == sorted(make.predicted_runs_s)[1]
    assert make.measured_s == sorted(make.measured_runs_s)[1]
    assert len(make.pair_errors_pct) == 3 and max(make.pair_errors_pct) > 0
    assert model_round_trips(model, STAGE_LIST[3]) == 1600
    # The calibrations three times slower alone would miss; the median of the three does not.
    assert any(abs(e) > TOLERANCE * 100 for r in rows for e in r.pair_errors_pct)
    assert all(r.within for r in rows)


def test_the_boundary_is_15_percent_of_the_measured_time() -> None:
    assert Row("10 ms", 10, 10, "figure7", "stat", 1.0, 1.15, 1.15).within
    assert not Row("10 ms", 10, 10, "figure7", "stat", 1.0, 1.151, 1.151).within
    assert not Row("10 ms", 10, 10, "figure7", "stat", 1.0, 0.849, 0.849).within


def test_the_tables_show_model_beside_measured_with_the_error(tmp_path: Path) -> None:
    from simulation.agent_path import fit_path
    from simulation.validate_render import _document
    from simulation.validate_results import ValidationReport

    model = _model()
    setting = _setting(path=PATH)
    rows = combine([predict(_calibration(0, model), _calibration(1, model), setting)])
    report = ValidationReport(
        "test", "test/server", 30, 1, BASE_RTT, model, STAGE_LIST, _physics(BASE_RTT),
        dict(CLIENT), [_calibration(0, model), _calibration(1, model)], [setting], rows,
    )  # fmt: skip
    assert setting.agent_path is not None
    report.agent_path = fit_path([setting.agent_path])
    report.calibration_problems = ["calibration.json is stale: made 2026-10-01T00:00:00Z"]
    text = summary(report)
    assert "The agent's path: 700 us + 0.000 x RTT per round trip" in text
    assert "Calibration file: calibration.json is stale" in text
    assert f"**{len(rows)} of {len(rows)}**" in text
    assert "| 10 ms | 10.50 ms | andrew | make |" in text
    page = markdown_from_document(_document(report))
    assert "model (median)" in page and "each run's error" in page and "load average" in page
    assert "round trips: trace" in page and "| 10 ms | make |" in page
    assert "| 10 ms | 1 | 700 us | 700 - 700 us |" in page  # the probe, with its spread
    assert "agent's path in the stage" in page and "| 700 us | 1.120 s |" in page
    assert "no agent's path term" in page and "Calibration file: calibration.json is stale" in page
    md, _, document, png = write_report(report, tmp_path)
    assert png.stat().st_size > 10_000 and "The calibrations (RTT 0)" in md.read_text()
    assert json.loads(document.read_text())["rows"][0]["pair_errors_pct"] == [
        pytest.approx(rows[0].error_pct)
    ]


def test_link_time_is_the_median_of_a_sum_of_round_trips() -> None:
    """Two in five round trips late: one call's median misses them, two calls' does not."""
    samples = [1.0, 1.0, 1.0, 5.0, 5.0]
    assert link_time(samples, 1) == 1.0
    assert link_time(samples, 2) == 6.0  # not 2 x the median: 64% of pairs meet a late one
    assert link_time([2.0] * 40, 3) == pytest.approx(6.0)  # drawn, not enumerated: 40^3 sums


def test_an_older_validation_json_is_named_as_such() -> None:
    from simulation.validate_render import _agent_path

    old = {"rows": [{"setting": "2 ms", "kind": "andrew", "name": "copy", "error_pct": 1.0}]}
    assert "written by an older aviary" in markdown_from_document(old)
    assert "predates the term" in "\n".join(_agent_path({"rows": []}))
    assert "not measured" in "\n".join(_agent_path({"rows": [], "agent_path": None}))
