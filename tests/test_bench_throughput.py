"""``aviary bench throughput`` (Figure 6) and the stat block-size hint it sets.

The hint test is the proof that cp follows ``aviary run --block-size``: the
sizes of cp's writes to a remote file, counted in the agent's trace, change with
the hint (GNU cp 9 uses max(128 KiB, st_blksize), so hints of 256K and 1M must
each show up as they are, and no hint as the server's own, smaller, value).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from harness.cli import main
from servers import RunningServer
from tests.helpers import ROOT


def _cp_write_sizes(
    server: RunningServer, source: Path, trace: Path, hint: str | None
) -> Counter[int]:
    dest = f"/chirp/127.0.0.1:{server.port}/copy"
    extra = ["--block-size", hint] if hint else []
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", *extra, "--trace", str(trace), "--",
         "cp", str(source), dest],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (server.data_dir / "copy").read_bytes() == source.read_bytes()
    sizes: Counter[int] = Counter()
    for line in trace.read_text().splitlines():
        record = json.loads(line)
        if record["syscall"] == "write" and record["driver"].startswith("chirp://"):
            sizes[record["result"]] += 1
    return sizes


def test_cp_write_size_follows_the_block_size_hint(
    aviary_chirp_server: RunningServer, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    source.write_bytes(os.urandom(4 * 2**20))
    sizes = {hint: _cp_write_sizes(aviary_chirp_server, source, tmp_path / "trace", hint)
             for hint in (None, "256K", "1M")}  # fmt: skip
    assert sizes["256K"] == {262144: 16}, sizes
    assert sizes["1M"] == {1048576: 4}, sizes
    assert set(sizes[None]) and max(sizes[None]) < 262144, sizes  # the server's own st_blksize
    # What a program sees in stat(2): the hint, for remote files only.
    shown = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--block-size", "64K", "--",
         "stat", "-c", "%o", f"/chirp/127.0.0.1:{aviary_chirp_server.port}/copy", str(source)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == ["65536", str(source.stat().st_blksize)]


def test_bad_block_size_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--block-size", "12Q", "--", "true"]) == 2
    assert (
        capsys.readouterr().err
        == "aviary: run: --block-size: bad size '12Q' (say 4K, 128M or 1G)\n"
    )


def test_bench_throughput_local_and_chirp(tmp_path: Path) -> None:
    argv = ["bench", "throughput", "--driver", "local,chirp", "--server", "chirp/aviary",
            "--size", "2M", "--block-sizes", "4K,1M", "--repeat", "2", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((tmp_path / "figure6.json").read_text())
    assert data["benchmark"] == "throughput" and data["file_bytes"] == 2 * 2**20
    assert data["block_sizes"] == [4096, 1048576] and data["repeat"] == 2
    assert {"cpu_model", "cores", "kernel", "python", "date", "packages"} <= set(data["machine"])
    rows = {row["target"]: row for row in data["rows"]}
    assert list(rows) == ["native", "aviary-local", "chirp/aviary"]
    for row in rows.values():
        assert row["error"] is None
        for cell in row["cells"]:
            assert (
                cell["error"] is None
                and len(cell["mb_s"]) == 2
                and all(v > 0 for v in cell["mb_s"])
            )
            spread = cell["mb_s_spread"]
            assert spread["n"] == 2 and spread["minimum"] <= spread["median"] <= spread["maximum"]
    chirp = rows["chirp/aviary"]["cells"]
    assert [c["block_size"] for c in chirp] == [4096, 1048576]
    assert chirp[0]["observed_write"] == 131072  # cp 9's floor: the 4K hint is not followed
    assert chirp[1]["observed_write"] == 1048576
    assert rows["native"]["cells"][0]["block_size"] is None
    table = (tmp_path / "figure6.md").read_text()
    assert (
        "| chirp/aviary |" in table and "cp wrote 128K ≠ hint" in table and "cp wrote 1M)" in table
    )
    assert (tmp_path / "figure6.png").read_bytes().startswith(b"\x89PNG")


def test_bench_throughput_read_only_and_bad_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "throughput", "--size", "0", "--out", str(tmp_path)]) == 2
    assert (
        capsys.readouterr().err == "aviary: bench throughput: bad size '0' (say 4K, 128M or 1G)\n"
    )
    argv = ["bench", "throughput", "--driver", "http", "--server", "http/python", "--size", "64K",
            "--block-sizes", "1M", "--repeat", "1", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0  # a read-only store is a row saying so, not a failure
    rows = json.loads((tmp_path / "figure6.json").read_text())["rows"]
    assert [r["target"] for r in rows] == ["native", "http/python"]
    assert rows[1]["error"] == "n/a: read-only protocol"
