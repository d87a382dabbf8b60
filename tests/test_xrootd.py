"""The XRootD driver against Debian's xrootd server (anonymous, read-write, private config)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from drivers import Driver, FileType
from drivers.xrootd import XRootDDriver, errno_for_status
from servers import RunningServer
from tests.helpers import (
    errno_name,
    fs_round_trip,
    run_under_agent,
    start_or_skip,
    warm_up_xrootd_bindings,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def bindings_started() -> None:
    warm_up_xrootd_bindings()


@pytest.fixture
def xrootd_server() -> Iterator[RunningServer]:
    server = start_or_skip("root/xrootd")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def xrd(xrootd_server: RunningServer) -> Iterator[Driver]:
    driver = xrootd_server.driver(timeout=10)
    try:
        yield driver
    finally:
        driver.close_driver()


def test_XRootDDriver_random_access_and_stat(xrd: Driver, xrootd_server: RunningServer) -> None:
    xrd.write_file("/f", b"0123456789")
    h = xrd.open("/f", os.O_RDWR)
    try:
        assert xrd.pread(h, 3, 4) == b"456"
        assert xrd.pread(h, 3, 1) == b"123"
        assert xrd.pwrite(h, b"XY", 12) == 2
        assert xrd.pread(h, 100, 8) == b"89\0\0XY"
        assert xrd.pread(h, 10, 100) == b""
        assert xrd.fstat(h).st_size == 14  # asked of the server, not the size at open
        xrd.ftruncate(h, 4)
    finally:
        xrd.close(h)
    real = os.stat(xrootd_server.data_dir / "f")
    st = xrd.stat("/f")
    assert (st.st_size, st.st_ino, st.st_dev, st.st_mode, st.st_uid) == (
        4,
        real.st_ino,
        real.st_dev,
        real.st_mode,
        real.st_uid,
    )
    assert {"st_nlink", "st_blocks"} <= st.synthesized
    xrd.chmod("/f", 0o604)
    assert os.stat(xrootd_server.data_dir / "f").st_mode & 0o777 == 0o604


def test_XRootDDriver_open_flags_as_posix(xrd: Driver, xrootd_server: RunningServer) -> None:
    xrd.write_file("/f", b"keep")
    xrd.close(xrd.open("/f", os.O_WRONLY | os.O_CREAT))  # no O_TRUNC: kept
    assert xrd.read_file("/f") == b"keep"
    h = xrd.open("/f", os.O_WRONLY | os.O_APPEND)
    xrd.pwrite(h, b"!", 0)
    xrd.close(h)
    assert xrd.read_file("/f") == b"keep!"
    xrd.close(xrd.open("/f", os.O_WRONLY | os.O_TRUNC))
    assert xrd.read_file("/f") == b""
    xrd.mkdir("/d")
    h = xrd.open("/d", os.O_RDONLY)  # Linux opens a directory read-only
    assert xrd.fstat(h).is_dir()
    assert errno_name(lambda: xrd.pread(h, 1, 0)) == "EISDIR"
    xrd.close(h)


ERRNO_CASES: dict[str, tuple[Callable[[Driver], object], str]] = {
    "missing": (lambda d: d.stat("/nope"), "ENOENT"),
    "create_under_missing": (lambda d: d.open("/nope/f", os.O_WRONLY | os.O_CREAT), "ENOENT"),
    "create_under_file": (lambda d: d.open("/file/f", os.O_WRONLY | os.O_CREAT), "ENOTDIR"),
    "open_directory_for_writing": (lambda d: d.open("/dir", os.O_WRONLY), "EISDIR"),
    "readdir_of_file": (lambda d: d.readdir("/file"), "ENOTDIR"),
    "component_is_file": (lambda d: d.stat("/file/child"), "ENOTDIR"),
    "rmdir_not_empty": (lambda d: d.rmdir("/dir"), "ENOTEMPTY"),
    "rmdir_missing": (lambda d: d.rmdir("/nope"), "ENOENT"),
    "rmdir_file": (lambda d: d.rmdir("/file"), "ENOTDIR"),
    "mkdir_exists": (lambda d: d.mkdir("/dir"), "EEXIST"),
    "exclusive_create": (lambda d: d.open("/file", os.O_WRONLY | os.O_CREAT | os.O_EXCL), "EEXIST"),
    "unlink_directory": (lambda d: d.unlink("/dir"), "EISDIR"),
    "rename_file_onto_directory": (lambda d: d.rename("/file", "/dir"), "EISDIR"),
    "rename_to_missing_parent": (lambda d: d.rename("/file", "/nope/file"), "ENOENT"),
    "symlink_loop_made_on_the_server": (lambda d: d.stat("/loop"), "ELOOP"),
    "dangling_symlink": (lambda d: d.stat("/dangling"), "ENOENT"),
    "symlink": (lambda d: d.symlink("file", "/link"), "ENOTSUP"),
    "link": (lambda d: d.link("/file", "/hard"), "ENOTSUP"),
    "utimens": (lambda d: d.utimens("/file", None), "ENOTSUP"),
    "chmod_setuid": (lambda d: d.chmod("/file", 0o4755), "ENOTSUP"),
}


def test_XRootDDriver_errno_names(xrd: Driver, xrootd_server: RunningServer) -> None:
    xrd.mkdir("/dir")
    xrd.write_file("/dir/inside", b"")
    xrd.write_file("/file", b"")
    os.symlink("loop", xrootd_server.data_dir / "loop")  # XRootD cannot make symlinks
    os.symlink("nowhere", xrootd_server.data_dir / "dangling")
    got = {case: errno_name(lambda c=call: c(xrd)) for case, (call, _) in ERRNO_CASES.items()}
    assert got == {case: expected for case, (_, expected) in ERRNO_CASES.items()}
    assert not (xrootd_server.data_dir / "nope").exists()  # nothing made behind our back


def test_XRootDDriver_one_writer_per_file(xrd: Driver, xrootd_server: RunningServer) -> None:
    """Our own handles on one file share the server's handle; another client gets EBUSY."""
    xrd.write_file("/f", b"")
    reader = xrd.open("/f", os.O_RDONLY)
    writer = xrd.open("/f", os.O_RDWR)
    again = xrd.open("/f", os.O_RDONLY)
    xrd.pwrite(writer, b"shared", 0)
    assert xrd.pread(again, 10, 0) == b"shared"
    assert errno_name(lambda: xrd.pwrite(reader, b"x", 0)) == "EBADF"
    with xrootd_server.driver(timeout=10) as other:
        assert errno_name(lambda: other.open("/f", os.O_RDONLY)) == "EBUSY"
    for h in (reader, writer, again):
        xrd.close(h)
    assert xrd.read_file("/f") == b"shared"


