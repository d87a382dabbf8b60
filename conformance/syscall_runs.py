"""Running the syscall program on the system under test and natively, and comparing lines.

The syscall program (``syscall_program.c``, compiled once per session) prints one
line per operation. :func:`run_both` runs the same operations in a fresh
directory of the system (under the agent, or on a mounted file system) and in a
fresh local directory, and :func:`compare` lists the lines that differ once the
fields a declared gap names are masked.

A read-only protocol (http) cannot make the tree a sequence works on, so the same
operations first run natively behind the server (in the directory it serves) and
in the local directory; the local one is then mounted read-only in a mount
namespace of the program's own, and the comparison is with what Linux answers on
a read-only file system holding the same tree: reads, stat and listings are
compared line by line, every change is EROFS on both sides.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conformance.plugin import Way

__all__ = ["PROGRAM_SOURCE", "Difference", "compare", "compile_program", "run_batch", "run_both"]

PROGRAM_SOURCE = Path(__file__).with_name("syscall_program.c")
RUN_TIMEOUT = 120.0  # seconds one run of the program may take, agent start-up included
#: The stat fields a declared gap may mask: "syscall_stat_field[perm]" masks "perm=...".
MASKABLE_FIELDS = ("perm", "owner", "nlink")


def compile_program(directory: Path) -> Path:
    """The syscall program, built with gcc in ``directory``.

    Raises:
        RuntimeError: gcc is missing or the build failed (with gcc's message).
    """
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is not installed (setup/build.packages; run ./setup.sh)")
    program = directory / "syscall_program"
    done = subprocess.run(
        [gcc, "-O1", "-Wall", "-o", str(program), str(PROGRAM_SOURCE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"gcc failed on {PROGRAM_SOURCE.name}: {done.stderr[-2000:]}")
    return program


def _command(way: Way, program: Path, root: str) -> list[str]:
    if way.mounted is not None:
        return [str(program), root]
    return [*way.setup.agent_command, "--", str(program), root]


def system_root(way: Way, name: str) -> str:
    """Where the fresh directory ``name`` is, in the program's namespace."""
    if way.mounted is not None:
        return f"{way.mounted.path}/{name}"
    assert way.executor is not None
    return f"{way.executor.prefix}/{name}"


@dataclass
class Runs:
    """The program's lines on the system and natively, and how to replay the system's run."""

    system: list[str]
    native: list[str]
    replay: str


#: Runs a program on its directory ($1) mounted read-only, in a mount namespace that ends
#: with it: nothing is left mounted whatever happens to the run.
_READ_ONLY_RUN = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && exec "$2" "$1"'


def _natively(program: Path, root: str, read_only: bool) -> list[str]:
    """The program's command on ``root`` natively: as it is, or mounted read-only."""
    if not read_only:
        return [str(program), root]
    return ["unshare", "--mount", "sh", "-c", _READ_ONLY_RUN, "sh", root, str(program)]


@contextmanager
def _native_base(owner: str | None) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="aviary-native-") as root:
        if owner is not None:
            shutil.chown(root, owner)
        yield root


def _run(command: list[str], operations: str) -> list[str]:
    # The program starts in a scratch directory of its own: whatever an agent lets escape
    # to the real current directory (a socket bound by a relative name) lands there.
    with tempfile.TemporaryDirectory(prefix="aviary-syscall-cwd-") as scratch:
        done = subprocess.run(
            command,
            input=operations,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            cwd=scratch,
        )
    lines = done.stdout.splitlines()
    if done.returncode != 0:
        lines.append(f"exit={done.returncode} stderr={done.stderr.strip()[-300:]!r}")
    return lines


def run_both(way: Way, program: Path, operations: list[str], native_owner: str | None) -> Runs:
    """The operations on a fresh directory of the system and on a fresh local one."""
    _, backing, name = way.fresh()
    text = "".join(line + "\n" for line in operations)
    command = _command(way, program, system_root(way, name))
    with _native_base(native_owner) as native_root:
        if way.read_only:  # the tree behind the server, and the same tree locally
            _run([str(program), str(backing)], text)
            _run([str(program), native_root], text)
        system = _run(command, text)
        native = _run(_natively(program, native_root, way.read_only), text)
    replay = "printf '%s' '" + text.replace("\n", "\\n") + "' | " + " ".join(command)
    return Runs(system, native, replay)


