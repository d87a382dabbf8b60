"""Named semantic probes: each test's name is the POSIX promise it checks.

Every probe runs on the system under test (a fresh directory of its own) and,
where POSIX itself decides, also on the local oracle: a probe fails when the
system answers differently from Linux, and its evidence says how.
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.plugin import Evidence, Way
from conformance.test_machine import paths_for
from drivers import STAT_FIELDS, Driver, FileType
from drivers.local import LocalDriver


def errno_of(call: object, *args: object) -> int | None:
    assert callable(call)
    try:
        call(*args)
    except OSError as exc:
        return exc.errno
    return None


def names(driver: Driver, path: str) -> list[str]:
    return sorted(e.name for e in driver.readdir(path))


def _payload(size: int) -> bytes:
    block = bytes((i * 7 + size) % 256 for i in range(251))
    return (block * (size // 251 + 1))[:size]


# -- open files and names ---------------------------------------------------------------------


#: The named probes over generated names and sizes: a few examples each, as properties.
PROPERTY_SETTINGS = settings(
    max_examples=6,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
PAYLOADS = st.builds(_payload, st.sampled_from((1, 511, 4096, 4097, 65537, (1 << 20) + 1)))


def _names(way: Way) -> st.SearchStrategy[str]:
    """Top-level names the driver can keep: spaces, unicode, dots, 255 bytes where claimed."""
    return st.sampled_from(sorted({p.rsplit("/", 1)[1] for p in paths_for(way.capabilities)}))


def _two_names(data: st.DataObject, way: Way) -> tuple[str, str]:
    first = data.draw(_names(way), label="name")
    second = data.draw(_names(way).filter(lambda n: n != first), label="new name")
    return f"/{first}", f"/{second}"


def _remove(driver: Driver, *paths: str) -> None:
    for path in paths:
        errno_of(driver.unlink, path)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_rename_while_open(
    system: Driver, way: Way, evidence: Evidence, data: st.DataObject
) -> None:
    old, new = _two_names(data, way)
    contents = data.draw(PAYLOADS, label="contents")
    try:
        system.write_file(old, contents)
        h = system.open(old, os.O_RDONLY)
        try:
            system.rename(old, new)
            got = system.pread(h, len(contents) + 1, 0)
            if got != contents:
                evidence.add(
                    f"{old!r} renamed while open: read {len(got)} of {len(contents)} bytes"
                )
            assert got == contents
        finally:
            system.close(h)
        assert system.read_file(new) == contents
        assert errno_of(system.stat, old) == errno.ENOENT
    finally:
        _remove(system, old, new)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_unlink_while_open(
    system: Driver, way: Way, evidence: Evidence, data: st.DataObject
) -> None:
    name = "/" + data.draw(_names(way), label="name")
    contents = data.draw(PAYLOADS, label="contents")
    offset = data.draw(st.sampled_from((0, 1, len(contents) // 2, len(contents))), label="offset")
    expected = contents[:offset] + b"STILL" + contents[offset + 5 :]
    try:
        system.write_file(name, contents)
        h = system.open(name, os.O_RDWR)
        try:
            system.unlink(name)
            assert errno_of(system.stat, name) == errno.ENOENT
            system.pwrite(h, b"STILL", offset)
            got = system.pread(h, len(expected) + 1, 0)
            if got != expected:
                evidence.add(f"{name!r} unlinked while open: read {got[:20]!r}...")
            assert got == expected
        finally:
            system.close(h)
        assert name[1:] not in names(system, "/")
    finally:
        _remove(system, name)


def test_open_close_name_binding(system: Driver, evidence: Evidence) -> None:
    """Writes go to the object opened, not to whatever has its name at close (get/put drivers)."""
    h = system.open("/f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        system.pwrite(h, b"AAA", 0)
        system.rename("/f", "/moved")
        system.write_file("/f", b"new file")
        system.pwrite(h, b"BBB", 3)
    finally:
        system.close(h)
    moved, fresh = system.read_file("/moved"), system.read_file("/f")
    evidence.add(f"moved={moved!r} f={fresh!r}")
    assert (moved, fresh) == (b"AAABBB", b"new file")


def test_range_reads(system: Driver, seed: Driver) -> None:
    """Reads at any offset return exactly those bytes; past the end, nothing."""
    data = bytes(range(256)) * 64
    seed.write_file("/big", data)
    h = system.open("/big", os.O_RDONLY)
    try:
        assert system.pread(h, 10, 5000) == data[5000:5010]
        assert system.pread(h, 1, 0) == data[:1]
        assert system.pread(h, 100, len(data) - 10) == data[-10:]
        assert system.pread(h, 5, len(data) + 7) == b""
        assert system.pread(h, len(data) + 100, 0) == data
    finally:
        system.close(h)


def test_random_access(system: Driver) -> None:
    h = system.open("/r", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        assert system.pwrite(h, b"0123456789", 0) == 10
        assert system.pwrite(h, b"xy", 4) == 2
        assert system.pwrite(h, b"end", 20) == 3
        assert system.pread(h, 4, 3) == b"3xy6"
        assert system.pread(h, 100, 8) == b"89" + b"\0" * 10 + b"end"
        assert system.pread(h, 5, 23) == b""
    finally:
        system.close(h)
    assert system.stat("/r").st_size == 23


def test_read_write_open_reads_the_file(system: Driver) -> None:
    # An O_RDWR open of an existing file reads what is there before any write, and a write
    # through it keeps the rest (a driver that copies the file at open must serve both).
    system.write_file("/rw", b"0123456789")
    h = system.open("/rw", os.O_RDWR)
    try:
        assert system.pread(h, 4, 3) == b"3456"
        assert system.pwrite(h, b"X", 0) == 1
        assert system.pread(h, 3, 0) == b"X12"
    finally:
        system.close(h)
    assert system.read_file("/rw") == b"X123456789"


def test_append(system: Driver) -> None:
    system.write_file("/log", b"one\n")
    h = system.open("/log", os.O_WRONLY | os.O_APPEND)
    try:
        system.pwrite(h, b"two\n", 0)
    finally:
        system.close(h)
    assert system.read_file("/log") == b"one\ntwo\n"


def test_exclusive_create(system: Driver) -> None:
    system.close(system.open("/x", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    assert errno_of(system.open, "/x", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644) == errno.EEXIST
    assert errno_of(system.open, "/absent", os.O_RDONLY) == errno.ENOENT


def test_truncate_up_and_down(system: Driver) -> None:
    system.write_file("/t", b"0123456789")
    system.truncate("/t", 3)
    assert system.read_file("/t") == b"012"
    system.truncate("/t", 6)
    assert system.read_file("/t") == b"012\0\0\0"
    h = system.open("/t", os.O_RDWR)
    try:
        system.ftruncate(h, 1)
        assert system.fstat(h).st_size == 1
    finally:
        system.close(h)


def test_create_mode_honoured(system: Driver, evidence: Evidence) -> None:
    system.close(system.open("/m", os.O_WRONLY | os.O_CREAT, 0o640))
    system.mkdir("/d", 0o750)
    modes = (
        stat_module.S_IMODE(system.stat("/m").st_mode),
        stat_module.S_IMODE(system.stat("/d").st_mode),
    )
    evidence.add(f"created 0640 -> {modes[0]:o}, mkdir 0750 -> {modes[1]:o} (umask 022)")
    assert modes == (0o640, 0o750)


def test_chmod(system: Driver) -> None:
    system.write_file("/c", b"")
    system.chmod("/c", 0o604)
    assert stat_module.S_IMODE(system.stat("/c").st_mode) == 0o604


def test_utimens_seconds(system: Driver) -> None:
    system.write_file("/u", b"")
    system.utimens("/u", (1_000_000_000 * 10**9, 1_100_000_000 * 10**9))
    assert system.stat("/u").st_mtime_ns == 1_100_000_000 * 10**9


def test_utimens_while_open(system: Driver, evidence: Evidence) -> None:
    """Times set on a file open for writing (``cp -p``'s futimens before close) are still
    there after the close: a close that sends the file must not stamp its own clock."""
    handle = system.open("/w", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        system.pwrite(handle, b"written", 0)
        system.utimens("/w", (1_000_000_000 * 10**9, 1_100_000_000 * 10**9))
    finally:
        system.close(handle)
    got = system.stat("/w").st_mtime_ns
    evidence.add(f"mtime set to 1100000000 s while open, {got / 1e9:.0f} s after close")
    assert got == 1_100_000_000 * 10**9


def test_utimens_nanoseconds(system: Driver, evidence: Evidence) -> None:
    system.write_file("/u", b"")
    system.utimens("/u", (1_000_000_000_123_456_789, 1_100_000_000_987_654_321))
    got = system.stat("/u").st_mtime_ns
    evidence.add(f"mtime set to 1100000000.987654321 s, read back {got / 1e9:.9f} s")
    assert got == 1_100_000_000_987_654_321


# -- stat completeness ----------------------------------------------------------------------------


@pytest.mark.parametrize("field", STAT_FIELDS)
def test_stat_completeness(
    system: Driver, seed: Driver, backing: Path, field: str, evidence: Evidence
) -> None:
    """Each field is exact (as the server's own filesystem says), synthesised, or missing."""
    seed.write_file("/s", b"x" * 5000)
    reported = getattr(system.stat("/s"), field)
    truth = getattr(os.stat(backing / "s"), field)
    verdict = "exact" if reported == truth else "missing" if reported == 0 else "synthesised"
    if field in system.stat("/s").synthesized:
        verdict = "synthesised"
    evidence.add(f"{field}: {verdict} (reported {reported}, the file has {truth})")
    assert verdict == "exact"


# -- directory listings ---------------------------------------------------------------------------

LISTING_NAMES = {
    "dotfiles": [".hidden", ".also", "visible"],
    "spaces": ["with space", " leading", "trailing "],
    "unicode": ["café", "数据", "emoji✓"],
    "newlines": ["new\nline", "tab\there"],
}


@pytest.mark.parametrize("kind", sorted(LISTING_NAMES))
def test_listing_names(system: Driver, seed: Driver, kind: str, evidence: Evidence) -> None:
    seed.mkdir("/d")
    for name in LISTING_NAMES[kind]:
        seed.write_file(f"/d/{name}", b"")
    listed = names(system, "/d")
    evidence.add(f"listed {listed!r}")
    assert listed == sorted(LISTING_NAMES[kind])


def test_listing_types_and_subdirectories(system: Driver, seed: Driver) -> None:
    seed.mkdir("/d")
    seed.mkdir("/d/sub")
    seed.write_file("/d/file", b"")
    seed.symlink("file", "/d/link")
    types = {e.name: e.type for e in system.readdir("/d")}
    assert types == {"sub": FileType.DIRECTORY, "file": FileType.REGULAR, "link": FileType.SYMLINK}


def test_listing_empty_versus_missing(system: Driver, seed: Driver) -> None:
    seed.mkdir("/empty")
    assert system.readdir("/empty") == []
    assert errno_of(system.readdir, "/missing") == errno.ENOENT


def test_listing_many_entries(system: Driver, seed: Driver) -> None:
    seed.mkdir("/many")
    expected = [f"entry{i:04d}" for i in range(1100)]
    for name in expected:
        h = seed.open(f"/many/{name}", os.O_WRONLY | os.O_CREAT, 0o644)
        seed.close(h)
    assert names(system, "/many") == expected


# -- links and directories --------------------------------------------------------------------------


def test_symlinks(system: Driver, seed: Driver) -> None:
    seed.write_file("/target", b"pointed at")
    seed.symlink("target", "/link")
    seed.symlink("nowhere", "/dangling")
    assert system.readlink("/link") == "target"
    assert system.lstat("/link").is_lnk() and system.stat("/link").is_reg()
    assert system.read_file("/link") == b"pointed at"
    assert errno_of(system.stat, "/dangling") == errno.ENOENT
    assert system.lstat("/dangling").is_lnk()


def test_hard_links(system: Driver) -> None:
    system.write_file("/a", b"shared")
    system.link("/a", "/b")
    a, b = system.stat("/a"), system.stat("/b")
    assert (a.st_ino, a.st_nlink) == (b.st_ino, 2)
    system.unlink("/a")
    assert system.read_file("/b") == b"shared" and system.stat("/b").st_nlink == 1


def test_directory_operations(system: Driver) -> None:
    system.mkdir("/d")
    system.mkdir("/d/e")
    system.write_file("/d/e/f", b"deep")
    system.rename("/d", "/renamed")
    assert system.read_file("/renamed/e/f") == b"deep"
    assert errno_of(system.rmdir, "/renamed") == errno.ENOTEMPTY
    system.unlink("/renamed/e/f")
    system.rmdir("/renamed/e")
    system.rmdir("/renamed")
    assert names(system, "/") == []


def test_rename_onto_empty_directory(system: Driver) -> None:
    system.mkdir("/from")
    system.write_file("/from/f", b"moved")
    system.mkdir("/onto")
    system.rename("/from", "/onto")
    assert system.read_file("/onto/f") == b"moved"


def test_errno_precedence(system: Driver, oracle: LocalDriver, evidence: Evidence) -> None:
    """Several errors apply: the one Linux reports first (the old name is missing)."""
    for driver in (system, oracle):
        driver.write_file("/file", b"")
    expected = errno_of(oracle.link, "/missing", "/file/x")
    got = errno_of(system.link, "/missing", "/file/x")
    evidence.add(
        f"link(missing, file/x): Linux {errno.errorcode[expected or 0]}, got {errno.errorcode.get(got or 0)}"
    )
    assert got == expected


# -- error precision ------------------------------------------------------------------------------------

ERRNO_CASES = {
    "missing_file": (lambda d: d.stat("/nope"), errno.ENOENT),
    "is_a_directory": (lambda d: d.open("/dir", os.O_WRONLY), errno.EISDIR),
    "not_a_directory": (lambda d: d.readdir("/file"), errno.ENOTDIR),
    "not_empty": (lambda d: d.rmdir("/dir"), errno.ENOTEMPTY),
    "exists": (lambda d: d.mkdir("/dir"), errno.EEXIST),
    "unlink_directory": (lambda d: d.unlink("/dir"), errno.EISDIR),
    "rmdir_file": (lambda d: d.rmdir("/file"), errno.ENOTDIR),
    "component_not_a_directory": (lambda d: d.stat("/file/child"), errno.ENOTDIR),
    "symlink_loop": (lambda d: d.stat("/loop"), errno.ELOOP),
    "missing_parent_create": (
        lambda d: d.open("/nodir/f", os.O_WRONLY | os.O_CREAT, 0o644),
        errno.ENOENT,
    ),
    "missing_parent_mkdir": (lambda d: d.mkdir("/nodir/d"), errno.ENOENT),
    "missing_parent_rename": (lambda d: d.rename("/file", "/nodir/f"), errno.ENOENT),
    "rename_into_own_subtree": (lambda d: d.rename("/dir", "/dir/sub"), errno.EINVAL),
}


#: What Linux answers instead on a read-only mount (measured on a tmpfs remounted ro): rmdir
#: and unlink ask for write access before they look at the name; mkdir and open do not.
READ_ONLY_ERRNOS = {
    "not_empty": errno.EROFS,
    "unlink_directory": errno.EROFS,
    "rmdir_file": errno.EROFS,
    "rename_into_own_subtree": errno.EROFS,
}


@pytest.mark.parametrize("case", sorted(ERRNO_CASES))
def test_errno(
    system: Driver,
    seed: Driver,
    backing: Path,
    oracle: LocalDriver,
    way: Way,
    case: str,
    evidence: Evidence,
) -> None:
    call, expected = ERRNO_CASES[case]
    for driver in (seed, oracle):
        driver.mkdir("/dir")
        driver.write_file("/dir/inside", b"")
        driver.write_file("/file", b"")
    oracle.symlink("loop", "/loop")
    if case == "symlink_loop" and errno_of(seed.symlink, "loop", "/loop") is not None:
        # The protocol cannot make symlinks: make the loop on the server's own disk.
        os.symlink("loop", backing / "loop")
        evidence.add("the loop was made behind the server's back (the protocol cannot)")
    got = errno_of(call, system)
    assert errno_of(call, oracle) == expected  # the oracle agrees with the expectation
    if way.read_only:
        expected = READ_ONLY_ERRNOS.get(case, expected)
    evidence.add(f"expected {errno.errorcode[expected]}, got {errno.errorcode.get(got or 0, got)}")
    assert got == expected


def test_errno_permission_denied(system: Driver, way: Way, evidence: Evidence) -> None:
    """EACCES where the server's access control says no (a Chirp ACL; mode bits locally)."""
    system.mkdir("/locked")
    assert hasattr(system, "root")
    locked = f"{system.root}/locked"
    if way.setup.protocol == "chirp":
        direct = way.direct
        setacl = getattr(direct, "setacl", None)
        if setacl is None:
            pytest.skip("this chirp driver has no setacl to make a locked directory")
        setacl(locked, "address:127.0.0.1", "rl")
    elif os.geteuid() == 0:
        pytest.skip(
            "running as root: mode bits deny root nothing, so local EACCES cannot be provoked"
        )
    else:
        way.direct.chmod(locked, 0o500)
    got = errno_of(system.write_file, "/locked/f", b"x")
    evidence.add(f"writing into a read-only directory: {errno.errorcode.get(got or 0, got)}")
    assert got == errno.EACCES


# -- cost -----------------------------------------------------------------------------------------------


def test_connections_per_operation(system: Driver, way: Way, evidence: Evidence) -> None:
    """One connection serves many operations (no connection per file or per call)."""
    if way.through != "direct":
        pytest.skip("through the agent or a mount the connections are theirs, not visible here")
    before = way.direct.counters.total().connections
    for i in range(20):
        system.write_file(f"/c{i}", b"x")
        system.stat(f"/c{i}")
        system.read_file(f"/c{i}")
    opened = way.direct.counters.total().connections - before
    evidence.add(f"connections opened for 60 operations: {opened}")
    assert opened <= 1
