"""What the benchmarks share: sizes, spreads, target choice, the machine's description."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.common import (
    Spread,
    UsageError,
    choose_targets,
    format_size,
    machine_description,
    parse_size,
    parse_sizes,
    summarize,
    write_json,
)

AVAILABLE = ["chirp/aviary", "chirp/cctools", "ftp/vsftpd", "http/nginx"]


def test_sizes() -> None:
    assert parse_size("4K") == 4096
    assert parse_size("128M") == 128 * 2**20
    assert parse_size("1g") == 2**30
    assert parse_size("512") == 512
    assert parse_sizes("4K,16K,64K,256K,1M,4K") == [4096, 16384, 65536, 262144, 1048576]
    assert [format_size(s) for s in (4096, 2**20, 128 * 2**20, 1000)] == [
        "4K",
        "1M",
        "128M",
        "1000B",
    ]
    for bad in ("0", "-4K", "4T", "x", ""):
        with pytest.raises(UsageError):
            parse_size(bad)
    with pytest.raises(UsageError):
        parse_sizes(",")


def test_summarize() -> None:
    spread = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert spread == Spread(n=5, median=3.0, minimum=1.0, maximum=5.0, q1=2.0, q3=4.0)
    assert summarize([7.0]).as_text() == "7.0"
    assert spread.as_text(0) == "3 [1–5]"
    with pytest.raises(ValueError):
        summarize([])


def test_choose_targets() -> None:
    everything = choose_targets(None, None, AVAILABLE)
    assert everything.local and everything.servers == AVAILABLE
    chirp = choose_targets(["local,chirp"], None, AVAILABLE)
    assert chirp.local and chirp.servers == ["chirp/aviary", "chirp/cctools"]
    one = choose_targets(["chirp"], ["chirp/cctools", "ftp/vsftpd"], AVAILABLE)
    assert not one.local and one.servers == ["chirp/cctools"]
    repeated = choose_targets(None, ["ftp/vsftpd", "chirp/aviary", "ftp/vsftpd"], AVAILABLE)
    assert repeated.local and repeated.servers == ["ftp/vsftpd", "chirp/aviary"]
    assert choose_targets(["webdav"], None, AVAILABLE).servers == []
    with pytest.raises(UsageError, match="unknown driver"):
        choose_targets(["gopher"], None, AVAILABLE)
    with pytest.raises(UsageError, match="unknown server"):
        choose_targets(None, ["chirp/none"], AVAILABLE)


def test_machine_description_and_json(tmp_path: Path) -> None:
    machine = machine_description()
    assert machine["cores"] >= 1 and machine["kernel"] and machine["python"]
    assert machine["cpu_model"] and machine["date"][:2] == "20"
    assert machine["packages"]["coreutils"] != "not installed"
    write_json(tmp_path / "x.json", {"spread": summarize([1.0, 2.0]), "nan": math.nan})
    data = json.loads((tmp_path / "x.json").read_text())
    assert data == {"spread": {"n": 2, "median": 1.5, "minimum": 1.0, "maximum": 2.0,
                               "q1": 1.25, "q3": 1.75}, "nan": None}  # fmt: skip
