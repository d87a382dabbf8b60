"""cctools' Parrot in the benchmarks: where it is found, and its rows beside the agent's.

Covers: ``find_parrot`` (``$AVIARY_PARROT``, the prefix ``setup/parrot/build.sh``
installs to, the PATH), the ratios of the agent's rows to Parrot's in
``bench micro --remote`` and ``bench andrew``, and a Parrot that is not there
being a row that says so rather than a failure.

Scenario: the look-up runs against small executable scripts in temporary
directories; the ratio helpers against rows with known values; the real runs
(two calls per operation, a 12-file tree) under the ``parrot_run`` that
``setup/parrot/build.sh`` installed, on aviary's Chirp server. Parrot is not
built by ``./setup.sh`` (minutes of compiling), so those runs skip when it is
absent and say how to build it. No time is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import andrew
from benchmarks.andrew import STAGES, StageResult, TargetRun, against_parrot, run_andrew
from benchmarks.common import PARROT_HINT, find_parrot
from benchmarks.remote_micro import COLUMNS, PARROT_WAY, RemoteRow, _finish

ROOT = Path(__file__).resolve().parent.parent


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Parrot anywhere: an empty prefix and a PATH without parrot_run."""
    monkeypatch.delenv("AVIARY_PARROT", raising=False)
    monkeypatch.setenv("AVIARY_PARROT_PREFIX", str(tmp_path / "empty-prefix"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))


def test_find_parrot_prefers_the_variable_then_the_prefix_then_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _isolated(monkeypatch, tmp_path)
    assert find_parrot() == (None, PARROT_HINT)
    on_path = _executable(tmp_path / "bin" / "parrot_run")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert find_parrot() == (str(on_path), "")
    built = _executable(tmp_path / "prefix" / "bin" / "parrot_run")
    monkeypatch.setenv("AVIARY_PARROT_PREFIX", str(tmp_path / "prefix"))
    assert find_parrot() == (str(built), "")
    chosen = _executable(tmp_path / "elsewhere" / "my_parrot")
    monkeypatch.setenv("AVIARY_PARROT", str(chosen))
    assert find_parrot() == (str(chosen), "")


def test_find_parrot_refuses_a_variable_that_names_no_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _isolated(monkeypatch, tmp_path)
    _executable(tmp_path / "prefix" / "bin" / "parrot_run")
    monkeypatch.setenv("AVIARY_PARROT_PREFIX", str(tmp_path / "prefix"))
    plain = tmp_path / "not-executable"
    plain.write_text("")
    for wrong in (plain, tmp_path / "missing", tmp_path):
        monkeypatch.setenv("AVIARY_PARROT", str(wrong))
        # Said, not replaced by the prefix's: the user asked for this one.
        assert find_parrot() == (None, f"AVIARY_PARROT={wrong} is not an executable file")


def _row(way: str, kind: str, values: dict[str, float], server: str = "chirp/x") -> RemoteRow:
    row = RemoteRow(server, way, kind)
    row.runs = [values]
    return row


def test_remote_rows_are_compared_with_the_peers_on_their_own_server() -> None:
    native = _row("native", "native", dict.fromkeys(COLUMNS, 1.0))
    agent = _row("aviary --cache off", "agent", {**dict.fromkeys(COLUMNS, 10.0), "bandwidth": 300})
    parrot = _row(PARROT_WAY, "peer", {**dict.fromkeys(COLUMNS, 40.0), "bandwidth": 100})
    other = _row(PARROT_WAY, "peer", dict.fromkeys(COLUMNS, 1.0), server="chirp/y")
    _finish(
        [
            native,
            agent,
            parrot,
            _row("native", "native", dict.fromkeys(COLUMNS, 1.0), "chirp/y"),
            other,
        ]
    )
    assert set(agent.vs) == {PARROT_WAY}  # not chirp/y's Parrot
    assert agent.vs[PARROT_WAY]["read 1B"] == pytest.approx(0.25)  # a quarter of Parrot's time
    assert agent.vs[PARROT_WAY]["bandwidth"] == pytest.approx(3.0)  # three times its MB/s
    assert parrot.vs == {}  # peers are not compared with each other


def test_andrew_totals_are_compared_with_parrot_on_the_same_server() -> None:
    def run(target: str, seconds: float, cache: str | None = "off") -> TargetRun:
        return TargetRun(target, stages=[StageResult("copy", seconds)], cache=cache)

    runs = [
        run("native", 1.0, None),
        run("chirp/aviary", 3.0),
        run("chirp/aviary", 2.0, "cto"),
        run("mount:chirp/aviary", 4.0),
        run("chirp/cctools", 5.0),  # no Parrot row on this server: not compared
        run("parrot:chirp/aviary", 8.0, None),
    ]
    assert against_parrot(runs) == [
        ("chirp/aviary", "parrot:chirp/aviary", 0.375),
        ("chirp/aviary, cache cto", "parrot:chirp/aviary", 0.25),
        ("mount:chirp/aviary", "parrot:chirp/aviary", 0.5),
    ]


