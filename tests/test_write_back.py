"""Write-back never replaces good data with bad: a server killed, or its disk full, mid-upload.

Covers: ``reference_agent.whole_cache.write_back`` (what ``--cache whole``
does at close) against a real Chirp server, and the same through
``aviary run --cache whole``.

Scenario: the server holds a file with known old contents. A write-back of
new contents fails halfway, because the server is SIGKILLed after the first
acknowledged chunk, or because its export is a 1 MiB tmpfs that the new
contents do not fit. Afterwards the server's file still holds exactly the old
contents, no temporary file is left beside it, and the error names what
happened. The old algorithm (truncate, then write in place) is run against
the same faults to show the check catches the corruption it names.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from drivers import Driver, Handle
from reference_agent.whole_cache import WRITE_CHUNK, WriteBackError, write_back
from servers import RunningServer
from tests.helpers import start_or_skip, warm_up_xrootd_bindings

ROOT = Path(__file__).resolve().parent.parent
OLD = b"old contents, all of them good\n" * 10_000  # ~310 KB
NEW = os.urandom(3 * WRITE_CHUNK + 12345)  # several chunks: the fault lands mid-upload
TINY_FS = "1m"  # the export's size: OLD fits, OLD and NEW together do not


def _in_place(driver: Driver, path: str, data: bytes, mode: int) -> None:
    """The old write-back, kept as the seeded bug: truncate, then write over the file."""
    handle = driver.open(path, os.O_WRONLY)
    try:
        driver.ftruncate(handle, len(data))
        offset = 0
        while offset < len(data):
            offset += driver.pwrite(handle, data[offset : offset + WRITE_CHUNK], offset)
    finally:
        with contextlib.suppress(OSError):
            driver.close(handle)


WriteBack = Callable[[Driver, str, bytes, int], None]


@pytest.fixture(scope="module", autouse=True)
def bindings_started() -> None:
    warm_up_xrootd_bindings()  # their poller lives as long as the process: not a leak


@pytest.fixture
def chirp() -> Iterator[RunningServer]:
    server = start_or_skip("chirp/aviary")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def small_export(chirp: RunningServer) -> Iterator[Path]:
    """A directory of the server's export that is a 1 MiB tmpfs we mount (and unmount)."""
    where = chirp.data_dir / "small"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TINY_FS},mode=0777", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(f"a tmpfs is needed to fill a disk (run as root): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".aviary-" in p.name)


def kill_after_first_write(driver: Driver, server: RunningServer) -> Driver:
    """``driver``, SIGKILLing ``server`` once the server acknowledged the first write."""
    original = driver.pwrite

    def pwrite(handle: Handle, data: bytes, offset: int) -> int:
        wrote = original(handle, data, offset)
        if server.process.poll() is None:
            os.kill(server.pid, signal.SIGKILL)
            server.process.wait(timeout=10)
        return wrote

    driver.pwrite = pwrite  # type: ignore[method-assign]
    return driver


def _kill_mid_upload(server: RunningServer, algorithm: WriteBack) -> OSError:
    (server.data_dir / "f").write_bytes(OLD)
    os.chmod(server.data_dir / "f", 0o666)
    driver = kill_after_first_write(server.driver(timeout=5), server)
    try:
        with pytest.raises(OSError) as caught:
            algorithm(driver, "/f", NEW, 0o644)
    finally:
        driver.close_driver()
    return caught.value


@pytest.fixture
def no_recovery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVIARY_RECOVERY", "0")  # a killed server stays dead: fail now


@pytest.mark.usefixtures("no_recovery")
def test_write_back_server_killed_keeps_the_old_file(chirp: RunningServer) -> None:
    error = _kill_mid_upload(chirp, write_back)
    assert isinstance(error, WriteBackError)
    assert f"after {WRITE_CHUNK} of {len(NEW)} bytes" in str(error), error
    assert "/f is unchanged" in str(error), error
    assert (chirp.data_dir / "f").read_bytes() == OLD
    # A dead server cannot be asked to remove the temporary file: it may stay, hidden, as ours.
    assert all(name.startswith(".f.aviary-") for name in _leftovers(chirp.data_dir))


