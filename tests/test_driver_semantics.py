"""The same POSIX promises, checked on the local driver and on both Chirp servers.

Each test runs on ``local`` (a temporary directory), ``chirp/cctools`` and
``chirp/aviary``; where Chirp cannot keep a promise the test says so by name.
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers import Driver, FileType
from drivers.local import LocalDriver
from servers import RunningServer
from tests.helpers import start_or_skip

TARGETS = ("local", "chirp/cctools", "chirp/aviary")


@pytest.fixture(params=TARGETS)
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Driver]:
    if request.param == "local":
        with LocalDriver(tmp_path) as local:
            yield local
        return
    server: RunningServer = start_or_skip(request.param)
    try:
        with server.driver(timeout=10.0) as remote:
            yield remote
    finally:
        server.stop()


def errno_of(call: object, *args: object) -> int:
    assert callable(call)
    with pytest.raises(OSError) as info:
        call(*args)
    assert info.value.errno is not None
    return info.value.errno


def test_write_then_read_at_offsets(driver: Driver) -> None:
    h = driver.open("/f", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        assert driver.pwrite(h, b"hello world", 0) == 11
        assert driver.pread(h, 5, 6) == b"world"
        assert driver.pwrite(h, b"XY", 20) == 2  # a hole up to offset 20
        assert driver.pread(h, 100, 9) == b"ld" + b"\0" * 9 + b"XY"
        assert driver.pread(h, 10, 22) == b""  # end of file
        assert driver.fstat(h).st_size == 22
        driver.fsync(h)
    finally:
        driver.close(h)
    assert driver.read_file("/f")[:5] == b"hello"


def test_stat_has_every_field(driver: Driver) -> None:
    driver.write_file("/f", b"12345")
    st = driver.stat("/f")
    assert st.file_type is FileType.REGULAR and st.st_size == 5 and st.st_nlink == 1
    assert st.st_ino > 0 and st.st_blksize > 0 and st.st_mtime_ns > 0
    assert not st.synthesized
    assert driver.stat("/").is_dir()


def test_readdir_names_and_types(driver: Driver) -> None:
    driver.mkdir("/d")
    driver.write_file("/d/file", b"")
    driver.mkdir("/d/sub")
    driver.symlink("file", "/d/link")
    driver.write_file("/d/.dot", b"")
    entries = {e.name: e.type for e in driver.readdir("/d")}
    assert entries == {
        "file": FileType.REGULAR,
        "sub": FileType.DIRECTORY,
        "link": FileType.SYMLINK,
        ".dot": FileType.REGULAR,
    }
    assert driver.readdir("/d/sub") == []


@pytest.mark.parametrize("name", ["with space", "new\nline", "unicodé ✓", "per%cent", "quote'\""])
def test_awkward_names_round_trip(driver: Driver, name: str) -> None:
    driver.write_file("/" + name, name.encode())
    assert [e.name for e in driver.readdir("/") if not e.name.startswith(".__")] == [name]
    assert driver.read_file("/" + name) == name.encode()
    driver.rename("/" + name, "/" + name + "2")
    assert driver.stat("/" + name + "2").st_size == len(name.encode())


def test_namespace_operations(driver: Driver) -> None:
    driver.mkdir("/a")
    driver.write_file("/a/f", b"data")
    driver.rename("/a/f", "/a/g")
    driver.link("/a/g", "/a/h")
    assert driver.stat("/a/h").st_nlink == 2
    driver.symlink("g", "/a/s")
    assert driver.readlink("/a/s") == "g"
    assert driver.lstat("/a/s").is_lnk()
    assert driver.stat("/a/s").st_size == 4
    for name in ("g", "h", "s"):
        driver.unlink(f"/a/{name}")
    driver.rmdir("/a")
    assert errno_of(driver.stat, "/a") == errno.ENOENT


def test_truncate_up_and_down(driver: Driver) -> None:
    driver.write_file("/t", b"0123456789")
    driver.truncate("/t", 4)
    assert driver.read_file("/t") == b"0123"
    h = driver.open("/t", os.O_RDWR)
    try:
        driver.ftruncate(h, 6)
        assert driver.pread(h, 10, 0) == b"0123\0\0"
    finally:
        driver.close(h)


def test_exclusive_create_and_append(driver: Driver) -> None:
    h = driver.open("/x", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    driver.close(h)
    assert errno_of(driver.open, "/x", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600) == errno.EEXIST
    driver.write_file("/log", b"one\n")
    h = driver.open("/log", os.O_WRONLY | os.O_APPEND)
    try:
        driver.pwrite(h, b"two\n", 0)  # Linux appends whatever the offset
    finally:
        driver.close(h)
    assert driver.read_file("/log") == b"one\ntwo\n"


def test_error_precision(driver: Driver) -> None:
    driver.mkdir("/dir")
    driver.write_file("/dir/file", b"x")
    assert errno_of(driver.stat, "/missing") == errno.ENOENT
    assert errno_of(driver.open, "/missing", os.O_RDONLY) == errno.ENOENT
    assert errno_of(driver.open, "/dir", os.O_WRONLY) == errno.EISDIR
    assert errno_of(driver.readdir, "/dir/file") == errno.ENOTDIR
    assert errno_of(driver.stat, "/dir/file/child") == errno.ENOTDIR
    assert errno_of(driver.rmdir, "/dir") == errno.ENOTEMPTY
    assert errno_of(driver.mkdir, "/dir") == errno.EEXIST
    assert errno_of(driver.unlink, "/dir") == errno.EISDIR
    assert errno_of(driver.rmdir, "/dir/file") == errno.ENOTDIR
    assert errno_of(driver.readlink, "/dir/file") == errno.EINVAL
    assert errno_of(driver.access, "/missing", os.F_OK) == errno.ENOENT
    h = driver.open("/dir/file", os.O_RDONLY)
    driver.close(h)
    assert errno_of(driver.pread, h, 1, 0) == errno.EBADF


def test_open_flags_the_protocol_lacks_are_emulated(driver: Driver) -> None:
    driver.write_file("/f", b"x")
    driver.symlink("f", "/link")
    assert errno_of(driver.open, "/link", os.O_RDONLY | os.O_NOFOLLOW) == errno.ELOOP
    assert errno_of(driver.open, "/f", os.O_RDONLY | os.O_DIRECTORY) == errno.ENOTDIR
    driver.close(driver.open("/", os.O_RDONLY | os.O_DIRECTORY))


def test_chmod_and_utimens(driver: Driver) -> None:
    driver.write_file("/m", b"")
    driver.chmod("/m", 0o640)
    assert stat_module.S_IMODE(driver.stat("/m").st_mode) == 0o640
    driver.utimens("/m", (1_000_000_000_000_000_000, 1_500_000_000_000_000_000))
    st = driver.stat("/m")
    assert st.st_mtime_ns == 1_500_000_000_000_000_000
    assert st.st_atime_ns == 1_000_000_000_000_000_000


def test_statfs_and_access(driver: Driver) -> None:
    fs = driver.statfs("/")
    assert fs.f_bsize > 0 and fs.f_blocks > 0 and fs.f_bavail <= fs.f_blocks
    driver.write_file("/r", b"")
    driver.access("/r", os.R_OK | os.W_OK)
