"""Every network driver after its server restarts: it reconnects and carries on, or fails
fast with a clear errno where the protocol cannot tell that it is safe to go on.

Covers: ftp, sftp, webdav and http (chirp has its own, richer tests in
test_chirp_recovery.py and the fault matrix). Each server is killed (SIGKILL, so
connections die without a goodbye) and started again on the same port and data
directory; the driver's connection from before is then dead.
"""

from __future__ import annotations

import errno
import os
import signal
import time

import pytest

from drivers import Driver, parse_url
from drivers.ftp import FtpDriver
from drivers.http import HttpDriver
from drivers.sftp import SftpDriver
from drivers.webdav import WebDavDriver
from drivers.xrootd import XRootDDriver
from servers import RunningServer
from tests.helpers import served, warm_up_xrootd_bindings

TIMEOUT = 3.0  # seconds: each network wait
BUDGET = 20.0  # seconds of reconnecting

DRIVERS: dict[str, type[Driver]] = {
    "ftp/pyftpdlib": FtpDriver,
    "ftp/vsftpd": FtpDriver,
    "sftp/openssh": SftpDriver,
    "dav/wsgidav": WebDavDriver,
    "http/python": HttpDriver,
    "root/xrootd": XRootDDriver,
}


RECOVERY_ENVS = (
    "AVIARY_FTP_RECOVERY",
    "AVIARY_SFTP_RECOVERY",
    "AVIARY_HTTP_RECOVERY",
    "AVIARY_XROOTD_RECOVERY",
)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    return monkeypatch


def connect(server: RunningServer, recovery: float, env: pytest.MonkeyPatch) -> Driver:
    """The driver for ``server``, its recovery budget set as a user would: the environment."""
    for name in RECOVERY_ENVS:
        env.setenv(name, str(recovery))
    for name, value in server.client_env.items():  # keys: read when it connects
        env.setenv(name, value)
    return DRIVERS[server.spec.key].from_location(parse_url(server.url()), timeout=TIMEOUT)


@pytest.fixture(scope="module", autouse=True)
def bindings_started() -> None:
    warm_up_xrootd_bindings()


def reboot(server: RunningServer) -> None:
    server.restart(kill_signal=signal.SIGKILL)


@pytest.mark.parametrize("key", sorted(DRIVERS))
def test_path_operations_carry_on_after_a_restart(
    key: str, environment: pytest.MonkeyPatch
) -> None:
    with served(key) as server:
        (server.data_dir / "kept").write_bytes(b"kept across the restart")
        os.chmod(server.data_dir / "kept", 0o644)
        driver = connect(server, BUDGET, environment)
        try:
            assert driver.stat("/kept").st_size == 23
            before = driver.counters.total().connections
            reboot(server)
            started = time.monotonic()
            assert driver.read_file("/kept") == b"kept across the restart"
            assert driver.stat("/kept").st_size == 23
            if not isinstance(driver, XRootDDriver):  # its bindings reconnect out of sight
                assert driver.counters.total().connections > before  # a new one, not luck
            assert time.monotonic() - started < BUDGET
        finally:
            driver.close_driver()


@pytest.mark.parametrize("key", ["ftp/pyftpdlib", "sftp/openssh", "dav/wsgidav"])
def test_without_recovery_the_error_is_clear_and_fast(
    key: str, environment: pytest.MonkeyPatch
) -> None:
    with served(key) as server:
        (server.data_dir / "kept").write_bytes(b"x")
        os.chmod(server.data_dir / "kept", 0o644)
        driver = connect(server, 0, environment)
        try:
            driver.stat("/kept")
            reboot(server)
            started = time.monotonic()
            try:
                driver.stat("/kept")
            except OSError as exc:  # some servers let the next connection answer at once
                assert exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ETIMEDOUT), exc
            assert time.monotonic() - started < 2 * TIMEOUT + 2
            driver.stat("/kept")  # the next operation reconnects
        finally:
            driver.close_driver()