@pytest.mark.usefixtures("no_recovery")
def test_write_back_check_catches_in_place_corruption_on_kill(chirp: RunningServer) -> None:
    _kill_mid_upload(chirp, _in_place)
    assert (chirp.data_dir / "f").read_bytes() != OLD  # the seeded bug destroys the old file


def _fill_disk(server: RunningServer, small: Path, algorithm: WriteBack) -> OSError:
    (small / "f").write_bytes(OLD)
    os.chmod(small / "f", 0o666)
    driver = server.driver(timeout=5)
    try:
        with pytest.raises(OSError) as caught:
            algorithm(driver, "/small/f", NEW, 0o644)
    finally:
        driver.close_driver()
    return caught.value


def test_write_back_disk_full_keeps_the_old_file(chirp: RunningServer, small_export: Path) -> None:
    error = _fill_disk(chirp, small_export, write_back)
    assert error.errno == errno.ENOSPC, error
    assert "/small/f is unchanged" in str(error), error
    assert (small_export / "f").read_bytes() == OLD
    assert _leftovers(small_export) == []


def test_write_back_check_catches_in_place_corruption_on_disk_full(
    chirp: RunningServer, small_export: Path
) -> None:
    _fill_disk(chirp, small_export, _in_place)
    assert (small_export / "f").read_bytes() != OLD


def test_write_back_replaces_the_file_when_all_goes_well(chirp: RunningServer) -> None:
    (chirp.data_dir / "f").write_bytes(OLD)
    driver = chirp.driver(timeout=5)
    try:
        write_back(driver, "/f", NEW, 0o640)
    finally:
        driver.close_driver()
    assert (chirp.data_dir / "f").read_bytes() == NEW
    assert _leftovers(chirp.data_dir) == []


def test_aviary_run_cache_whole_disk_full(chirp: RunningServer, small_export: Path) -> None:
    """Through the agent: the program's close fails, and the server keeps the old file."""
    (small_export / "f").write_bytes(OLD)
    os.chmod(small_export / "f", 0o666)
    with tempfile.NamedTemporaryFile(prefix="aviary-new-") as new:
        new.write(NEW)
        new.flush()
        program = (
            "import sys\n"
            "f = open(sys.argv[2], 'r+b')\n"
            "f.write(open(sys.argv[1], 'rb').read())\n"
            "try:\n"
            "    f.close()\n"
            "except OSError as exc:\n"
            "    print('close:', exc.strerror, file=sys.stderr); sys.exit(3)\n"
        )
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "harness.cli",
                "run",
                "--cache",
                "whole",
                "--timeout",
                "5",
                "-M",
                f"/remote={chirp.url('/small')}",
                "--",
                sys.executable,
                "-c",
                program,
                new.name,
                "/remote/f",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **chirp.client_env},
        )
    assert done.returncode == 3, done.stderr
    assert "close: No space left on device" in done.stderr
    assert (small_export / "f").read_bytes() == OLD
    assert _leftovers(small_export) == []


REPLACING_SERVERS = [
    "chirp/cctools",
    "ftp/vsftpd",
    "ftp/proftpd",
    "ftp/pure-ftpd",
    "ftp/pyftpdlib",
    "dav/nginx",
    "dav/wsgidav",
    "sftp/openssh",
    "root/xrootd",
]


@pytest.mark.parametrize("key", REPLACING_SERVERS)
def test_write_back_replaces_the_file_on_every_writable_server(key: str) -> None:
    """Rename over an existing file (or the in-place fallback) works with each server."""
    server = start_or_skip(key)
    try:
        (server.data_dir / "f").write_bytes(OLD)
        os.chmod(server.data_dir / "f", 0o666)
        if server.as_user:
            shutil.chown(server.data_dir / "f", server.as_user)
        driver = server.driver(timeout=10)
        try:
            write_back(driver, "/f", NEW, 0o644)
        finally:
            driver.close_driver()
        assert (server.data_dir / "f").read_bytes() == NEW
        assert _leftovers(server.data_dir) == []
    finally:
        server.stop()