def test_XRootDDriver_quirk_interviews_are_counted(xrd: Driver) -> None:
    xrd.mkdir("/d")
    before = xrd.counters.snapshot()
    assert errno_name(lambda: xrd.mkdir("/d")) == "EEXIST"  # the server would say yes
    xrd.stat("/d")
    delta = xrd.counters.difference(xrd.counters.snapshot(), before)
    assert delta["mkdir"].round_trips == 1  # the stat that found it; no MKDIR was sent
    assert delta["stat"].round_trips == 1
    assert delta["stat"].bytes_sent > 24 and delta["stat"].bytes_received > 8
    assert xrd.counters.total().connections == 1


def test_XRootDDriver_lists_dangling_symlinks(xrd: Driver, xrootd_server: RunningServer) -> None:
    xrd.mkdir("/d")
    xrd.write_file("/d/file", b"")
    os.symlink("nowhere", xrootd_server.data_dir / "d" / "dangling")
    kinds = {e.name: e.type for e in xrd.readdir("/d")}
    assert kinds == {"file": FileType.REGULAR, "dangling": FileType.UNKNOWN}


def test_errno_for_status_reads_the_server_text() -> None:
    class Status:
        code, errno = 400, 3005
        message = "[ERROR] Server responded with an error: [3005] Unable to remove /d; directory not empty\n"

    assert errno_for_status(Status()) == errno.ENOTEMPTY
    Status.message = "[ERROR] Server responded with an error: [3005] Unable to do /d; gibberish"
    assert errno_for_status(Status()) == 0  # ambiguous: the driver interviews
    Status.code, Status.errno = 206, 0  # errOperationExpired
    assert errno_for_status(Status()) == errno.ETIMEDOUT


def test_XRootDDriver_times_out_on_a_dead_port() -> None:
    with XRootDDriver("127.0.0.1", 1, timeout=1) as driver:
        assert errno_name(lambda: driver.stat("/")) in ("ETIMEDOUT", "ECONNREFUSED")


