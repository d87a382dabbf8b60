"""Chirp recovery against real servers restarted under a session.

Each test restarts the real server on the same port over the same data
directory (``RunningServer.restart``) while a driver holds open files, and
checks what the program would see: nothing for a file that is still the
same, ESTALE for one that changed, the bytes on the server's disk.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import time

import pytest

from drivers import StatResult
from drivers.chirp import ChirpDriver
from drivers.chirp._recovery import (
    RECOVERY_ENV,
    OpenFile,
    backoff_delays,
    recovery_budget,
    reopen_flags,
    stale_reason,
)
from servers import RunningServer, give_to

TIMEOUT = 3.0  # seconds: the driver's wait for any one network event
BUDGET = 15.0  # seconds of reconnecting before recovery gives up


def driver_for(server: RunningServer, recovery: float = BUDGET) -> ChirpDriver:
    return ChirpDriver(
        server.host, server.port, auth_methods=("address",), timeout=TIMEOUT, recovery=recovery
    )


@pytest.mark.parametrize("kill_signal", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "crash"])
def test_restart_mid_session_is_invisible(chirp_server: RunningServer, kill_signal: int) -> None:
    with driver_for(chirp_server) as driver:
        h = driver.open("/log", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        reader = driver.open("/log", os.O_RDONLY)
        assert driver.pwrite(h, b"before ", 0) == 7
        chirp_server.restart(kill_signal=kill_signal)
        started = time.monotonic()
        assert driver.pwrite(h, b"after", 7) == 5  # the program never notices
        took = time.monotonic() - started
        assert driver.pread(reader, 100, 0) == b"before after"
        assert driver.fstat(h).st_size == 12
        assert driver.recoveries == 1
        assert driver.counters.total().connections == 2
        driver.close(h)
        driver.close(reader)
    assert (chirp_server.data_dir / "log").read_bytes() == b"before after"
    assert took < TIMEOUT, f"recovery took {took:.2f} s"


def test_changed_file_is_estale_and_the_others_go_on(chirp_server: RunningServer) -> None:
    data = chirp_server.data_dir
    with driver_for(chirp_server) as driver:
        driver.write_file("/moved", b"original")
        driver.write_file("/deleted", b"gone soon")
        driver.write_file("/kept", b"kept")
        moved = driver.open("/moved", os.O_RDWR)
        deleted = driver.open("/deleted", os.O_RDWR | os.O_CREAT, 0o644)
        kept = driver.open("/kept", os.O_RDWR)
        os.killpg(chirp_server.pid, signal.SIGKILL)  # the outage begins: the whole server
        # During the outage someone renames the file away and puts an
        # identical copy (a new inode) in its place, and deletes another.
        os.rename(data / "moved", data / "moved.old")
        shutil.copy(data / "moved.old", data / "moved")
        give_to(chirp_server.as_user, data / "moved")
        os.unlink(data / "deleted")
        chirp_server.restart()
        assert driver.pread(kept, 4, 0) == b"kept"  # recovers, reopens all three
        for handle in (moved, deleted):
            with pytest.raises(OSError) as info:
                driver.pread(handle, 8, 0)
            assert info.value.errno == errno.ESTALE
            with pytest.raises(OSError) as info:
                driver.pwrite(handle, b"X", 0)
            assert info.value.errno == errno.ESTALE
        assert driver.pwrite(kept, b"KEPT", 0) == 4
        driver.close(moved)  # a stale handle closes quietly, once
        with pytest.raises(OSError) as info:
            driver.close(moved)
        assert info.value.errno == errno.EBADF
        driver.close(deleted)
        driver.close(kept)
    assert not (data / "deleted").exists(), "a reopen must never create the file"
    assert (data / "moved").read_bytes() == b"original"
    assert (data / "kept").read_bytes() == b"KEPT"


def test_spent_budget_fails_then_the_next_call_reconnects(chirp_server: RunningServer) -> None:
    with driver_for(chirp_server, recovery=1.0) as driver:
        driver.write_file("/f", b"data")
        h = driver.open("/f", os.O_RDONLY)
        os.killpg(chirp_server.pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(OSError) as info:
            driver.pread(h, 4, 0)
        took = time.monotonic() - started
        assert info.value.errno in (errno.ECONNRESET, errno.EPIPE)
        assert "gave up reconnecting after 1 s" in str(info.value)
        assert 0.9 < took < 1.0 + TIMEOUT
        chirp_server.restart()
        assert driver.pread(h, 4, 0) == b"data"  # the handle waited for its server
        driver.close(h)


def test_without_recovery_a_broken_connection_fails_at_once(chirp_server: RunningServer) -> None:
    with driver_for(chirp_server, recovery=0) as driver:
        driver.write_file("/f", b"data")
        h = driver.open("/f", os.O_RDONLY)
        chirp_server.restart()
        started = time.monotonic()
        with pytest.raises(OSError) as info:
            driver.pread(h, 4, 0)
        assert info.value.errno in (errno.ECONNRESET, errno.EPIPE)
        assert time.monotonic() - started < 0.5
        with pytest.raises(OSError) as info:
            driver.pread(h, 4, 0)
        assert info.value.errno == errno.EBADF  # a Chirp descriptor dies with its connection
        assert driver.recoveries == 0


def test_namespace_calls_recover(chirp_server: RunningServer) -> None:
    with driver_for(chirp_server) as driver:
        driver.mkdir("/d")
        chirp_server.restart()
        driver.mkdir("/d/e")
        chirp_server.restart()
        driver.rename("/d/e", "/d/f")
        chirp_server.restart()
        assert [e.name for e in driver.readdir("/d")] == ["f"]
        assert driver.recoveries == 3


def test_recovery_decisions() -> None:
    assert reopen_flags("rwcta") == "rwa"
    assert reopen_flags("wcxs") == "ws"
    delays = backoff_delays(0.05, 1.0)
    assert [round(next(delays), 2) for _ in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    st = StatResult.from_os(os.stat("/"))
    entry = OpenFile("/x", 0, "r", 0, 5, 1, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)
    entry.observed(st, st.st_mtime_ns / 1e9 + 1)  # seen in the second it was written
    assert entry.size == st.st_size and not entry.settled
    entry.size += 1  # Chirp's whole-second mtime cannot tell: no verdict on size
    assert stale_reason(entry, st) is None
    entry.observed(st, st.st_mtime_ns / 1e9 + 5)
    assert stale_reason(entry, st) is None
    entry.inode += 1
    assert "inode" in (stale_reason(entry, st) or "")
    entry.inode -= 1
    entry.size += 1  # same mtime, different size: not the file we had
    assert "size" in (stale_reason(entry, st) or "")
    entry.dirty = True  # ... unless we wrote it ourselves
    assert stale_reason(entry, st) is None


def test_recovery_budget_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RECOVERY_ENV, "0")
    assert recovery_budget(None) == 0
    assert recovery_budget(2.5) == 2.5
    monkeypatch.delenv(RECOVERY_ENV)
    assert recovery_budget(None) == 60.0
    monkeypatch.setenv(RECOVERY_ENV, "-1")
    with pytest.raises(ValueError):
        recovery_budget(None)
