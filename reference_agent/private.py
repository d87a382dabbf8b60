"""Private directories: a fresh directory at a logical path, for one run only.

``aviary run --private /tmp`` gives the program tree its own empty ``/tmp``:
the logical path is mounted (a local redirect in the namespace) onto a
directory of the run, so several instances of a program hard-wired to
``/tmp/out`` run side by side without seeing each other's files, and what a
task left behind is in one place afterwards. The run directory holds one
subdirectory per private path, named after it (``/tmp`` -> ``ROOT/tmp``,
``/var/scratch`` -> ``ROOT/var/scratch``); it is removed at the end, or kept
where ``--keep-private DIR`` says.

What it does not cover: paths the kernel resolves without a syscall the agent
traps (an ELF's interpreter, a ``#!`` line, AF_UNIX socket addresses) still
name the real directory.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from reference_agent.namespace import Mount, logical_path

__all__ = ["PrivateDirectories", "PrivateError"]


class PrivateError(ValueError):
    """A bad --private or --keep-private option; the message names it."""


class PrivateDirectories:
    """The private directories of one run.

    Args:
        paths: logical paths to make private (absolute, or relative to ``cwd``).
        keep: where to leave them afterwards (created; must be empty); None
            makes a temporary directory that ``finish`` removes.
        cwd: the run's starting logical directory.

    Raises:
        PrivateError: a path is ``/``, given twice, or inside another; ``keep`` is not empty.
    """

    def __init__(self, paths: Sequence[str], keep: Path | None, cwd: str) -> None:
        logicals: list[str] = []
        for text in paths:
            logical = logical_path(text, cwd)
            if logical == "/":
                raise PrivateError("--private /: the root cannot be private (mount it instead)")
            for other in logicals:
                if logical == other or _inside(logical, other) or _inside(other, logical):
                    raise PrivateError(f"--private {text}: overlaps --private {other}")
            logicals.append(logical)
        self.logicals = logicals
        self.kept = keep is not None
        if keep is not None:
            if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
                raise PrivateError(f"--keep-private {keep}: exists and is not an empty directory")
            keep.mkdir(parents=True, exist_ok=True)
            self.root = keep.resolve()
        else:
            self.root = Path(tempfile.mkdtemp(prefix="aviary-private-"))
        for logical in logicals:
            physical = self.physical(logical)
            physical.mkdir(parents=True, exist_ok=True)
            physical.chmod(_mode_like(logical))

    def physical(self, logical: str) -> Path:
        """Where private ``logical`` (one of the private paths) lives."""
        return self.root / logical.lstrip("/")

    def mounts(self) -> list[Mount]:
        """One local redirect per private path."""
        return [
            Mount(logical, str(self.physical(logical)), source=f"--private {logical}")
            for logical in self.logicals
        ]

    def prepare_start(self, cwd: str) -> None:
        """Create the empty private counterpart of a starting directory inside a private path."""
        for logical in self.logicals:
            if cwd == logical or _inside(cwd, logical):
                (self.physical(logical) / posixpath.relpath(cwd, logical)).mkdir(
                    parents=True, exist_ok=True
                )

    def finish(self) -> str | None:
        """Remove the directories, or say where they were kept (one line for stderr)."""
        if self.kept:
            where = ", ".join(f"{lg} in {self.physical(lg)}" for lg in self.logicals)
            return f"aviary: run: private directories kept: {where}"
        shutil.rmtree(self.root, ignore_errors=True)
        return None


def _inside(path: str, directory: str) -> bool:
    return path.startswith(directory.rstrip("/") + "/")


def _mode_like(logical: str) -> int:
    """The real directory's permissions (``/tmp`` is 1777), or 0700 for a new one."""
    try:
        st = os.stat(logical)
    except OSError:
        return 0o700
    return stat.S_IMODE(st.st_mode) if stat.S_ISDIR(st.st_mode) else 0o700
