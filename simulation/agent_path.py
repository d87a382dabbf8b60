"""What a round trip costs through the agent beyond the network's echo: the path term.

Covers: the model's ``Link.path_s``, measured. A program under ``aviary run``
that waits on the server pays, per round trip, the network's RTT (what an echo
through the relay measures) and the wake-ups of every process on its path: the
traced program stops, the agent sends and sleeps, the relay holds the data for
the delay, the server answers, the relay and then the agent wake, and the
agent resumes the program. With no delay these follow each other within
microseconds on a core that is already running, and that time is in the
client's own time (calibrated at RTT 0); with a delay every one of them waits
idle first, and the echo (one process, one wake-up) sees only part of it.

Scenario: a probe program stats one remote path ``PROBE_CALLS`` times under the
agent, timing the loop itself (no start-up); the probe runs at RTT 0 and at the
delay in alternation, each run between two echoes through the relay. One pair
gives the excess per round trip::

    excess = (probe at r - probe at 0) / round trips - (echo at r - echo at 0)

with each probe's and each echo's mean (a stage pays the mean of its round
trips, late ones included) and the round trips from the agent's trace (the
drivers' counters). The pairs are summarised by their median, quartiles and
outliers (``Spread``), and a line ``excess = intercept + slope * RTT`` is fitted
through the settings' medians: the intercept is the wake-ups' cost, the slope
what grows with the wait itself.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from simulation.calibration_record import Spread, summarise
from simulation.protocols import CALIBRATION_FILE

__all__ = [
    "CALIBRATION_PAIRS",
    "CALIBRATION_RTTS",
    "PROBE_CALLS",
    "PROBE_PAIRS",
    "AgentPath",
    "PathPoint",
    "fit_path",
    "measure_pairs",
    "probe_once",
    "recorded_path",
]

PROBE_CALLS = 60  # timed stats per probe run (at 10 ms, under a second)
PROBE_WARMUP = 3  # untimed stats first: the connection and the first lookups
PROBE_PAIRS = 3  # probe runs at RTT 0 and at the delay, alternating, per setting
PROBE_TIMEOUT = 120.0  # seconds: a probe run that takes longer has hung
CALIBRATION_RTTS = (0.002, 0.01)  # seconds: the delays ``aviary simulate calibrate`` probes at
CALIBRATION_PAIRS = 8  # pairs per delay there (the validation probes its own, interleaved)

#: The probe: stats a remote path, times the loop, prints seconds and calls as JSON.
PROBE = """
import json, os, sys, time
path, warm, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(warm):
    os.stat(path)
began = time.perf_counter()
for _ in range(count):
    os.stat(path)
print(json.dumps({"seconds": time.perf_counter() - began, "calls": warm + count}))
"""


@dataclass(frozen=True)
class PathPoint:
    """The excess per round trip at one added RTT: the pairs' spread, and what went in."""

    rtt_s: float  # the delay asked
    excess: Spread  # seconds per round trip beyond the echo, over the pairs
    round_trip_s: float  # the probe's mean seconds per round trip at the delay (median of runs)
    echo_s: float  # the echo's mean at the delay (median of runs)
    base_round_trip_s: float  # the same at RTT 0
    base_echo_s: float
    round_trips_per_call: float  # from the trace: the driver's round trips per stat


@dataclass(frozen=True)
class AgentPath:
    """The path term: ``excess(RTT) = intercept_s + slope * RTT``, and the points it fits."""

    intercept_s: float
    slope: float
    points: tuple[PathPoint, ...]

    def at(self, rtt: float) -> float:
        """Seconds per round trip beyond the echo at ``rtt`` (0 at RTT 0 by construction)."""
        return max(0.0, self.intercept_s + self.slope * rtt) if rtt > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(document: dict[str, Any]) -> AgentPath:
        points = tuple(
            PathPoint(**(p | {"excess": Spread.from_json(p["excess"])})) for p in document["points"]
        )
        return AgentPath(float(document["intercept_s"]), float(document["slope"]), points)


