"""The oracle comparison: random operation sequences on the system and on local POSIX.

A hypothesis ``RuleBasedStateMachine`` applies each operation to the system
under test and to the oracle (the local driver on a temporary directory) and
requires the same result, or the same errno, from both; after every step the
two trees must hold the same names, types and contents. Open handles live in
a bundle, so they are kept across renames and unlinks of their files. A
failure shrinks to a short, readable list of operations.

What a driver declares as a gap in ``gaps.toml`` is not compared here (file
modes for chirp, whose server forces 0600/0700); the named probes check it.
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from conformance.plugin import SETUP_KEY, Way
from drivers import Driver, Handle

PATHS = st.sampled_from(["/a", "/b", "/c", "/d", "/d/x", "/d/y", "/a/z"])
DATA = st.binary(max_size=64)
OFFSETS = st.integers(min_value=0, max_value=80)


#: errno values a driver declared it cannot report (gaps.toml keys "errno:NAME"):
#: the system may answer EIO where POSIX gives one of these.
TOLERATED_ERRNOS: set[int] = set()
#: Declared "errno_precedence": when several errors apply, the driver may report another one.
PRECEDENCE_GAP: list[bool] = [False]


class Outcome:
    """A result or an errno, compared as POSIX would."""

    def __init__(self, value: Any = None, error: int | None = None) -> None:
        self.value, self.error = value, error

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Outcome):
            return False
        if self.error == errno.EIO and other.error in TOLERATED_ERRNOS:
            return True
        if PRECEDENCE_GAP[0] and self.error is not None and other.error is not None:
            return True
        return (self.value, self.error) == (other.value, other.error)

    def __repr__(self) -> str:
        return (
            f"error {errno.errorcode.get(self.error, self.error)}"
            if self.error
            else repr(self.value)
        )


def attempt(call: Any, *args: Any) -> Outcome:
    try:
        return Outcome(call(*args))
    except OSError as exc:
        return Outcome(error=exc.errno)


class HandlePair:
    """An open handle on both sides; its repr is what a shrunk example prints."""

    counter = 0

    def __init__(self, path: str, system: Handle | None, oracle: Handle | None) -> None:
        HandlePair.counter += 1
        self.name = f"h{HandlePair.counter}"
        self.path, self.system, self.oracle = path, system, oracle

    def __repr__(self) -> str:
        return f"{self.name}({self.path})"


class FilesystemComparison(RuleBasedStateMachine):
    """The system under test against the POSIX oracle."""

    handles = Bundle("handles")

    def __init__(self, system: Driver, oracle: Driver, gaps: dict[str, str]) -> None:
        super().__init__()
        self.system, self.oracle = system, oracle
        self.compare_modes = "create_mode_honoured" not in gaps
        self.loops_are_gap = "errno:ELOOP" in gaps
        self.replace_dir_is_gap = "rename_onto_empty_directory" in gaps
        # A synthesised link count (declared) is not compared; the probes report it.
        self.compare_nlink = not {"hard_links", "stat_completeness[st_nlink]"} & set(gaps)
        # Operations a protocol lacks ("unsupported:link" in gaps.toml) may fail with
        # ENOTSUP; the oracle is then left alone, and the named probes report the gap.
        self.unsupported = {k.split(":", 1)[1] for k in gaps if k.startswith("unsupported:")}
        self.open_handles: list[HandlePair] = []

    def both(self, name: str, *args: Any) -> Outcome:
        ours = attempt(getattr(self.system, name), *args)
        if ours.error == errno.ENOTSUP and name in self.unsupported:
            return ours
        theirs = attempt(getattr(self.oracle, name), *args)
        assert ours == theirs, f"{name}{args}: system gave {ours}, POSIX gives {theirs}"
        return ours

    @rule(path=PATHS, data=DATA)
    def write_file(self, path: str, data: bytes) -> None:
        self.both("write_file", path, data)

    @rule(path=PATHS)
    def read_file(self, path: str) -> None:
        self.both("read_file", path)

    @rule(path=PATHS)
    def mkdir(self, path: str) -> None:
        self.both("mkdir", path)

    @rule(path=PATHS)
    def rmdir(self, path: str) -> None:
        self.both("rmdir", path)

    @rule(path=PATHS)
    def unlink(self, path: str) -> None:
        self.both("unlink", path)

    @rule(old=PATHS, new=PATHS)
    def rename(self, old: str, new: str) -> None:
        if self.replace_dir_is_gap and attempt(lambda p: self.oracle.lstat(p).is_dir(), new).value:
            return  # a declared gap, checked by its own probe
        self.both("rename", old, new)

    @rule(old=PATHS, new=PATHS)
    def link(self, old: str, new: str) -> None:
        self.both("link", old, new)

    @rule(contents=st.sampled_from(["a", "d", "missing", "d/x"]), path=PATHS)
    def symlink(self, contents: str, path: str) -> None:
        if self.loops_are_gap:
            # The driver declared it cannot report ELOOP: ask the oracle whether this
            # link closes a loop, and leave loops out rather than fail on the known gap.
            made = attempt(self.oracle.symlink, contents, path)
            if made.error is None:
                looping = attempt(self.oracle.stat, path).error == errno.ELOOP
                self.oracle.unlink(path)
                if looping:
                    return
        self.both("symlink", contents, path)

    @rule(path=PATHS)
    def readlink(self, path: str) -> None:
        self.both("readlink", path)

    @rule(path=PATHS, length=OFFSETS)
    def truncate(self, path: str, length: int) -> None:
        self.both("truncate", path, length)

    @rule(path=PATHS, follow=st.booleans())
    def stat(self, path: str, follow: bool) -> None:
        name = "stat" if follow else "lstat"
        ours, theirs = (
            attempt(getattr(self.system, name), path),
            attempt(getattr(self.oracle, name), path),
        )
        assert Outcome(self._shape(ours.value), ours.error) == Outcome(
            self._shape(theirs.value), theirs.error
        ), f"{name}({path!r}): system gave {ours}, POSIX gives {theirs}"

    def _shape(self, st_: Any) -> tuple[object, ...] | None:
        if st_ is None:
            return None
        mode = (
            stat_module.S_IFMT(st_.st_mode),
            stat_module.S_IMODE(st_.st_mode) if self.compare_modes else None,
        )
        size = (
            st_.st_size if not stat_module.S_ISDIR(st_.st_mode) else None
        )  # directory sizes are the server's
        nlink = (
            st_.st_nlink if self.compare_nlink and not stat_module.S_ISDIR(st_.st_mode) else None
        )
        return (*mode, size, nlink)

    @rule(path=st.sampled_from(["/", "/d", "/a", "/missing"]))
    def readdir(self, path: str) -> None:
        ours, theirs = attempt(self.system.readdir, path), attempt(self.oracle.readdir, path)
        assert _sorted_listing(ours) == _sorted_listing(theirs), (
            f"readdir({path!r}): system gave {ours}, POSIX gives {theirs}"
        )

    @rule(target=handles, path=PATHS, create=st.booleans())
    def open(self, path: str, create: bool) -> HandlePair:
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        ours, theirs = (
            attempt(self.system.open, path, flags, 0o644),
            attempt(self.oracle.open, path, flags, 0o644),
        )
        if ours.error is None and theirs.error is None:
            pair = HandlePair(path, ours.value, theirs.value)
            self.open_handles.append(pair)
            return pair
        for side, outcome in ((self.system, ours), (self.oracle, theirs)):
            if outcome.error is None:
                side.close(outcome.value)
        assert ours.error == theirs.error, (
            f"open({path!r}): system gave {ours}, POSIX gives {theirs}"
        )
        return HandlePair(path, None, None)

    @rule(handle=handles, data=DATA, offset=OFFSETS)
    def pwrite(self, handle: HandlePair, data: bytes, offset: int) -> None:
        if handle.system is not None:
            ours = attempt(self.system.pwrite, handle.system, data, offset)
            theirs = attempt(self.oracle.pwrite, handle.oracle, data, offset)
            assert ours == theirs, (
                f"pwrite({handle}, {offset}): system gave {ours}, POSIX gives {theirs}"
            )

    @rule(handle=handles, size=st.integers(0, 100), offset=OFFSETS)
    def pread(self, handle: HandlePair, size: int, offset: int) -> None:
        if handle.system is not None:
            ours = attempt(self.system.pread, handle.system, size, offset)
            theirs = attempt(self.oracle.pread, handle.oracle, size, offset)
            assert ours == theirs, (
                f"pread({handle}, {size}, {offset}): system gave {ours}, POSIX gives {theirs}"
            )

    @rule(handle=handles)
    def fstat_size(self, handle: HandlePair) -> None:
        if handle.system is not None:
            ours = attempt(lambda h: self.system.fstat(h).st_size, handle.system)
            theirs = attempt(lambda h: self.oracle.fstat(h).st_size, handle.oracle)
            assert ours == theirs, (
                f"fstat({handle}).st_size: system gave {ours}, POSIX gives {theirs}"
            )

    @rule(handle=consumes(handles))
    def close(self, handle: HandlePair) -> None:
        if handle.system is not None:
            self.both_close(handle)

    def both_close(self, handle: HandlePair) -> None:
        assert handle.system is not None and handle.oracle is not None
        ours, theirs = (
            attempt(self.system.close, handle.system),
            attempt(self.oracle.close, handle.oracle),
        )
        handle.system = handle.oracle = None
        assert ours == theirs, f"close({handle}): system gave {ours}, POSIX gives {theirs}"

    @invariant()
    def same_tree(self) -> None:
        assert self._tree(self.system) == self._tree(self.oracle), "the trees differ"

    def _tree(self, driver: Driver, path: str = "/") -> dict[str, object]:
        tree: dict[str, object] = {}
        for entry in driver.readdir(path):
            child = path.rstrip("/") + "/" + entry.name
            st_ = driver.lstat(child)
            if stat_module.S_ISDIR(st_.st_mode):
                tree[entry.name] = self._tree(driver, child)
            elif stat_module.S_ISLNK(st_.st_mode):
                tree[entry.name] = ("link", driver.readlink(child))
            else:
                tree[entry.name] = (driver.read_file(child), self._shape(driver.stat(child)))
        return tree

    def teardown(self) -> None:
        # Leave both sides empty for the next example; close what the example left open.
        for handle in self.open_handles:
            if handle.system is not None:
                self.both_close(handle)
        for driver in (self.system, self.oracle):
            _empty(driver, "/")


def _sorted_listing(outcome: Outcome) -> Outcome:
    if outcome.error is not None:
        return outcome
    return Outcome(sorted((entry.name, entry.type) for entry in outcome.value))


def _empty(driver: Driver, path: str) -> None:
    for entry in driver.readdir(path):
        child = path.rstrip("/") + "/" + entry.name
        if driver.lstat(child).is_dir():
            _empty(driver, child)
            driver.rmdir(child)
        else:
            driver.unlink(child)


def test_oracle_comparison(
    system: Driver, oracle: Driver, way: Way, request: pytest.FixtureRequest
) -> None:
    setup = request.config.stash[SETUP_KEY]
    gaps = {
        **setup.gaps.get(setup.driver_name, {}),
        **setup.gaps.get(f"{setup.driver_name}/{way.through}", {}),
    }
    PRECEDENCE_GAP[0] = "errno_precedence" in gaps
    TOLERATED_ERRNOS.clear()
    TOLERATED_ERRNOS.update(
        getattr(errno, key.split(":", 1)[1]) for key in gaps if key.startswith("errno:")
    )
    examples = request.config.getoption("--examples")
    run_state_machine_as_test(
        lambda: FilesystemComparison(system, oracle, gaps),  # type: ignore[arg-type]
        settings=settings(
            max_examples=examples,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        ),
    )
