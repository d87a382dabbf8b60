"""The errno matrix: every operation on every error condition, compared with Linux.

Each cell (``errno_matrix[rename_from-missing_parent]``) builds a small tree in
a directory of its own, applies one operation to the path that has the
condition, and requires the line Linux prints: the same errno, or the same
success. The whole matrix is one run of the syscall program per way through
(cells are lines of it), so it costs one agent start-up.

Cells marked ``precedence-...`` meet two conditions at once; the errno Linux
reports first is the one required, unless the driver declares ``errno_precedence``.
Permission cells (``...-permission``: a path below a directory of mode 000) need an
unprivileged program, as root passes every permission check: they come last, in
one shared tree, after the program (root or not) has become the unprivileged
user ``nobody``; a refused operation changes nothing, so they can share it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.plugin import SETUP_KEY, Way, _gap_reason
from conformance.syscall_runs import Runs, mask, run_both

#: The path that has each condition, in a tree every cell builds (see TREE).
CONDITIONS: dict[str, str] = {
    "missing_file": "missing",
    "missing_parent": "missing/x",
    "file_as_parent": "f/x",
    "directory": "d",
    "not_empty": "full",
    "exists": "f",
    "loop": "loop/x",
    "name_too_long": "%300",
}
#: A path below a directory the program may not search (mode 000, run unprivileged).
PERMISSION = "locked/x"
#: Who runs the permission cells: nobody (65534), whatever ran the program.
UNPRIVILEGED_UID = 65534

TREE = [
    "mkdirat cwd d 755", "open 0 f WRONLY|CREAT 644", "mkdirat cwd full 755",
    "open 1 full/x WRONLY|CREAT 644", "open 2 g WRONLY|CREAT 644", "symlinkat loop cwd loop",
    "mkdirat cwd locked 755", "open 3 locked/x WRONLY|CREAT 644", "fchmodat cwd locked 0",
]  # fmt: skip

#: Operation -> its line, {X} standing for the condition's path.
OPERATIONS: dict[str, str] = {
    "open_read": "open 4 {X} RDONLY 0",
    "open_create": "open 4 {X} WRONLY|CREAT 644",
    "open_read_create": "open 4 {X} RDONLY|CREAT 644",
    "open_exclusive": "open 4 {X} WRONLY|CREAT|EXCL 644",
    "open_directory": "open 4 {X} RDONLY|DIRECTORY 0",
    "mkdir": "mkdirat cwd {X} 755",
    "rmdir": "unlinkat cwd {X} REMOVEDIR",
    "unlink": "unlinkat cwd {X} 0",
    "rename_from": "renameat cwd {X} cwd new",
    "rename_onto": "renameat cwd g cwd {X}",
    "link_from": "linkat cwd {X} cwd new",
    "link_onto": "linkat cwd g cwd {X}",
    "symlink": "symlinkat g cwd {X}",
    "readlink": "readlinkat cwd {X}",
    "stat": "stat {X}",
    "lstat": "lstat {X}",
    "truncate": "truncate {X} 0",
    "chmod": "fchmodat cwd {X} 644",
    "chdir": "chdir {X}",
}
#: Two conditions at once: Linux resolves both parent directories before the old name itself.
PRECEDENCE: dict[str, str] = {
    "precedence-rename_missing_into_file": "renameat cwd missing cwd f/x",
    "precedence-link_missing_into_file": "linkat cwd missing cwd f/x",
    "precedence-rename_missing_into_missing": "renameat cwd missing cwd missing/x",
    "precedence-mkdir_missing_parent_too_long": "mkdirat cwd missing/%300 755",
    "precedence-open_loop_create": "open 4 loop/x WRONLY|CREAT|EXCL 644",
}


def _cells() -> dict[str, str]:
    cells = {
        f"{op}-{condition}": line.replace("{X}", path)
        for op, line in OPERATIONS.items()
        for condition, path in CONDITIONS.items()
    }
    cells.update(PRECEDENCE)
    cells.update(PERMISSION_CELLS)
    return cells


#: Each operation on the path below the locked directory, run unprivileged.
PERMISSION_CELLS = {
    f"{op}-permission": line.replace("{X}", PERMISSION) for op, line in OPERATIONS.items()
}
CELLS = _cells()


def matrix_operations() -> tuple[list[str], dict[str, int]]:
    """The program's lines for every cell, and the line number of each cell's operation."""
    lines: list[str] = []
    where: dict[str, int] = {}
    closes = [f"close {slot}" for slot in range(5)]  # so no cell runs out of descriptors
    for index, (cell, operation) in enumerate(CELLS.items()):
        if cell not in PERMISSION_CELLS:
            lines += ["chdir /", f"mkdirat cwd c{index} 755", f"chdir c{index}", *TREE]
            where[cell] = len(lines)
            lines += [operation, *closes]
    # Last, as nobody, in one tree (a refused operation changes nothing in it).
    lines += ["chdir /", "mkdirat cwd permission 755", "chdir permission", *TREE]
    lines.append(f"unprivileged {UNPRIVILEGED_UID}")
    for cell, operation in PERMISSION_CELLS.items():
        where[cell] = len(lines)
        lines += [operation, *closes]
    return lines, where


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "matrix_way" in metafunc.fixturenames:
        setup = metafunc.config.stash[SETUP_KEY]
        combos = [(s, t) for s in setup.servers for t in setup.throughs if t != "direct"]
        metafunc.parametrize(
            "way", combos, ids=[f"{s}-{t}" for s, t in combos], scope="session", indirect=True
        )


_RUNS: dict[tuple[str, str], tuple[Runs, dict[str, int]]] = {}


@pytest.fixture
def matrix_way(way: Way) -> Way:
    return way


def matrix_runs(way: Way, program: Path) -> tuple[Runs, dict[str, int]]:
    key = (way.server_name, way.through)
    if key not in _RUNS:
        lines, where = matrix_operations()
        _RUNS[key] = (run_both(way, program, lines, None), where)
    return _RUNS[key]


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_errno_matrix(
    matrix_way: Way, syscall_program: Path, request: pytest.FixtureRequest, cell: str
) -> None:
    runs, where = matrix_runs(matrix_way, syscall_program)
    index = where[cell]
    system = runs.system[index] if index < len(runs.system) else "(no line)"
    native = runs.native[index] if index < len(runs.native) else "(no line)"
    # A cell whose line the program did not run (a typo in it) would pass on both sides.
    assert "bad-arguments" not in native and "unknown-operation" not in native, native
    setup = request.config.stash[SETUP_KEY]
    precedence_gap = _gap_reason(
        setup, matrix_way.through, "errno_precedence", matrix_way.server_name
    )
    if cell.startswith("precedence-") and precedence_gap and system != native:
        pytest.xfail(f"declared errno_precedence: system '{system}', Linux '{native}'")
    # A gap on a whole condition or operation ("errno_matrix[loop]") covers its cells.
    for part in cell.split("-"):
        reason = _gap_reason(
            setup, matrix_way.through, f"errno_matrix[{part}]", matrix_way.server_name
        )
        if reason and system != native:
            pytest.xfail(f"declared gap: {reason}: system '{system}', Linux '{native}'")
    masked = {"perm", "owner", "nlink", "size"}  # the matrix is about errno, not stat fields
    assert mask(system, masked) == mask(native, masked), (
        f"{CELLS[cell]}: system '{system}', Linux '{native}'"
    )