def test_ftp_writes_staged_before_a_restart_arrive_at_close(
    environment: pytest.MonkeyPatch,
) -> None:
    """The get/put model: a staged file is put whole after the reconnect, nothing lost."""
    with served("ftp/pyftpdlib") as server:
        driver = connect(server, BUDGET, environment)
        try:
            handle = driver.open("/staged", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            driver.pwrite(handle, b"written before", 0)
            driver.fsync(handle)
            reboot(server)
            driver.pwrite(handle, b" and after", 14)
            driver.close(handle)
            assert (server.data_dir / "staged").read_bytes() == b"written before and after"
        finally:
            driver.close_driver()


@pytest.mark.parametrize("key", ["sftp/openssh", "root/xrootd"])
def test_open_handles_carry_on_after_a_restart_when_the_file_is_the_same(
    key: str, environment: pytest.MonkeyPatch
) -> None:
    """The handle is reopened by path and recognised (sftp: the bytes it last saw, xrootd:
    the server's file id); the request that broke is sent again."""
    with served(key) as server:
        (server.data_dir / "f").write_bytes(b"contents")
        os.chmod(server.data_dir / "f", 0o666)
        driver = connect(server, BUDGET, environment)
        try:
            handle = driver.open("/f", os.O_RDWR)
            writer = driver.open("/w", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            assert driver.pread(handle, 4, 0) == b"cont"
            assert driver.pwrite(writer, b"one", 0) == 3
            reboot(server)
            assert driver.pread(handle, 4, 4) == b"ents"
            assert driver.pwrite(handle, b"C", 0) == 1
            assert driver.pwrite(writer, b" two", 3) == 4  # reopened, neither truncated
            driver.close(handle)
            driver.close(writer)
            assert (server.data_dir / "f").read_bytes() == b"Contents"
            assert (server.data_dir / "w").read_bytes() == b"one two"
        finally:
            driver.close_driver()


@pytest.mark.parametrize("key", ["sftp/openssh", "root/xrootd"])
def test_a_handle_whose_file_was_replaced_is_stale_after_a_restart(
    key: str, environment: pytest.MonkeyPatch
) -> None:
    """Another file under the handle's name when it is reopened: ESTALE, never that file."""
    with served(key) as server:
        (server.data_dir / "f").write_bytes(b"contents")
        os.chmod(server.data_dir / "f", 0o666)
        driver = connect(server, BUDGET, environment)
        try:
            handle = driver.open("/f", os.O_RDWR)
            assert driver.pread(handle, 4, 0) == b"cont"
            (server.data_dir / "g").write_bytes(b"CONTENTS")
            os.chmod(server.data_dir / "g", 0o666)
            os.replace(server.data_dir / "g", server.data_dir / "f")
            reboot(server)
            for call in (
                lambda: driver.pread(handle, 4, 0),
                lambda: driver.pwrite(handle, b"x", 0),
            ):
                with pytest.raises(OSError) as stale:
                    call()
                assert stale.value.errno == errno.ESTALE
            assert (server.data_dir / "f").read_bytes() == b"CONTENTS"  # nothing misplaced
        finally:
            driver.close_driver()


def test_sftp_handles_without_recovery_are_stale(environment: pytest.MonkeyPatch) -> None:
    """Without recovery SFTP cannot check that a path still names the open file: ESTALE."""
    with served("sftp/openssh") as server:
        (server.data_dir / "f").write_bytes(b"contents")
        os.chmod(server.data_dir / "f", 0o644)
        driver = connect(server, 0, environment)
        try:
            handle = driver.open("/f", os.O_RDONLY)
            assert driver.pread(handle, 4, 0) == b"cont"
            reboot(server)
            assert driver.stat("/f").st_size == 8  # reconnects
            with pytest.raises(OSError) as stale:
                driver.pread(handle, 4, 0)
            assert stale.value.errno == errno.ESTALE
            with pytest.raises(OSError) as closing:
                driver.close(handle)
            assert closing.value.errno == errno.ESTALE
            with pytest.raises(OSError) as gone:
                driver.close(handle)
            assert gone.value.errno == errno.EBADF
        finally:
            driver.close_driver()