def run_batch(way: Way, program: Path, sequences: dict[str, list[str]]) -> dict[str, Runs]:
    """Several sequences in one process each way (one agent start-up), each sequence in a
    fresh directory of its own (the program's ``root`` operation)."""
    fresh = {name: way.fresh() for name in sequences}
    roots = {name: system_root(way, made[2]) for name, made in fresh.items()}
    with _native_base(None) as native_base:
        native_roots = {name: f"{native_base}/{index}" for index, name in enumerate(sequences)}
        for path in native_roots.values():
            Path(path).mkdir()
        system_text = "".join(
            f"root {roots[name]}\n" + "".join(op + "\n" for op in ops)
            for name, ops in sequences.items()
        )
        native_text = "".join(
            f"root {native_roots[name]}\n" + "".join(op + "\n" for op in ops)
            for name, ops in sequences.items()
        )
        first_root = next(iter(roots.values()))
        if way.read_only:  # the trees behind the server, and the same trees locally
            behind_text = "".join(
                f"root {fresh[name][1]}\n" + "".join(op + "\n" for op in ops)
                for name, ops in sequences.items()
            )
            _run([str(program), str(next(iter(fresh.values()))[1])], behind_text)
            _run([str(program), native_base], native_text)
        system = _run(_command(way, program, first_root), system_text)
        native = _run(_natively(program, native_base, way.read_only), native_text)
    runs: dict[str, Runs] = {}
    start = 0
    for name, ops in sequences.items():
        end = start + 1 + len(ops)
        text = "".join(op + "\n" for op in ops)
        command = _command(way, program, roots[name])
        replay = "printf '%s' '" + text.replace("\n", "\\n") + "' | " + " ".join(command)
        runs[name] = Runs(system[start + 1 : end], native[start + 1 : end], replay)
        if system[start : start + 1] != [] and "ret=0" not in system[start]:
            runs[name].system.insert(0, f"root failed: {system[start]}")
        start = end
    return runs


@dataclass
class Difference:
    """One line that differs: the operation, what the system and native Linux printed."""

    operation: str
    system: str
    native: str

    def __str__(self) -> str:
        return f"{self.operation}: system '{self.system}', native '{self.native}'"


def mask(line: str, fields: set[str]) -> str:
    """``line`` with each named field's value starred; ``EBADF`` in ``fields`` stars a
    whole line that ends in EBADF (a declared gap in descriptor checks)."""
    if "EBADF" in fields and "EBADF" in line:
        return "(EBADF)"
    for name in fields:
        line = re.sub(rf"\b{name}=\S+", f"{name}=*", line)
    return line


def compare(runs: Runs, operations: list[str], masked: set[str]) -> list[Difference]:
    """The lines that differ, the masked fields aside, each with its operation."""
    differences = []
    count = max(len(runs.system), len(runs.native))
    for index in range(count):
        system = runs.system[index] if index < len(runs.system) else "(no line)"
        native = runs.native[index] if index < len(runs.native) else "(no line)"
        # A line the program could not parse runs nothing on either side: never a pass.
        if "bad-arguments" in native or "unknown-operation" in native:
            operation = operations[index] if index < len(operations) else "(end)"
            raise ValueError(f"the syscall program did not run {operation!r}: {native}")
        # A declared defect in descriptor checks: lines where Linux rejects a descriptor
        # (EBADF, or ENOTDIR for a file given as a directory, answered EXDEV) are skipped.
        if "EBADF" in masked and (
            "EBADF" in native or ("errno=ENOTDIR" in native and "errno=EXDEV" in system)
        ):
            continue
        if mask(system, masked) != mask(native, masked):
            operation = operations[index] if index < len(operations) else "(end)"
            differences.append(Difference(operation, system, native))
    return differences
