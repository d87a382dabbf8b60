"""The functions every trapped call or every reply runs through, under pytest-benchmark.

These are correctness tests first (each asserts its result) and timings second:
``pytest tests/test_hot_paths.py --benchmark-enable`` prints how long each takes,
so a change that slows a hot path is visible in review. Nothing here asserts a
time: the numbers are compared with ``--benchmark-compare``, never with a limit.
"""

from __future__ import annotations

import os

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from drivers import StatResult
from drivers.chirp._connection import READY, ChirpConnection
from drivers.chirp._events import NEED_DATA, Reply, Request, StatReply
from drivers.chirp.codec import parse_stat_line
from reference_agent._abi import pack_stat
from reference_agent.namespace import LocalTarget, Namespace, RemoteTarget, parse_mountlist
from reference_agent.real_path import walk
from reference_agent.table import dispatch_table

STAT_LINE = "65024 2146401 33152 1 1001 1001 0 5 4096 8 1795379218 1795379219 1795379220"

MOUNTLIST = """
/data     chirp://127.0.0.1:9123/exports/data   rwx
/scratch  LOCAL
/home     DENY
"""


@pytest.fixture(scope="module")
def namespace() -> Namespace:
    return Namespace(parse_mountlist(MOUNTLIST))


def test_resolve_a_local_path(benchmark: BenchmarkFixture, namespace: Namespace) -> None:
    target = benchmark(namespace.resolve, "lib/x86_64-linux-gnu/libc.so.6", "/usr")
    assert isinstance(target, LocalTarget) or target.__class__.__name__ == "Native"


def test_resolve_a_remote_path(benchmark: BenchmarkFixture, namespace: Namespace) -> None:
    target = benchmark(namespace.resolve, "/data/run/out.txt")
    assert isinstance(target, RemoteTarget) and target.path.endswith("/exports/data/run/out.txt")


def test_walk_a_real_path(benchmark: BenchmarkFixture) -> None:
    found = benchmark(walk, "bin/../bin/env", base="/usr", follow=True, tid=os.getpid())
    assert found.real == os.path.realpath("/usr/bin/env")


def test_parse_a_chirp_stat_line(benchmark: BenchmarkFixture) -> None:
    st = benchmark(parse_stat_line, STAT_LINE)
    assert isinstance(st, StatResult) and st.st_size == 5 and st.st_blksize == 4096


def _stat_round() -> object:
    conn = ChirpConnection()
    conn.state = READY
    conn.send(Request("stat /a/b", Reply.STAT))
    conn.receive_data(b"0\n" + STAT_LINE.encode() + b"\n")
    event = conn.next_event()
    assert conn.next_event() is NEED_DATA
    return event


def test_a_chirp_stat_round_in_the_core(benchmark: BenchmarkFixture) -> None:
    event = benchmark(_stat_round)
    assert isinstance(event, StatReply) and event.stat.st_size == 5


def test_dispatch_lookup(benchmark: BenchmarkFixture) -> None:
    table = dispatch_table()
    entry = benchmark(table.get, "newfstatat")
    assert entry is not None and entry.name == "newfstatat"


def test_pack_a_stat_buffer(benchmark: BenchmarkFixture) -> None:
    st = parse_stat_line(STAT_LINE)
    packed = benchmark(pack_stat, st, 0xA500)
    assert len(packed) == 144
