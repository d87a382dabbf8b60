"""How a calibration is summarised and judged: robust spreads, and whether it fits this machine.

``summarise`` turns repeated measurements into a median with quartiles and
named outliers; ``calibration_status`` says when the calibration file cannot
be trusted here: undated, stale, made on another machine, or under load.
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import summarize

__all__ = [
    "MACHINE_FIELDS",
    "OUTLIER_FLOOR",
    "STALE_AFTER_DAYS",
    "Spread",
    "calibration_status",
    "summarise",
]


#: A value nearer the quartiles than this fraction of the median is never an outlier.
OUTLIER_FLOOR = 0.25


@dataclass(frozen=True)
class Spread:
    """Repeated measurements summarised robustly: median, quartiles, range, named outliers.

    An outlier is a value beyond 1.5 interquartile ranges from the nearer quartile
    (Tukey's fences) and beyond ``OUTLIER_FLOOR`` of the median from it, named by its
    position among the repeats (0-based).
    """

    median: float
    q1: float
    q3: float
    low: float
    high: float
    count: int
    outliers: tuple[tuple[int, float], ...] = ()

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @staticmethod
    def from_json(document: dict[str, Any]) -> Spread:
        outliers = tuple((int(i), float(v)) for i, v in document.get("outliers", ()))
        return Spread(**(document | {"outliers": outliers}))


def summarise(values: Sequence[float]) -> Spread:
    """The median, quartiles and outliers of ``values`` (at least one).

    Raises:
        ValueError: no values.
    """
    base = summarize(values)  # the benchmarks' median and quartiles
    q1, q3 = base.q1, base.q3
    # Beyond Tukey's fences and far from the median: with five repeats the quartiles can sit
    # microseconds apart, and a repeat 1 us off is not worth naming.
    fence = max(1.5 * (q3 - q1), OUTLIER_FLOOR * abs(base.median))
    outliers = tuple((i, v) for i, v in enumerate(values) if v < q1 - fence or v > q3 + fence)
    return Spread(base.median, q1, q3, base.minimum, base.maximum, base.n, outliers)


#: A calibration older than this is stale: servers, drivers and the machine move on.
STALE_AFTER_DAYS = 30.0
#: What makes a machine another machine (not the affinity: a pinned run sees fewer cores).
MACHINE_FIELDS = ("cpu_model", "cores", "memory_bytes", "kernel")


def calibration_status(
    path: Path, machine: dict[str, Any] | None = None, now: float | None = None
) -> list[str]:
    """What is wrong with the calibration file for this machine, today: [] if nothing.

    Args:
        path: the calibration file.
        machine: this machine (``machine_description()``; measured if not given).
        now: seconds since the epoch (now if not given).

    Returns:
        One sentence per problem: undated, stale (older than ``STALE_AFTER_DAYS``), made on
        another machine (which fields differ), or made under load (above its core count).
    """
    if not path.exists():
        return [f"{path.name} is missing: run aviary simulate calibrate"]
    entry = json.loads(path.read_text()).get("_calibration")
    if not isinstance(entry, dict) or "date" not in entry:
        return [f"{path.name} is undated (no date or machine): its numbers cannot be placed"]
    if machine is None:
        from benchmarks.common import machine_description

        machine = machine_description()
    problems: list[str] = []
    made = calendar.timegm(time.strptime(entry["date"], "%Y-%m-%dT%H:%M:%SZ"))
    age = ((time.time() if now is None else now) - made) / 86400
    if age > STALE_AFTER_DAYS:
        problems.append(f"{path.name} is stale: made {entry['date']}, {age:.0f} days ago")
    theirs = entry.get("machine", {})
    differ = [f for f in MACHINE_FIELDS if theirs.get(f) != machine.get(f)]
    if differ:
        said = "; ".join(f"{f} {theirs.get(f)!r} here {machine.get(f)!r}" for f in differ)
        problems.append(f"{path.name} was made on another machine ({said})")
    # The load average counts every core; a calibration pinned to cores of its own (fewer
    # usable than present) is not slowed by load on the others.
    load = max(
        [*entry.get("load_average_start", [])[:1], *entry.get("load_average_end", [])[:1], 0.0]
    )
    cores = theirs.get("cores") or 1
    pinned = (theirs.get("usable_cores") or cores) < cores
    if load > cores and not pinned:
        problems.append(f"{path.name} was made under load ({load:.1f} on {cores} cores)")
    return problems