def fit_path(points: Sequence[PathPoint]) -> AgentPath:
    """The least-squares line through the points' medians (one point: a constant).

    Raises:
        ValueError: no points.
    """
    if not points:
        raise ValueError("no measured points to fit the agent's path term to")
    xs = [p.rtt_s for p in points]
    ys = [p.excess.median for p in points]
    if len(set(xs)) < 2:
        return AgentPath(statistics.fmean(ys), 0.0, tuple(points))
    slope, intercept = statistics.linear_regression(xs, ys)
    return AgentPath(intercept, slope, tuple(points))


def probe_once(prefix: Sequence[str], path: str, trace: Path) -> tuple[float, float]:
    """One probe run under the agent: (mean seconds per stat, round trips per stat).

    Args:
        prefix: argv before the agent (``nsenter`` into the client's namespace).
        path: a remote path in the agent's namespace (``/chirp/HOST:PORT/dir``).
        trace: where the agent writes its trace (the drivers' round trips).

    Raises:
        RuntimeError: the probe failed, hung, or its output was not the probe's.
    """
    if trace.exists():
        trace.unlink()
    command = [
        *prefix, sys.executable, "-m", "harness.cli", "run", "--trace", str(trace), "--",
        sys.executable, "-c", PROBE, path, str(PROBE_WARMUP), str(PROBE_CALLS),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the agent's probe took over {PROBE_TIMEOUT:.0f} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise RuntimeError(f"the agent's probe failed: {why}")
    result = json.loads(lines[-1])
    # The round trips of the timed stats: the last PROBE_CALLS lines on the path (the first
    # line also carries the connection's handshake and login, which the loop does not pay).
    trips = [
        int(record.get("rt", 0))
        for record in map(json.loads, filter(str.strip, trace.read_text().splitlines()))
        if record.get("path") == os.path.normpath(path)
    ]
    if len(trips) < int(result["calls"]):
        raise RuntimeError(f"the agent's probe of {path} was not traced: not a remote path?")
    per_call = sum(trips[-PROBE_CALLS:]) / PROBE_CALLS
    if per_call <= 0:
        raise RuntimeError(f"the agent's probe of {path} made no round trips: not a remote path")
    return float(result["seconds"]) / PROBE_CALLS, per_call


def measure_pairs(
    rtt: float,
    set_delay: Callable[[float], None],
    echo: Callable[[], list[float]],
    probe: Callable[[], tuple[float, float]],
    pairs: int = PROBE_PAIRS,
) -> PathPoint:
    """Probe runs at RTT 0 and at ``rtt``, alternating; leaves the delay at ``rtt``.

    Args:
        rtt: the round-trip time to add (seconds).
        set_delay: sets the relay's added round-trip time.
        echo: echo samples through the relay (seconds each).
        probe: one probe run: (mean seconds per stat, round trips per stat).
        pairs: pairs of runs.
    """
    excess: list[float] = []
    runs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    per_call: list[float] = []
    for _ in range(pairs):
        seen: dict[bool, tuple[float, float]] = {}
        for delayed in (False, True):
            set_delay(rtt if delayed else 0.0)
            before = echo()
            seconds, trips = probe()
            after = echo()
            seen[delayed] = (seconds / trips, statistics.fmean(before + after))
            runs[delayed].append(seen[delayed])
            per_call.append(trips)
        (slow, slow_echo), (fast, fast_echo) = seen[True], seen[False]
        excess.append((slow - fast) - (slow_echo - fast_echo))
    return PathPoint(
        rtt,
        summarise(excess),
        statistics.median(r for r, _ in runs[True]),
        statistics.median(e for _, e in runs[True]),
        statistics.median(r for r, _ in runs[False]),
        statistics.median(e for _, e in runs[False]),
        statistics.median(per_call),
    )


def recorded_path(path: Path = CALIBRATION_FILE) -> AgentPath | None:
    """The path term in the calibration file (``_calibration.agent_path``), if it has one."""
    if not path.exists():
        return None
    entry = json.loads(path.read_text()).get("_calibration") or {}
    term = entry.get("agent_path")
    return AgentPath.from_json(term["fit"]) if isinstance(term, dict) and "fit" in term else None
