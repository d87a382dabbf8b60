"""The real-server mechanism: start on a free port, answer, stop by PID, clean up."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from servers import (
    SERVERS,
    RunningServer,
    ServerContext,
    ServerSpec,
    ServerUnavailable,
    child_pids,
    pid_alive,
    start_server,
)


def test_started_server_answers_and_stop_removes_everything(chirp_server: RunningServer) -> None:
    assert chirp_server.data_dir.is_dir() and chirp_server.process.poll() is None
    with socket.create_connection((chirp_server.host, chirp_server.port), timeout=5):
        pass
    pid, base = chirp_server.pid, chirp_server.base
    chirp_server.stop()
    assert chirp_server.process.poll() is not None
    assert not base.exists()
    assert pid not in child_pids(os.getpid())
    with pytest.raises(OSError):
        socket.create_connection((chirp_server.host, chirp_server.port), timeout=2)
    chirp_server.stop()  # a second stop is harmless


def test_forked_connection_handlers_are_stopped_too(cctools_chirp_server: RunningServer) -> None:
    # cctools forks one process per connection; an open connection keeps one alive.
    with cctools_chirp_server.driver() as driver:
        driver.stat("/")
        handlers = child_pids(cctools_chirp_server.pid)
        assert handlers, "expected a forked connection handler"
        cctools_chirp_server.stop()
    assert not [pid for pid in handlers if pid_alive(pid)]


def test_missing_program_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SERVERS["chirp/cctools"]
    fake = ServerSpec(
        protocol="chirp",
        implementation="imaginary",
        programs=("no-such-program-aviary",),
        install_hint="apt-get install imaginary",
        command=spec.command,
        probe=spec.probe,
    )
    monkeypatch.setitem(SERVERS, fake.key, fake)
    with pytest.raises(ServerUnavailable, match="apt-get install imaginary"):
        start_server(fake.key)


def test_cctools_server_never_reports_to_internet_catalogs() -> None:
    ctx = ServerContext(Path("/b"), Path("/b/data"), Path("/b/state"), 9999, "aviary")
    line = SERVERS["chirp/cctools"].command(ctx)
    assert line[line.index("-u") + 1].startswith("127.0.0.1:")
    assert line[line.index("-U") + 1] == "1d"
    assert line[line.index("-I") + 1] == "127.0.0.1"


# A run that starts a server, says its PID, and waits to be killed.
_RUN_THAT_STARTS_A_SERVER = """
import sys, time
import servers._core as servers
if sys.argv[1] == "without-watchdog":
    servers.Watchdog.__init__ = lambda self, group, base=None: None  # the seeded bug
    servers.Watchdog.release = lambda self: None
server = servers.start_server("chirp/aviary")
print(server.pid, server.base, flush=True)
time.sleep(120)
"""
ORPHAN_BOUND = 15.0  # seconds: STOP_GRACE (5) for SIGTERM, then SIGKILL, and slack


def _server_left_by_a_killed_run(mode: str) -> tuple[int, Path, bool]:
    """Start a run that starts a server, SIGKILL the run; (server PID, its base directory,
    still alive after ORPHAN_BOUND seconds)."""
    run = subprocess.Popen(
        [sys.executable, "-c", _RUN_THAT_STARTS_A_SERVER, mode],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
        text=True,
    )
    try:
        assert run.stdout is not None
        line = run.stdout.readline()
        pid_text, _, base_text = line.strip().partition(" ")
        assert pid_text.isdigit() and base_text, f"the run said {line!r}"
        server_pid, base = int(pid_text), Path(base_text)
    finally:
        run.kill()  # SIGKILL: the run has no chance to stop its server
        run.wait(timeout=30)
        if run.stdout is not None:
            run.stdout.close()
    ends = time.monotonic() + ORPHAN_BOUND
    while pid_alive(server_pid) and time.monotonic() < ends:
        time.sleep(0.1)
    while base.exists() and time.monotonic() < ends:
        time.sleep(0.1)
    return server_pid, base, pid_alive(server_pid)


def test_server_dies_with_the_run_that_started_it() -> None:
    server_pid, base, alive = _server_left_by_a_killed_run("with-watchdog")
    assert not alive, f"server {server_pid} outlived its run by {ORPHAN_BOUND} s"
    assert not base.exists(), f"{base} outlived its run"


def test_orphan_check_catches_a_server_without_watchdog() -> None:
    server_pid, base, alive = _server_left_by_a_killed_run("without-watchdog")
    if alive:  # ours to end: the seeded bug left it running
        os.killpg(server_pid, signal.SIGKILL)
    shutil.rmtree(base, ignore_errors=True)
    assert alive, "without the watchdog the server should have outlived its run"