def test_aviary_fs_round_trip(
    xrootd_server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local = tmp_path / "in.txt"
    local.write_text("over xrootd\n")
    fs_round_trip(xrootd_server, local, capsys)


def test_program_under_the_agent_reads_what_was_written(
    xrd: Driver, xrootd_server: RunningServer
) -> None:
    xrd.write_file("/f", b"written over xrootd\n")
    prefix = f"/xrootd/127.0.0.1:{xrootd_server.port}"
    done = run_under_agent(
        "sh", "-c", f"cat {prefix}/f && echo more > {prefix}/g", env=xrootd_server.client_env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "written over xrootd\n"
    assert xrd.read_file("/g") == b"more\n"


def test_XRootDDriver_makes_no_name_its_listing_would_cut(
    xrd: Driver, xrootd_server: RunningServer
) -> None:
    """The server lists a 255-byte name as its first 254 bytes, a name that is not there."""
    xrd.mkdir("/d")
    longest, cut = "n" * 254, "m" * 255
    xrd.write_file(f"/d/{longest}", b"kept")
    assert [e.name for e in xrd.readdir("/d")] == [longest]
    assert errno_name(lambda: xrd.write_file(f"/d/{cut}", b"")) == "ENAMETOOLONG"
    assert errno_name(lambda: xrd.mkdir(f"/d/{cut}")) == "ENAMETOOLONG"
    assert errno_name(lambda: xrd.rename(f"/d/{longest}", f"/d/{cut}")) == "ENAMETOOLONG"
    assert sorted(os.listdir(xrootd_server.data_dir / "d")) == [longest]
    # Made behind the server, the cut name fails the listing instead of naming nothing.
    (xrootd_server.data_dir / "d" / cut).write_bytes(b"")
    assert errno_name(lambda: xrd.readdir("/d")) == "EIO"
    assert xrd.stat(f"/d/{cut}").st_size == 0  # the whole name still reaches it


def test_XRootDDriver_names_of_open_files(xrd: Driver) -> None:
    """A rename onto itself keeps the open file's name; a name the server keeps busy for an
    unlinked file still open is missing to a reader (ENOENT), busy only to a creator."""
    h = xrd.open("/a", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        xrd.pwrite(h, b"kept", 0)
        xrd.rename("/a", "/a")
        assert xrd.read_file("/a") == b"kept"  # not EBUSY: the driver's own handle is shared
        xrd.unlink("/a")
        assert errno_name(lambda: xrd.read_file("/a")) == "ENOENT"
        assert errno_name(lambda: xrd.write_file("/a", b"")) == "EBUSY"  # declared: busy_names
    finally:
        xrd.close(h)
    xrd.write_file("/a", b"new")
    assert xrd.read_file("/a") == b"new"


@pytest.mark.parametrize(
    ("renamed", "to", "old", "new"),
    [("/a", "/b", "/a", "/b"), ("/d", "/e", "/d/f", "/e/f")],
)
def test_XRootDDriver_open_files_follow_renames(
    xrd: Driver, renamed: str, to: str, old: str, new: str
) -> None:
    """A file open for writing, renamed through the driver (itself or its directory), opens
    for writing again under its new name: the new handle shares the server's one."""
    xrd.mkdir("/d")
    writer = xrd.open(old, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        xrd.pwrite(writer, b"moved", 0)
        xrd.rename(renamed, to)
        if renamed == "/d":
            xrd.mkdir("/d")  # the old parent again, so that only the busy name can fail
        again = xrd.open(new, os.O_WRONLY)
        try:
            xrd.pwrite(again, b"M", 0)
        finally:
            xrd.close(again)
        # The old name is still busy (busy_names): the server's handle is not moved, ours is.
        assert errno_name(lambda: xrd.open(old, os.O_WRONLY | os.O_CREAT, 0o644)) == "EBUSY"
    finally:
        xrd.close(writer)
    assert xrd.read_file(new) == b"Moved"


def test_XRootDDriver_rename_reports_errors_in_linux_order(xrd: Driver) -> None:
    """Linux walks to both parents (the old one first), then looks the old name up."""
    xrd.write_file("/file", b"")
    assert errno_name(lambda: xrd.rename("/file/z", "/missing/f")) == "ENOTDIR"
    assert errno_name(lambda: xrd.rename("/nothing", "/file/x")) == "ENOTDIR"
    assert errno_name(lambda: xrd.rename("/nothing", "/missing/f")) == "ENOENT"
    assert errno_name(lambda: xrd.rename("/file", "/missing/f")) == "ENOENT"
    too_long = "n" * 300
    assert errno_name(lambda: xrd.mkdir(f"/missing/{too_long}")) == "ENOENT"
    assert errno_name(lambda: xrd.mkdir(f"/file/{too_long}")) == "ENOTDIR"
    assert errno_name(lambda: xrd.mkdir(f"/{too_long}")) == "ENAMETOOLONG"
