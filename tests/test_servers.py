"""The real-server mechanism: start on a free port, answer, stop by PID, clean up."""

from __future__ import annotations

import os
import socket
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
