"""The errno matrix on the driver itself: the agent's cells, as driver calls.

The same operations and conditions as :mod:`conformance.test_errno_matrix` (whose
cells are lines of the syscall program, run through the agent or a mount), applied
to the driver under test and to the local oracle, each in a fresh directory with
the same small tree. A cell passes when the driver answers what Linux answers, or
an errno the driver's :class:`~drivers.Capabilities` allows in its place
(:func:`conformance.model.allowed_errnos`: ELOOP without a code for it, declared
aliases, and any applicable error of a two-name call where the driver does not
claim Linux's precedence). Cells the protocol cannot express (a symlink loop
without symlinks, a hard link without links, chmod without modes, changes on a
read-only protocol) are narrowed out by the capabilities, not switched off.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from conformance.model import allowed_errnos
from conformance.plugin import SETUP_KEY, Way, _gap_reason
from conformance.test_errno_matrix import CONDITIONS
from drivers import Capabilities, Driver
from drivers.local import LocalDriver

#: The agent's conditions with its placeholder for a 300-byte name spelled out.
PATHS: dict[str, str] = {
    condition: "/" + path.replace("%300", "n" * 300) for condition, path in CONDITIONS.items()
}  # no permission cells: a driver has no uid of its own to be refused as

#: Operation -> the driver call and its arguments, X standing for the condition's path.
OPERATIONS: dict[str, tuple[str, tuple[object, ...]]] = {
    "open_read": ("open", ("X", os.O_RDONLY)),
    "open_create": ("open", ("X", os.O_WRONLY | os.O_CREAT)),
    "open_read_create": ("open", ("X", os.O_RDONLY | os.O_CREAT)),
    "open_exclusive": ("open", ("X", os.O_WRONLY | os.O_CREAT | os.O_EXCL)),
    "mkdir": ("mkdir", ("X",)),
    "rmdir": ("rmdir", ("X",)),
    "unlink": ("unlink", ("X",)),
    "rename_from": ("rename", ("X", "/new")),
    "rename_onto": ("rename", ("/g", "X")),
    "link_from": ("link", ("X", "/new")),
    "link_onto": ("link", ("/g", "X")),
    "symlink": ("symlink", ("g", "X")),
    "readlink": ("readlink", ("X",)),
    "stat": ("stat", ("X",)),
    "lstat": ("lstat", ("X",)),
    "truncate": ("truncate", ("X",)),
    "chmod": ("chmod", ("X",)),
}

#: Two conditions at once (as in the agent's matrix): the errno Linux reports first is required.
PRECEDENCE: dict[str, tuple[str, tuple[object, ...]]] = {
    "precedence-rename_missing_into_file": ("rename", ("/missing", "/f/x")),
    "precedence-link_missing_into_file": ("link", ("/missing", "/f/x")),
    "precedence-rename_missing_into_missing": ("rename", ("/missing", "/missing/x")),
    "precedence-mkdir_missing_parent_too_long": ("mkdir", ("/missing/" + "n" * 300,)),
    "precedence-open_loop_create": ("open", ("/loop/x", os.O_WRONLY | os.O_CREAT | os.O_EXCL)),
}

#: Operations that change the tree: a read-only protocol cannot make them.
CHANGES = {"open_create", "open_exclusive", "mkdir", "rmdir", "unlink", "rename_from",
           "rename_onto", "link_from", "link_onto", "symlink", "truncate", "chmod"}  # fmt: skip


def _cells() -> dict[str, tuple[str, tuple[object, ...]]]:
    cells = {
        f"{op}-{condition}": (name, tuple(path if arg == "X" else arg for arg in args))
        for op, (name, args) in OPERATIONS.items()
        for condition, path in PATHS.items()
    }
    cells.update(PRECEDENCE)
    return cells


CELLS = _cells()


def invoke(driver: Driver, name: str, args: tuple[object, ...]) -> None:
    """One cell's call, with the modes the agent's matrix uses (0644 files, 0755 dirs)."""
    if name == "open":
        path, flags = args
        assert isinstance(path, str) and isinstance(flags, int)
        driver.close(driver.open(path, flags, 0o644))
    elif name == "mkdir":
        driver.mkdir(str(args[0]), 0o755)
    elif name == "truncate":
        driver.truncate(str(args[0]), 0)
    elif name == "chmod":
        driver.chmod(str(args[0]), 0o644)
    else:
        getattr(driver, name)(*args)


def narrowed(cell: str, caps: Capabilities) -> str | None:
    """Why a cell is outside what the protocol can express, or None."""
    op = cell.partition("-")[0]
    if "loop" in cell and not caps.symlinks:
        return "no symlinks: a loop cannot be made"
    if (op in ("link_from", "link_onto") or "link_missing" in cell) and not caps.hard_links:
        return "no hard links"
    if op in ("symlink", "readlink") and not caps.symlinks:
        return "no symlinks"
    if op == "chmod" and not caps.chmod:
        return "no modes"
    if not caps.writable and (op in CHANGES or op == "precedence"):
        return "read-only protocol"
    return None


def build_tree(driver: Driver, caps: Capabilities) -> None:
    """The tree every cell starts from (what the agent's matrix builds with its program)."""
    driver.mkdir("/d", 0o755)
    driver.write_file("/f", b"f", 0o644)
    driver.mkdir("/full", 0o755)
    driver.write_file("/full/x", b"x", 0o644)
    driver.write_file("/g", b"g", 0o644)
    if caps.symlinks:
        driver.symlink("loop", "/loop")


def errno_of(driver: Driver, name: str, args: tuple[object, ...]) -> int | None:
    try:
        invoke(driver, name, args)
    except OSError as exc:
        return exc.errno
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "way" in metafunc.fixturenames:
        setup = metafunc.config.stash[SETUP_KEY]
        combos = [(s, t) for s in setup.servers for t in setup.throughs if t == "direct"]
        metafunc.parametrize(
            "way", combos, ids=[f"{s}-{t}" for s, t in combos], scope="session", indirect=True
        )


@contextmanager
def _cell_system(way: Way) -> Iterator[Driver]:
    """A fresh directory holding the tree: built by the driver, or behind a read-only
    protocol's server (as the probes' ``seed`` does)."""
    driver, backing, _ = way.fresh()
    caps = way.capabilities
    if way.read_only:
        with LocalDriver(str(backing)) as behind:
            build_tree(behind, caps)
    else:
        build_tree(driver, caps)
    yield driver


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_errno_matrix(
    way: Way, oracle: LocalDriver, request: pytest.FixtureRequest, cell: str
) -> None:
    caps = way.capabilities
    reason = narrowed(cell, caps)
    if reason:
        pytest.skip(f"outside the protocol's model: {reason}")
    name, args = CELLS[cell]
    build_tree(oracle, Capabilities())
    with _cell_system(way) as system:
        got = errno_of(system, name, args)
    expected = errno_of(oracle, name, args)
    setup = request.config.stash[SETUP_KEY]
    if expected is None:
        allowed: frozenset[Any] = frozenset({None})
    else:
        allowed = allowed_errnos(caps, oracle, name, args, expected)
    if not caps.writable and expected != errno.ENOENT:
        allowed |= {errno.EROFS}
    if got in allowed:
        return
    said = {code: errno.errorcode.get(code, str(code)) if code else "success"
            for code in (got, expected)}  # fmt: skip
    for part in cell.split("-"):
        gap = _gap_reason(setup, way.through, f"errno_matrix[{part}]", way.server_name)
        if gap:
            pytest.xfail(f"declared gap: {gap}: driver {said[got]}, Linux {said[expected]}")
    pytest.fail(f"{cell}: the driver answers {said[got]}, Linux {said[expected]}")