def test_andrew_ratios_are_taken_round_by_round() -> None:
    """Each round's ratio, then their median: a round where the machine was slow for both
    rows does not weigh (the ratio of the median totals would say 1.0x here)."""

    def run(target: str, rounds: list[float], cache: str | None = None) -> TargetRun:
        stage = StageResult("make", sorted(rounds)[1], runs=rounds)
        return TargetRun(target, stages=[stage], cache=cache)

    runs = [
        run("native", [1.0, 1.0, 1.0]),
        run("chirp/aviary", [1.0, 5.0, 3.0], "off"),
        run("parrot:chirp/aviary", [2.0, 10.0, 3.0]),
    ]
    assert against_parrot(runs) == [("chirp/aviary", "parrot:chirp/aviary", 0.5)]


def test_andrew_runs_its_rows_in_rounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every row once, then every row again (seeded: a loop that ran each row's repeats in
    a row would record native, native, chirp/aviary, ...)."""
    order: list[str] = []

    def recorded(name: str, *args: object, cache: str = "off", **kwargs: object) -> TargetRun:
        order.append(f"{name}/{cache}")
        stages = [StageResult(stage, 0.1, runs=[0.1]) for stage in STAGES]
        return TargetRun(name, stages=stages, outputs={stage: "" for stage in STAGES})

    monkeypatch.setattr(andrew, "_run_target", recorded)
    monkeypatch.setattr(andrew, "_run_remote", lambda t, *a: recorded(t, cache=a[3]))
    andrew.run_andrew(tmp_path, 6, ["native", "chirp/aviary"], repeat=2, caches=("off", "cto"))
    rounds = ["native/off", "chirp/aviary/off", "chirp/aviary/cto"]
    assert order == rounds + rounds


def test_andrew_without_parrot_is_a_row_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AVIARY_PARROT", str(tmp_path / "nowhere"))
    assert run_andrew(tmp_path / "out", 6, ["native", "parrot:chirp/aviary"]) == 0
    rows = json.loads((tmp_path / "out" / "andrew.json").read_text())["runs"]
    assert rows[1]["target"] == "parrot:chirp/aviary"
    assert (
        rows[1]["error"]
        == f"not installed: AVIARY_PARROT={tmp_path / 'nowhere'} is not an executable file"
    )
    assert run_andrew(tmp_path / "out", 6, ["native", "parrot:ftp/pyftpdlib"]) == 2  # not Chirp


needs_parrot = pytest.mark.skipif(
    find_parrot()[0] is None, reason=f"parrot_run not built: {PARROT_HINT}"
)


@needs_parrot
def test_andrew_under_parrot_prints_what_native_prints(tmp_path: Path) -> None:
    targets = ["native", "chirp/aviary", "parrot:chirp/aviary"]
    assert run_andrew(tmp_path, 12, targets) == 0
    data = json.loads((tmp_path / "andrew.json").read_text())
    parrot = data["runs"][2]
    assert parrot["target"] == "parrot:chirp/aviary" and parrot["error"] is None
    assert all(stage["same_as_native"] for stage in parrot["stages"])
    [compared] = data["against_parrot"]
    assert compared["row"] == "chirp/aviary" and compared["total_ratio"] > 0
    assert "| chirp/aviary | parrot:chirp/aviary |" in (tmp_path / "andrew.md").read_text()


@needs_parrot
def test_remote_micro_runs_parrot_on_chirp(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "harness.cli", "bench", "micro", "--out", str(tmp_path),
        "--remote", "chirp/aviary", "--cache", "off", "--iterations", "2", "--repeat", "1",
        "--bandwidth-size", "1M",
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=dict(os.environ)
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {
        row["way"]: row for row in json.loads((tmp_path / "remote-micro.json").read_text())["rows"]
    }
    assert rows[PARROT_WAY]["status"] == "measured", rows[PARROT_WAY]["note"]
    assert rows[PARROT_WAY]["kind"] == "peer"
    assert set(rows["aviary --cache off"]["vs"][PARROT_WAY]) == set(COLUMNS)
    assert (
        f"| chirp/aviary | aviary --cache off | {PARROT_WAY} |"
        in (tmp_path / "remote-micro.md").read_text()
    )
