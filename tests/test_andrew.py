"""The Andrew-like benchmark gives the native output under the agent, on every Chirp server."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.andrew import STAGES, generate_tree, run_andrew
from harness.cli import main


def test_generated_tree_is_a_buildable_project(tmp_path: Path) -> None:
    generate_tree(tmp_path / "t", 30)
    names = sorted(p.name for p in (tmp_path / "t").iterdir())
    assert len(names) == 30 and "Makefile" in names and "main.c" in names


def test_same_output_as_native_everywhere(tmp_path: Path) -> None:
    targets = ["native", "aviary-local", "chirp/cctools", "chirp/aviary", "mount:chirp/aviary"]
    traces = tmp_path / "traces"
    status = run_andrew(tmp_path, 40, targets, traces)
    runs = json.loads((tmp_path / "andrew.json").read_text())["runs"]
    assert [r["target"] for r in runs] == targets
    for run in runs:
        assert run["error"] is None, run
        assert [s["stage"] for s in run["stages"]] == list(STAGES)
        assert all(s["seconds"] > 0 for s in run["stages"])
        if run["target"] != "native":
            assert all(s["same_as_native"] for s in run["stages"]), run
    assert status == 0
    # The agent's traces are what the simulation replays: every traced run left one.
    assert sorted(p.name for p in traces.glob("*.jsonl")) == [
        "andrew-aviary-local.jsonl",
        "andrew-chirp_aviary.jsonl",
        "andrew-chirp_cctools.jsonl",
        "andrew-mount:chirp_aviary.jsonl",
    ]
    remote = [
        json.loads(line) for line in (traces / "andrew-chirp_aviary.jsonl").read_text().splitlines()
    ]
    assert any(r["driver"].startswith("chirp://") for r in remote)


def test_cache_off_and_on_repeated(tmp_path: Path) -> None:
    argv = ["bench", "andrew", "--targets", "native,chirp/aviary", "--files", "12",
            "--cache", "off,whole", "--repeat", "2", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((tmp_path / "andrew.json").read_text())
    assert data["repeat"] == 2 and data["caches"] == ["off", "whole"]
    assert {"cpu_model", "cores", "kernel", "python", "date", "packages"} <= set(data["machine"])
    rows = data["runs"]
    assert [(r["target"], r["cache"]) for r in rows] == [
        ("native", None), ("chirp/aviary", "off"), ("chirp/aviary", "whole")]  # fmt: skip
    assert [r["label"] for r in rows] == ["native", "chirp/aviary", "chirp/aviary, cache whole"]
    for row in rows:
        assert row["error"] is None and row["repeat"] == 2
        for stage in row["stages"]:
            assert len(stage["runs"]) == 2
            assert stage["minimum"] <= stage["seconds"] <= stage["maximum"]
            assert stage["same_as_native"] is not False
    table = (tmp_path / "andrew.md").read_text()
    assert "| chirp/aviary, cache whole |" in table and "median [min–max] of 2 run(s)" in table


def test_unknown_target_is_a_usage_error(tmp_path: Path) -> None:
    assert run_andrew(tmp_path, 10, ["native", "gopher/x"]) == 2
    assert main(["bench", "andrew", "--cache", "sometimes", "--out", str(tmp_path)]) == 2
