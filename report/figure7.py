"""Figure 7 for ``aviary report``: the latency table, measured by :mod:`benchmarks.latency`.

Covers: what ``aviary report`` has always called to measure Figure 7 (the
local driver and the given servers, one repeat); the measurement itself lives
in :mod:`benchmarks.latency`, which ``aviary bench latency`` runs too.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import TargetChoice
from benchmarks.latency import OPERATIONS, Measurement, measure_driver, run_latency

__all__ = ["OPERATIONS", "Measurement", "measure_driver", "run_report"]


def run_report(out: Path, iterations: int, servers: list[str], repeat: int = 1) -> int:
    """Measure Figure 7 on the local driver and ``servers``; write figure7.md/.json/.png.

    Args:
        out: output directory.
        iterations: timed calls per operation per repeat.
        servers: server keys (``chirp/cctools``...).
        repeat: measurements of every cell.

    Returns:
        0 when all were measured, 1 when a server failed, 2 for bad arguments.
    """
    return run_latency(out, iterations, repeat, TargetChoice(True, list(servers)))
