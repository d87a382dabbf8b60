"""The calibration's robust summary, and the checks that say when it cannot be trusted here."""

from __future__ import annotations

import calendar
import json
import time
from pathlib import Path
from typing import Any

import pytest

from simulation.calibration_record import STALE_AFTER_DAYS, calibration_status, summarise

HERE = {
    "cpu_model": "AMD EPYC",
    "cores": 2,
    "usable_cores": 2,
    "memory_bytes": 8 << 30,
    "kernel": "6.18.44",
}
MADE = "2026-12-03T10:30:00Z"
NOW = calendar.timegm(time.strptime(MADE, "%Y-%m-%dT%H:%M:%SZ")) + 3600.0


def test_summarise_gives_median_quartiles_and_names_outliers() -> None:
    usual = [169e-6, 171e-6, 170e-6, 2489e-6, 168e-6]  # one repeat caught a transient
    spread = summarise(usual)
    assert spread.median == 170e-6 and spread.count == 5
    assert (spread.q1, spread.q3) == (169e-6, 171e-6) and spread.iqr == pytest.approx(2e-6)
    assert spread.outliers == ((3, 2489e-6),) and spread.high == 2489e-6
    assert summarise([1.0, 1.1, 0.9, 1.05, 0.95]).outliers == ()  # nothing far: nothing named
    # Quartiles a hair apart: a repeat 1 us off is beyond the fences but not worth naming.
    assert summarise([6e-6, 6e-6, 6e-6, 7e-6, 6e-6]).outliers == ()
    assert summarise([6e-6, 6e-6, 6e-6, 9e-6, 6e-6]).outliers == ((3, 9e-6),)
    assert summarise([3.0]).median == 3.0
    with pytest.raises(ValueError):
        summarise([])


def _file(tmp_path: Path, **entry: Any) -> Path:
    path = tmp_path / "calibration.json"
    calibration = {"date": MADE, "machine": HERE, "load_average_start": [0.5, 0.4, 0.3],
                   "load_average_end": [0.6, 0.5, 0.3]} | entry  # fmt: skip
    path.write_text(json.dumps({"_calibration": calibration, "chirp": {}}))
    return path


def test_calibration_status_is_quiet_for_a_fresh_one_made_here(tmp_path: Path) -> None:
    assert calibration_status(_file(tmp_path), HERE, NOW) == []


def test_calibration_status_names_what_is_wrong(tmp_path: Path) -> None:
    later = NOW + (STALE_AFTER_DAYS + 1) * 86400
    (stale,) = calibration_status(_file(tmp_path), HERE, later)
    assert "stale" in stale and MADE in stale
    other = HERE | {"cpu_model": "Intel Xeon", "kernel": "5.10"}
    (foreign,) = calibration_status(_file(tmp_path), other, NOW)
    assert "another machine" in foreign and "Intel Xeon" in foreign and "kernel" in foreign
    loaded = _file(tmp_path, load_average_start=[6.2, 5.0, 4.0])
    assert calibration_status(loaded, HERE, NOW) == [
        "calibration.json was made under load (6.2 on 2 cores)"
    ]
    # Pinned to a core of its own, the machine's load average does not say it was slowed.
    pinned = _file(tmp_path, load_average_start=[6.2, 5.0, 4.0], machine=HERE | {"usable_cores": 1})
    assert calibration_status(pinned, HERE, NOW) == []
    # A pinned run does not make this machine another machine either.
    assert calibration_status(_file(tmp_path), HERE | {"usable_cores": 1}, NOW) == []


def test_an_undated_or_missing_calibration_is_said(tmp_path: Path) -> None:
    undated = tmp_path / "old.json"
    undated.write_text(json.dumps({"chirp": {}}))
    (problem,) = calibration_status(undated, HERE, NOW)
    assert "undated" in problem
    (missing,) = calibration_status(tmp_path / "none.json", HERE, NOW)
    assert "missing" in missing
