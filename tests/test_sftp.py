"""The SFTP driver against a private OpenSSH sshd (internal-sftp, chrooted to the data directory)."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from drivers import Driver, FileType, parse_url
from drivers.sftp import KNOWN_HOSTS_ENV, SftpDriver
from servers import RunningServer
from tests.helpers import errno_name, fs_round_trip, run_under_agent, start_or_skip

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sftp_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningServer]:
    server = start_or_skip("sftp/openssh")
    for name, value in server.client_env.items():
        monkeypatch.setenv(name, value)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sftp(sftp_server: RunningServer) -> Iterator[Driver]:
    driver = sftp_server.driver(timeout=10)
    try:
        yield driver
    finally:
        driver.close_driver()


def test_SftpDriver_random_access_at_explicit_offsets(
    sftp: Driver, sftp_server: RunningServer
) -> None:
    sftp.write_file("/f", b"0123456789")
    h = sftp.open("/f", os.O_RDWR)
    try:
        assert sftp.pread(h, 3, 4) == b"456"
        assert sftp.pread(h, 3, 1) == b"123"  # backwards: no cached position
        assert sftp.pwrite(h, b"XY", 12) == 2  # past the end: a hole
        assert sftp.pread(h, 100, 8) == b"89\0\0XY"
        assert sftp.pread(h, 10, 100) == b""
        assert sftp.fstat(h).st_size == 14
        sftp.ftruncate(h, 4)
    finally:
        sftp.close(h)
    assert (sftp_server.data_dir / "f").read_bytes() == b"0123"
    big = os.urandom(600_000)  # more than one READ/WRITE request each way
    sftp.write_file("/big", big)
    assert sftp.read_file("/big") == big


def test_SftpDriver_stat_fields(sftp: Driver, sftp_server: RunningServer) -> None:
    sftp.write_file("/s", b"x" * 5000)
    sftp.chmod("/s", 0o640)
    sftp.utimens("/s", (1_000_000_000 * 10**9, 1_100_000_000 * 10**9))
    st = sftp.stat("/s")
    real = os.stat(sftp_server.data_dir / "s")
    assert (st.st_mode, st.st_size, st.st_uid, st.st_gid) == (
        real.st_mode,
        real.st_size,
        real.st_uid,
        real.st_gid,
    )
    assert st.st_mtime_ns == real.st_mtime_ns == 1_100_000_000 * 10**9
    assert {"st_ino", "st_nlink", "st_ctime_ns", "st_blocks"} <= st.synthesized
    assert sftp.statfs("/").f_blocks > 0
    sftp.mkdir("/d", 0o750)
    assert os.stat(sftp_server.data_dir / "d").st_mode & 0o777 == 0o750


ERRNO_CASES: dict[str, tuple[Callable[[Driver], object], str]] = {
    "missing": (lambda d: d.stat("/nope"), "ENOENT"),
    "missing_parent": (lambda d: d.open("/nope/f", os.O_WRONLY | os.O_CREAT), "ENOENT"),
    "open_directory_for_writing": (lambda d: d.open("/dir", os.O_WRONLY), "EISDIR"),
    "create_directory": (lambda d: d.open("/dir", os.O_RDONLY | os.O_CREAT), "EISDIR"),
    "readdir_of_file": (lambda d: d.readdir("/file"), "ENOTDIR"),
    "component_is_file": (lambda d: d.stat("/file/child"), "ENOTDIR"),
    "rmdir_not_empty": (lambda d: d.rmdir("/dir"), "ENOTEMPTY"),
    "mkdir_exists": (lambda d: d.mkdir("/dir"), "EEXIST"),
    "exclusive_create": (lambda d: d.open("/file", os.O_WRONLY | os.O_CREAT | os.O_EXCL), "EEXIST"),
    "unlink_directory": (lambda d: d.unlink("/dir"), "EISDIR"),
    "rmdir_file": (lambda d: d.rmdir("/file"), "ENOTDIR"),
    "symlink_loop": (lambda d: d.stat("/loop"), "ELOOP"),
    "dangling_symlink": (lambda d: d.stat("/dangling"), "ENOENT"),
    "nofollow": (lambda d: d.open("/dangling", os.O_RDONLY | os.O_NOFOLLOW), "ELOOP"),
    "link_directory": (lambda d: d.link("/dir", "/dir2"), "EPERM"),
    "readlink_of_file": (lambda d: d.readlink("/file"), "EINVAL"),
    "rename_file_onto_directory": (lambda d: d.rename("/file", "/dir"), "EISDIR"),
    "rename_directory_onto_file": (lambda d: d.rename("/dir", "/file"), "ENOTDIR"),
    "rename_into_itself": (lambda d: d.rename("/dir", "/dir/inside/x"), "ENOTDIR"),
    "symlink_exists": (lambda d: d.symlink("x", "/file"), "EEXIST"),
}


def test_SftpDriver_errno_names_after_interview(sftp: Driver) -> None:
    sftp.mkdir("/dir")
    sftp.write_file("/dir/inside", b"")
    sftp.write_file("/file", b"")
    sftp.symlink("loop", "/loop")
    sftp.symlink("nowhere", "/dangling")
    got = {case: errno_name(lambda c=call: c(sftp)) for case, (call, _) in ERRNO_CASES.items()}
    assert got == {case: expected for case, (_, expected) in ERRNO_CASES.items()}


def test_SftpDriver_interview_round_trips_are_counted(sftp: Driver) -> None:
    sftp.mkdir("/d")
    before = sftp.counters.snapshot()
    assert errno_name(lambda: sftp.mkdir("/d")) == "EEXIST"
    sftp.stat("/d")
    delta = sftp.counters.difference(sftp.counters.snapshot(), before)
    assert delta["mkdir"].round_trips == 2  # MKDIR, then the LSTAT that explains FAILURE
    assert delta["stat"].round_trips == 1
    assert delta["stat"].bytes_sent > 0 and delta["stat"].bytes_received > 0
    assert sftp.counters.total().connections == 1


def test_SftpDriver_rename_replaces_like_posix(sftp: Driver) -> None:
    sftp.write_file("/a", b"new")
    sftp.write_file("/b", b"old")
    sftp.rename("/a", "/b")
    assert sftp.read_file("/b") == b"new"
    assert errno_name(lambda: sftp.stat("/a")) == "ENOENT"
    sftp.mkdir("/from")
    sftp.write_file("/from/f", b"moved")
    sftp.mkdir("/onto")
    sftp.rename("/from", "/onto")  # onto an empty directory
    assert sftp.read_file("/onto/f") == b"moved"
    sftp.mkdir("/full")
    sftp.write_file("/full/x", b"")
    assert errno_name(lambda: sftp.rename("/onto", "/full")) == "ENOTEMPTY"


def test_SftpDriver_symlinks_and_hard_links(sftp: Driver, sftp_server: RunningServer) -> None:
    sftp.write_file("/target", b"pointed at")
    sftp.symlink("target", "/link")
    assert sftp.readlink("/link") == "target"
    assert sftp.lstat("/link").is_lnk() and sftp.stat("/link").is_reg()
    assert sftp.read_file("/link") == b"pointed at"
    assert {e.name: e.type for e in sftp.readdir("/")}["link"] is FileType.SYMLINK
    sftp.link("/target", "/hard")
    assert os.stat(sftp_server.data_dir / "hard").st_nlink == 2
    assert sftp.read_file("/hard") == b"pointed at"


def test_SftpDriver_refuses_an_unknown_host_key(
    sftp_server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    monkeypatch.setenv(KNOWN_HOSTS_ENV, str(empty))
    with SftpDriver.from_location(parse_url(sftp_server.url()), timeout=10) as driver:
        assert errno_name(lambda: driver.stat("/")) == "EACCES"


def test_SftpDriver_times_out_on_a_silent_server() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts the TCP connection, never sends a banner
        port = listener.getsockname()[1]
        with SftpDriver("127.0.0.1", port, "nobody", timeout=0.5) as driver:
            assert errno_name(lambda: driver.stat("/")) in ("ETIMEDOUT", "EPROTO")


def test_aviary_fs_round_trip(
    sftp_server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local = tmp_path / "in.txt"
    local.write_text("over sftp\n")
    fs_round_trip(sftp_server, local, capsys)


def test_program_under_the_agent_reads_what_was_written(
    sftp: Driver, sftp_server: RunningServer
) -> None:
    sftp.write_file("/f", b"written over sftp\n")
    prefix = f"/sftp/{sftp_server.spec.user}@127.0.0.1:{sftp_server.port}"
    done = run_under_agent(
        "sh", "-c", f"cat {prefix}/f && echo more > {prefix}/g", env=sftp_server.client_env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "written over sftp\n"
    assert sftp.read_file("/g") == b"more\n"


def test_SftpDriver_a_write_only_handle_cannot_read_even_nothing(sftp: Driver) -> None:
    """pread(2) of zero bytes on a write-only descriptor is EBADF (found by the random comparison)."""
    sftp.write_file("/wo", b"abc")
    h = sftp.open("/wo", os.O_WRONLY)
    try:
        for size in (0, 1):
            with pytest.raises(OSError) as caught:
                sftp.pread(h, size, 0)
            assert caught.value.errno == errno.EBADF
    finally:
        sftp.close(h)


def test_SftpDriver_a_read_only_handle_cannot_write_even_nothing(sftp: Driver) -> None:
    """pwrite(2) of zero bytes on a read-only descriptor is EBADF (found by the random comparison)."""
    h = sftp.open("/ro", os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        for data in (b"", b"x"):
            with pytest.raises(OSError) as caught:
                sftp.pwrite(h, data, 0)
            assert caught.value.errno == errno.EBADF
    finally:
        sftp.close(h)
    assert sftp.read_file("/ro") == b""
