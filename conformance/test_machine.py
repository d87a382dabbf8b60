"""The random comparison: operation sequences on the system and on the protocol's model.

A hypothesis ``RuleBasedStateMachine`` applies each operation to the system
under test and to :class:`~conformance.model.Model` (local POSIX, shaped by the
driver's declared :class:`~drivers.Capabilities`) and requires the same
result, or an errno the model allows. It draws only the operations the driver
claims (no symlinks for FTP, no chmod for WebDAV; for a read-only protocol
every change is made behind the server, and the system must refuse it with
EROFS). After every step both trees must list the same names, types, contents
and claimed stat fields. Open handles live in a bundle, so several stay open
on one file across renames and unlinks. A failure shrinks to a short list of
operations, printed so it can be replayed.

A capability the driver does not claim narrows what is drawn or compared; it
never turns the comparison off.
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conformance.model import ANY, Model, Outcome, allowed_errnos, attempt
from conformance.plugin import GAP_PHASES, Way, _gap_reason, declared_gap
from conformance.rooted import Rooted
from drivers import Capabilities, Driver, FileType, Handle
from drivers.local import LocalDriver

#: Names with spaces, unicode, leading dots and a 255-byte component, three levels deep.
LONG_NAME = "n" * 255
ALL_PATHS = (
    "/a",
    "/b",
    "/d",
    "/d/x",
    "/d/e",
    "/d/e/f",
    "/a/z",
    "/with space",
    "/d/café",
    "/d/e/数据",
    "/.dot",
    "/trailing ",
    f"/d/{LONG_NAME}",
    f"/{LONG_NAME}",
)
#: Sizes either side of block (512, 4096), buffer (65536) and 1 MiB boundaries.
BIG_SIZES = (0, 511, 512, 4095, 4096, 4097, 65535, 65537, (1 << 20) + 1)
OFFSETS = st.one_of(st.integers(0, 80), st.sampled_from((511, 4096, 65536, 1 << 20)))
SIZES = st.one_of(st.integers(0, 100), st.sampled_from((4097, 65539, (1 << 20) + 7)))
FILE_MODES = (0o600, 0o640, 0o644, 0o664, 0o700, 0o755)  # owner rw: the server may be a user
DIR_MODES = (0o700, 0o711, 0o750, 0o755)  # owner rwx: the server must still enter it
ACCESS = (os.O_RDONLY, os.O_WRONLY, os.O_RDWR)
EXTRA_FLAGS = st.sampled_from((0, os.O_CREAT, os.O_CREAT | os.O_EXCL, os.O_TRUNC, os.O_APPEND))
TIMES = st.sampled_from(
    ((1_000_000_000 * 10**9, 1_100_000_000 * 10**9), (5 * 10**17 + 123, 6 * 10**17 + 987_654_321))
)


def _pattern(size: int, seed: int) -> bytes:
    block = bytes((seed + i) % 251 for i in range(251))
    return (block * (size // 251 + 1))[:size]


DATA = st.one_of(
    st.binary(max_size=64), st.builds(_pattern, st.sampled_from(BIG_SIZES), st.integers(0, 250))
)


def paths_for(caps: Capabilities) -> tuple[str, ...]:
    """The names a driver can keep: no leading dots where they are hidden, no component
    longer than it keeps, and so on."""
    paths: tuple[str, ...] = ALL_PATHS
    if caps.name_max < len(LONG_NAME):  # the longest name the protocol keeps, instead
        paths = tuple(p.replace(LONG_NAME, "n" * caps.name_max) for p in paths)
    if not caps.lists_dotfiles:
        paths = tuple(p for p in paths if not p.rsplit("/", 1)[1].startswith("."))
    if not caps.trailing_spaces:
        paths = tuple(p for p in paths if not p.endswith(" "))
    return paths


class HandlePair:
    """An open handle on both sides; its repr is what a shrunk example prints."""

    counter = 0

    def __init__(self, path: str, flags: int, system: Handle | None, oracle: Handle | None) -> None:
        HandlePair.counter += 1
        self.name = f"h{HandlePair.counter}"
        self.path, self.flags, self.system, self.oracle = path, flags, system, oracle

    def __repr__(self) -> str:
        return f"{self.name}({self.path!r}, {_flag_names(self.flags)})"


def read_only_open_answers(
    flags: int, existed: bool, is_dir: bool, writable_error: int | None
) -> set[int | None]:
    """The errors (None: success) Linux gives an open that would write on a read-only mount.

    Args:
        flags: the open's flags (a write access mode, O_CREAT or O_TRUNC).
        existed: whether the name existed before.
        is_dir: whether it is a directory.
        writable_error: what the same open without O_TRUNC answered on a writable file
            system (None: it opened).
    """
    expected: set[int | None] = {errno.EROFS}
    if writable_error:
        expected.add(writable_error)
    if is_dir and flags & os.O_TRUNC:
        expected.add(errno.EISDIR)  # checked before the mount's EROFS
    reads = flags & os.O_ACCMODE == os.O_RDONLY and not flags & os.O_TRUNC
    if existed and writable_error is None and reads:
        expected = {None}  # O_CREAT of an existing name asks nothing of the file system
    return expected


def _flag_names(flags: int) -> str:
    names = [("O_RDONLY", "O_WRONLY", "O_RDWR")[flags & os.O_ACCMODE]]
    names += [n for n in ("O_CREAT", "O_EXCL", "O_TRUNC", "O_APPEND") if flags & getattr(os, n)]
    return "|".join(names)


def make_machine(
    connect: Callable[[], tuple[Driver, Driver | None]],
    oracle: LocalDriver,
    caps: Capabilities,
    *,
    close_errors: bool = True,
) -> type[RuleBasedStateMachine]:
    """The state machine for one system: its paths, and the rules its capabilities allow.

    ``connect`` gives each example its system on an empty directory (the oracle's is
    emptied too) and, for a read-only protocol, the writer that makes its tree behind
    the server.
    """
    every = paths_for(caps)
    # Half the draws from the three top-level names, so that sequences build on each other.
    paths = st.one_of(st.sampled_from(every[:3]), st.sampled_from(every))
    writable = caps.writable
    # Behind a read-only server, what is made must stay readable by the server's account.
    dir_modes = DIR_MODES if writable else (0o755,)
    targets = ["a", "d", "missing", "d/x", "d/e"]
    if not caps.symlink_targets_escaped:
        targets.append("with space")
    compare_modes = caps.chmod or caps.create_modes or caps.forced_create_modes is not None

    class FilesystemComparison(RuleBasedStateMachine):
        """The system under test against the model of its protocol."""

        handles = Bundle("handles")

        def __init__(self) -> None:
            super().__init__()
            self.system, self.writer = connect()
            self.model = Model(oracle, caps)
            self.open_handles: list[HandlePair] = []

        # -- comparing ----------------------------------------------------------------------

        def agree(self, name: str, args: tuple[Any, ...], ours: Outcome, theirs: Outcome) -> None:
            if theirs.error is None and ours.error is None:
                same = theirs.value is ANY or ours.value == theirs.value
            elif theirs.error is not None and ours.error is not None:
                allowed = allowed_errnos(caps, oracle, name, args, theirs.error)
                same = ours.error in allowed
            else:
                same = theirs.value is ANY
            shown = ", ".join(repr(a) if not isinstance(a, bytes) else _bytes(a) for a in args)
            assert same, (
                f"{name}({shown}): system gave {_short(ours)}, the model gives {_short(theirs)}"
            )

        def both(self, name: str, *args: Any) -> Outcome:
            if not writable and name in CHANGES:
                return self.refused(name, *args)
            ours = attempt(getattr(self.system, name), *args)
            theirs = attempt(getattr(self.model, name), *args)
            self.agree(name, args, ours, theirs)
            return ours

        def refused(self, name: str, *args: Any) -> Outcome:
            """Read-only: the system must refuse (EROFS, or the error Linux checks first);
            the change is then made behind the server's back, and in the model."""
            assert self.writer is not None
            ours = attempt(getattr(self.system, name), *args)
            theirs = attempt(getattr(self.model, name), *args)
            expected = {errno.EROFS} if theirs.error is None else {errno.EROFS, theirs.error}
            assert ours.error in expected, (
                f"{name}{args!r} on a read-only system: gave {_short(ours)}, "
                f"expected {sorted(errno.errorcode[e] for e in expected)}"
            )
            if theirs.error is None:
                behind = attempt(getattr(self.writer, name), *args)
                assert behind.error is None, f"making {name}{args!r} behind the server: {behind}"
            return theirs

        # -- the namespace ------------------------------------------------------------------

        @rule(path=paths, data=DATA)
        def write_file(self, path: str, data: bytes) -> None:
            self.both("write_file", path, data)

        @rule(path=paths)
        def read_file(self, path: str) -> None:
            self.both("read_file", path)

        @rule(path=paths, mode=st.sampled_from(dir_modes))
        def mkdir(self, path: str, mode: int) -> None:
            self.both("mkdir", path, mode)

        @rule(path=paths)
        def rmdir(self, path: str) -> None:
            self.both("rmdir", path)

        @rule(path=paths)
        def unlink(self, path: str) -> None:
            if (caps.busy_names or not caps.unlink_while_open) and self.held(path):
                return  # declared: not drawn
            self.both("unlink", path)

        def held(self, *paths: str) -> bool:
            """Whether a file opened under one of ``paths`` (or below one) is open."""
            held = [h.path for h in self.open_handles if h.system is not None]
            return any(h == p or h.startswith(p.rstrip("/") + "/") for h in held for p in paths)

        @rule(old=paths, new=paths)
        def rename(self, old: str, new: str) -> None:
            if caps.busy_names and self.held(old, new):
                return  # declared: not drawn
            if not caps.rename_directories and _is_dir(oracle, old):
                return  # declared: not drawn
            if not caps.rename_over_directory and _is_dir(oracle, new) and old != new:
                # The protocol cannot replace a directory: only the errors are compared.
                ours = attempt(self.system.rename, old, new)
                theirs = attempt(oracle.rename, old, new) if not _is_dir(oracle, old) else None
                if theirs is not None:
                    self.agree("rename", (old, new), ours, theirs)
                return
            self.both("rename", old, new)

        @precondition(lambda self: caps.hard_links)
        @rule(old=paths, new=paths)
        def link(self, old: str, new: str) -> None:
            self.both("link", old, new)

        @precondition(lambda self: caps.symlinks)
        @rule(contents=st.sampled_from(targets), path=paths)
        def symlink(self, contents: str, path: str) -> None:
            self.both("symlink", contents, path)

        @precondition(lambda self: caps.symlinks)
        @rule(path=paths)
        def readlink(self, path: str) -> None:
            self.both("readlink", path)

        @precondition(lambda self: caps.truncate_by_path)
        @rule(path=paths, length=OFFSETS)
        def truncate(self, path: str, length: int) -> None:
            self.both("truncate", path, length)

        @precondition(lambda self: caps.chmod)
        @rule(
            path=paths, file_mode=st.sampled_from(FILE_MODES), dir_mode=st.sampled_from(DIR_MODES)
        )
        def chmod(self, path: str, file_mode: int, dir_mode: int) -> None:
            target_is_dir = bool(attempt(lambda p: oracle.stat(p).is_dir(), path).value)
            self.both("chmod", path, dir_mode if target_is_dir else file_mode)

        @precondition(lambda self: caps.utimens)
        @rule(path=paths, times=TIMES)
        def utimens(self, path: str, times: tuple[int, int]) -> None:
            if not caps.utimens_directories and _is_dir(oracle, path):
                return
            if self.both("utimens", path, times).error is None:
                resolution = caps.time_resolution_ns
                ours = attempt(lambda p: self.system.stat(p).st_mtime_ns // resolution, path)
                theirs = attempt(lambda p: oracle.stat(p).st_mtime_ns // resolution, path)
                self.agree("stat(...).st_mtime_ns after utimens", (path,), ours, theirs)

        @rule(path=paths, follow=st.booleans())
        def stat(self, path: str, follow: bool) -> None:
            name = "stat" if follow else "lstat"
            ours = attempt(lambda p: self.shape(getattr(self.system, name)(p)), path)
            theirs = attempt(lambda p: self.shape(getattr(oracle, name)(p)), path)
            self.agree(name, (path,), ours, theirs)

        def shape(self, st_: Any) -> dict[str, object]:
            """The stat fields the driver claims, that two file systems can share."""
            kind = stat_module.S_IFMT(st_.st_mode)
            shape: dict[str, object] = {"type": FileType.from_mode(st_.st_mode).value}
            if compare_modes and kind != stat_module.S_IFLNK:
                shape["mode"] = oct(stat_module.S_IMODE(st_.st_mode))
            if kind == stat_module.S_IFREG:
                shape["size"] = st_.st_size  # a directory's size is the server's
                if caps.link_counts and caps.hard_links:
                    shape["nlink"] = st_.st_nlink
            return shape

        @rule(path=st.sampled_from(["/", "/d", "/a", "/d/e", "/missing"]))
        def readdir(self, path: str) -> None:
            ours = attempt(lambda p: _listing(self.system.readdir(p)), path)
            theirs = attempt(lambda p: _listing(oracle.readdir(p)), path)
            self.agree("readdir", (path,), ours, theirs)

        # -- open files ---------------------------------------------------------------------

        @rule(
            target=handles,
            path=paths,
            access=st.sampled_from(ACCESS),
            extra=EXTRA_FLAGS,
            mode=st.sampled_from(FILE_MODES[:3]),
        )
        def open(self, path: str, access: int, extra: int, mode: int) -> HandlePair:
            if access == os.O_RDONLY:
                # O_RDONLY|O_TRUNC is undefined by POSIX; O_RDONLY|O_APPEND changes no read
                # (and Chirp servers refuse it on a directory).
                extra &= ~(os.O_TRUNC | os.O_APPEND)
                if not caps.create_read_only:
                    extra &= ~os.O_CREAT  # declared: not drawn
            flags = access | extra
            if (
                not caps.exclusive_create_on_symlinks
                and flags & os.O_EXCL
                and attempt(lambda p: oracle.lstat(p).is_lnk(), path).value
            ):
                return HandlePair(path, flags, None, None)  # declared: not drawn
            if not writable and (access != os.O_RDONLY or extra & (os.O_CREAT | os.O_TRUNC)):
                self._refused_open(path, flags, mode)
                return HandlePair(path, flags, None, None)
            ours = attempt(self.system.open, path, flags, mode)
            theirs = attempt(self.model.open, path, flags, mode)
            if ours.error is None and theirs.error is None:
                pair = HandlePair(path, flags, ours.value, theirs.value)
                self.open_handles.append(pair)
                return pair
            for side, outcome in ((self.system, ours), (self.model, theirs)):
                if outcome.error is None:
                    side.close(outcome.value)
            self.agree("open", (path, _Flags(flags), mode), ours, theirs)
            return HandlePair(path, flags, None, None)

        def _refused_open(self, path: str, flags: int, mode: int) -> None:
            ours = attempt(self.system.open, path, flags, mode)
            if ours.error is None:
                self.system.close(ours.value)
            before = attempt(oracle.lstat, path)
            existed = before.error is None
            is_dir = existed and before.value.is_dir()
            theirs = attempt(oracle.open, path, flags & ~os.O_TRUNC, mode)
            if theirs.error is None:
                oracle.close(theirs.value)
                if not existed:
                    oracle.unlink(path)  # only asked: a read-only system makes nothing
            expected = read_only_open_answers(flags, existed, is_dir, theirs.error)
            assert ours.error in expected, (
                f"open({path!r}, {_flag_names(flags)}) on a read-only system: gave {_short(ours)}"
            )

        @rule(handle=handles, data=DATA, offset=OFFSETS)
        def pwrite(self, handle: HandlePair, data: bytes, offset: int) -> None:
            if handle.system is not None:
                self.pair_call("pwrite", handle, data, offset)

        @rule(handle=handles, size=SIZES, offset=OFFSETS)
        def pread(self, handle: HandlePair, size: int, offset: int) -> None:
            if handle.system is not None:
                self.pair_call("pread", handle, size, offset)

        @rule(handle=handles)
        def fstat_size(self, handle: HandlePair) -> None:
            if handle.system is not None:
                ours = attempt(lambda h: _file_size(self.system.fstat(h)), handle.system)
                theirs = attempt(self.model.fstat_size, handle.oracle)
                self.agree(f"fstat({handle}).st_size", (), ours, theirs)

        @rule(handle=handles, length=OFFSETS)
        def ftruncate(self, handle: HandlePair, length: int) -> None:
            if handle.system is not None and handle.flags & os.O_ACCMODE != os.O_RDONLY:
                self.pair_call("ftruncate", handle, length)

        @rule(handle=handles)
        def fsync(self, handle: HandlePair) -> None:
            if handle.system is not None and handle.flags & os.O_ACCMODE != os.O_RDONLY:
                self.pair_call("fsync", handle)

        @rule(handle=consumes(handles))
        def close(self, handle: HandlePair) -> None:
            if handle.system is not None:
                self.both_close(handle)

        def pair_call(self, name: str, handle: HandlePair, *args: Any) -> None:
            ours = attempt(getattr(self.system, name), handle.system, *args)
            theirs = attempt(getattr(self.model, name), handle.oracle, *args)
            self.agree(f"{name}[{handle}]", args, ours, theirs)

        def both_close(self, handle: HandlePair) -> None:
            ours = attempt(self.system.close, handle.system)
            theirs = attempt(self.model.close, handle.oracle)
            handle.system = handle.oracle = None
            if not close_errors and theirs.error is not None and ours.error is None:
                return  # a known difference of this way through, declared in gaps.toml
            self.agree(f"close[{handle}]", (), ours, theirs)

        # -- after every step ----------------------------------------------------------------

        @invariant()
        def same_tree(self) -> None:
            ours, theirs = self.tree(self.system), self.tree(oracle)
            if ours != theirs:
                raise AssertionError(f"the trees differ: {_tree_difference(ours, theirs)}")

        def tree(self, driver: Driver, path: str = "/") -> dict[str, object]:
            tree: dict[str, object] = {}
            for entry in driver.readdir(path):
                child = path.rstrip("/") + "/" + entry.name
                listed = entry.type.value
                if entry.type is FileType.SYMLINK or entry.type is FileType.UNKNOWN:
                    st_ = driver.lstat(child)
                else:
                    st_ = driver.stat(child)  # not a link: stat, the call programs make most
                if stat_module.S_ISDIR(st_.st_mode):
                    tree[entry.name] = (listed, self.shape(st_), self.tree(driver, child))
                elif stat_module.S_ISLNK(st_.st_mode):
                    tree[entry.name] = (listed, "link", driver.readlink(child))
                else:
                    tree[entry.name] = (listed, self.shape(st_), _digest(driver.read_file(child)))
            return tree

        def teardown(self) -> None:
            for handle in self.open_handles:
                if handle.system is not None:
                    self.both_close(handle)

    return FilesystemComparison


#: The calls that change the tree: a read-only system must refuse them.
CHANGES = frozenset(
    (
        "write_file",
        "mkdir",
        "rmdir",
        "unlink",
        "rename",
        "link",
        "symlink",
        "truncate",
        "chmod",
        "utimens",
    )
)


class _Flags(int):
    def __repr__(self) -> str:
        return _flag_names(self)


def _is_dir(driver: Driver, path: str) -> bool:
    return bool(attempt(lambda p: driver.lstat(p).is_dir(), path).value)


def _file_size(st_: Any) -> int | None:
    return st_.st_size if stat_module.S_ISREG(st_.st_mode) else None


def _listing(entries: list[Any]) -> list[tuple[str, str]]:
    return sorted((e.name, e.type.value) for e in entries)


def _digest(data: bytes) -> str:
    import hashlib

    return (
        data.decode("latin-1")
        if len(data) <= 32
        else f"{len(data)} bytes, sha1 {hashlib.sha1(data).hexdigest()[:12]}"
    )


def _bytes(data: bytes) -> str:
    return repr(data) if len(data) <= 32 else f"<{len(data)} bytes>"


def _short(outcome: Outcome) -> str:
    if isinstance(outcome.value, bytes):
        return _bytes(outcome.value)
    return repr(outcome)


def _tree_difference(ours: dict[str, object], theirs: dict[str, object], at: str = "") -> str:
    for name in sorted(set(ours) | set(theirs)):
        where = f"{at}/{name}"
        if name not in theirs:
            return f"{where!r} is on the system only"
        if name not in ours:
            return f"{where!r} is missing on the system"
        a, b = ours[name], theirs[name]
        if a != b:
            if (
                isinstance(a, tuple)
                and isinstance(b, tuple)
                and isinstance(a[-1], dict)
                and isinstance(b[-1], dict)
                and a[:-1] == b[:-1]
            ):
                return _tree_difference(a[-1], b[-1], where)
            return f"{where!r}: system {a!r}, model {b!r}"
    return "(no difference found)"


def _empty(driver: Driver, path: str = "/") -> None:
    for entry in driver.readdir(path):
        child = path.rstrip("/") + "/" + entry.name
        if driver.lstat(child).is_dir():
            _empty(driver, child)
            driver.rmdir(child)
        else:
            driver.unlink(child)


class Example:
    """Each example's system: a fresh directory, and a fresh connection where the driver
    has a server, so a server that leaks a descriptor per call cannot starve a long shrink
    and a broken driver's leftovers cannot leak into the next example."""

    def __init__(self, way: Way, oracle: LocalDriver) -> None:
        self.way, self.oracle = way, oracle
        self.opened: list[Driver] = []

    def __call__(self) -> tuple[Driver, Driver | None]:
        self.close()
        _empty(self.oracle)
        system, backing, _ = self.way.fresh()
        connection = self.way.new_connection()
        if connection is not None:
            self.opened.append(connection)
            assert isinstance(system, Rooted)
            system = Rooted(connection, system.root)
        if self.way.capabilities.writable:
            return system, None
        writer = LocalDriver(str(backing))
        self.opened.append(writer)
        return system, writer

    def close(self) -> None:
        while self.opened:
            self.opened.pop().close_driver()


def test_oracle_comparison(oracle: LocalDriver, way: Way, request: pytest.FixtureRequest) -> None:
    example = Example(way, oracle)
    gap = declared_gap(request.node)
    try:
        run_state_machine_as_test(
            make_machine(
                example,
                oracle,
                way.capabilities,
                # "close_errors" (gaps.toml): close succeeds where the store at close failed.
                close_errors=_gap_reason(way.setup, way.through, "close_errors", way.server_name)
                is None,
            ),
            settings=settings(
                max_examples=request.config.getoption("--examples"),
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
                print_blob=True,
                phases=[p for p in settings().phases if p in GAP_PHASES or not gap],
            ),
        )
    finally:
        example.close()
