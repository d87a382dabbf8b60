"""Shared fixtures: real servers on loopback, and a leak check around every test.

A server that is not installed fails the test under CI (``CI`` set) and is
skipped elsewhere, with the reason and the command that installs it.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers import RunningServer, child_pids
from tests.helpers import start_or_skip

CHIRP_SERVERS = ("chirp/cctools", "chirp/aviary")

#: Modules whose tests start no server, no traced program and no network: they run in
#: seconds with ``pytest -m unit``; the rest (``-m "not unit"``) are the integration tests.
UNIT_MODULES = frozenset(
    {
        "test_agent_namespace",
        "test_bench_common",
        "test_chirp_codec",
        "test_chirp_connection",
        "test_drivers_core",
        "test_hot_paths",
        "test_import_graph",
        "test_read_cache",
        "test_sim",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in UNIT_MODULES:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(params=CHIRP_SERVERS)
def chirp_server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """Each Chirp server in turn, on a free port over a fresh directory."""
    server = start_or_skip(request.param)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cctools_chirp_server() -> Iterator[RunningServer]:
    server = start_or_skip("chirp/cctools")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aviary_chirp_server() -> Iterator[RunningServer]:
    server = start_or_skip("chirp/aviary")
    try:
        yield server
    finally:
        server.stop()


#: Files a library keeps open for the life of the process on purpose
#: (matplotlib's font cache), not leaks of the code under test.
PROCESS_CACHES = (".ttf", ".otf")


def _open_fds() -> set[str]:
    result = set()
    for fd in os.listdir("/proc/self/fd"):
        # The descriptor of the listing itself is gone by now.
        with contextlib.suppress(OSError):
            result.add(f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}")
    return result


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Every test closes its sockets and files, joins its threads, reaps its children."""
    threads = set(threading.enumerate())
    fds = _open_fds()
    # A module's shared server is older than the test: its own children only.
    older_children = set(child_pids(os.getpid()))
    yield
    deadline = time.monotonic() + 5.0  # a relay thread may still be closing its sockets
    while True:
        gc.collect()  # an unreachable socket waiting in a reference cycle is not a leak
        new_threads = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
        new_fds = {fd for fd in _open_fds() - fds if not fd.endswith(PROCESS_CACHES)}
        children = [pid for pid in child_pids(os.getpid()) if pid not in older_children]
        if not (new_threads or new_fds or children) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not new_threads, f"threads left running: {new_threads}"
    assert not new_fds, f"descriptors left open: {sorted(new_fds)}"
    assert not children, f"child processes left: {children}"


@pytest.fixture
def local_tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    return root
