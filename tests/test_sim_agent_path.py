"""The agent's path term: the probe under the real agent, the pairs' arithmetic, the fit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.andrew import agent_prefix
from servers import RunningServer
from simulation.agent_path import (
    PROBE_CALLS,
    AgentPath,
    PathPoint,
    fit_path,
    measure_pairs,
    probe_once,
)
from simulation.calibration_record import summarise

ECHO_BASE = 200e-6  # the echo at RTT 0 on the fake testbed
AGENT_BASE = 900e-6  # a stat through the agent at RTT 0


class _Testbed:
    """A relay whose agent pays ``excess`` per round trip beyond the echo when delayed."""

    def __init__(self, excess: float, late_pair: int | None = None) -> None:
        self.delay = 0.0
        self.excess = excess
        self.late_pair = late_pair  # this pair's delayed run meets a burst of load
        self.runs = 0
        self.delays: list[float] = []

    def set_delay(self, rtt: float) -> None:
        self.delay = rtt
        self.delays.append(rtt)

    def echo(self) -> list[float]:
        return [ECHO_BASE + self.delay] * 4

    def probe(self) -> tuple[float, float]:
        self.runs += 1
        burst = 5e-3 if self.late_pair is not None and self.runs == 2 * self.late_pair else 0.0
        extra = self.excess if self.delay else 0.0
        return 2 * (AGENT_BASE + self.delay + extra + burst), 2.0  # two round trips per stat


def test_measure_pairs_finds_the_excess_per_round_trip() -> None:
    bed = _Testbed(0.7e-3)
    point = measure_pairs(0.01, bed.set_delay, bed.echo, bed.probe, pairs=3)
    assert bed.delays == [0.0, 0.01] * 3 and bed.delay == 0.01  # alternating, ends delayed
    assert point.excess.median == pytest.approx(0.7e-3)
    assert point.round_trips_per_call == 2.0
    assert point.round_trip_s == pytest.approx(AGENT_BASE + 0.01 + 0.7e-3)
    assert point.echo_s - point.base_echo_s == pytest.approx(0.01)
    # A path that pays nothing beyond the echo measures nothing (the checker is not a constant).
    flat = _Testbed(0.0)
    nothing = measure_pairs(0.01, flat.set_delay, flat.echo, flat.probe, pairs=3)
    assert nothing.excess.median == pytest.approx(0.0)


def test_a_burst_in_one_pair_is_named_and_does_not_move_the_median() -> None:
    bed = _Testbed(0.5e-3, late_pair=3)
    point = measure_pairs(0.002, bed.set_delay, bed.echo, bed.probe, pairs=5)
    assert point.excess.median == pytest.approx(0.5e-3)
    assert [i for i, _ in point.excess.outliers] == [2]  # the third pair, 0-based
    assert point.excess.high == pytest.approx(5.5e-3)


def _point(rtt: float, excess: float) -> PathPoint:
    return PathPoint(rtt, summarise([excess]), rtt + excess, rtt, 1e-3, 2e-4, 1.0)


def test_fit_path_is_a_line_through_the_medians() -> None:
    fit = fit_path([_point(0.002, 0.3e-3), _point(0.01, 0.7e-3), _point(0.01, 0.7e-3)])
    assert fit.intercept_s == pytest.approx(0.2e-3) and fit.slope == pytest.approx(0.05)
    assert fit.at(0.0) == 0.0  # RTT 0 is the reference: its path is in the client's time
    assert fit.at(0.006) == pytest.approx(0.5e-3)
    assert AgentPath.from_json(fit.to_json()) == fit
    assert fit_path([_point(0.01, 0.7e-3)]).slope == 0.0
    with pytest.raises(ValueError, match="no measured points"):
        fit_path([])


def test_probe_once_under_the_real_agent(
    aviary_chirp_server: RunningServer, tmp_path: Path
) -> None:
    """The probe's stats reach the server, one round trip each, counted from the trace."""
    os.environ.update(aviary_chirp_server.client_env)
    with aviary_chirp_server.driver() as driver:
        driver.mkdir("/probe")
    remote = agent_prefix(aviary_chirp_server) + "/probe"
    seconds, per_call = probe_once([], remote, tmp_path / "trace.jsonl")
    assert per_call == 1.0 and 0 < seconds < 1.0
    lines = (tmp_path / "trace.jsonl").read_text().splitlines()
    assert sum(f'"{remote}"' in line for line in lines) >= PROBE_CALLS
    # A local path never reaches a driver: the probe says so instead of measuring nothing.
    with pytest.raises(RuntimeError, match="not a remote path"):
        probe_once([], str(tmp_path), tmp_path / "trace.jsonl")
