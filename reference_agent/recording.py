"""What a run used: Parrot's name list and environment list, for portable packages.

``aviary run --name-list FILE`` writes one line per distinct (path, syscall)
the program resolved, as Parrot does: ``/usr/lib/x86_64-linux-gnu/libc.so.6|openat``.
Paths are logical (as the program named them, made absolute against its
working directory); a path relative to a directory descriptor is joined onto
that descriptor's path. ``--env-list FILE`` writes the starting environment,
``KEY=VALUE`` entries separated by NUL, ending with ``PWD=`` the starting
directory. ``aviary package create`` reads both (``harness/package.py``).

Like Parrot, neither file is overwritten: recording into an existing list
would mix two programs' dependencies.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import IO

__all__ = ["NameList", "RecordingError", "read_env_list", "read_name_list", "write_env_list"]


class RecordingError(ValueError):
    """A name or environment list that cannot be written or read; the message names the file."""


def _create(path: Path, option: str) -> IO[str]:
    try:
        return open(path, "x", encoding="utf-8", errors="surrogateescape")
    except FileExistsError:
        raise RecordingError(f"{option} {path}: already exists (it is not overwritten)") from None
    except OSError as exc:
        raise RecordingError(f"{option} {path}: {exc.strerror}") from None


class NameList:
    """The name list of one run: every path resolved, with the syscall that named it.

    Args:
        path: the file to create.

    Raises:
        RecordingError: the file exists or cannot be created.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = _create(path, "--name-list")
        self._seen: set[tuple[str, str]] = set()

    def record(self, logical: str, syscall: str) -> None:
        """Note that ``syscall`` resolved absolute path ``logical`` (once per pair)."""
        key = (logical, syscall)
        if key in self._seen or "\n" in logical:
            return  # a newline cannot be told apart from the next entry
        self._seen.add(key)
        self._file.write(f"{logical}|{syscall}\n")

    def record_at(self, pid: int, dirfd: int, path: str, syscall: str) -> None:
        """Note a path relative to a local directory descriptor of ``pid``."""
        try:
            base = os.readlink(f"/proc/{pid}/fd/{dirfd}")
        except OSError:
            return  # not a descriptor: the call fails with EBADF, nothing was used
        if base.startswith("/"):
            self.record(posixpath.normpath(posixpath.join(base, path)), syscall)

    def close(self) -> None:
        self._file.close()


def read_name_list(path: Path) -> list[tuple[str, str]]:
    """The (path, syscall) entries of a name list, in file order.

    Raises:
        RecordingError: unreadable, or a line is not ``PATH|SYSCALL``.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise RecordingError(f"--name-list {path}: {exc.strerror}") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line:
            continue
        name, bar, syscall = line.rpartition("|")
        if not bar or not name.startswith("/") or not syscall:
            raise RecordingError(f"{path}:{number}: expected PATH|SYSCALL, got {line!r}")
        entries.append((name, syscall))
    return entries


def write_env_list(path: Path, env: Mapping[str, str], cwd: str) -> None:
    """Write ``env`` and the starting directory as an environment list.

    Raises:
        RecordingError: the file exists or cannot be written.
    """
    with _create(path, "--env-list") as out:
        for key, value in env.items():
            if key != "PWD":
                out.write(f"{key}={value}\0")
        out.write(f"PWD={cwd}\0")


def read_env_list(path: Path) -> tuple[dict[str, str], str]:
    """The environment and the starting directory (its ``PWD``) of an environment list.

    Raises:
        RecordingError: unreadable, or not NUL-separated ``KEY=VALUE`` entries with a PWD.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise RecordingError(f"--env-list {path}: {exc.strerror}") from None
    env: dict[str, str] = {}
    for entry in text.split("\0"):
        if not entry:
            continue
        key, equals, value = entry.partition("=")
        if not equals or not key:
            raise RecordingError(
                f"--env-list {path}: not an environment list (entry {entry[:40]!r})"
            )
        env[key] = value
    cwd = env.get("PWD", "")
    if not cwd.startswith("/"):
        raise RecordingError(f"--env-list {path}: no PWD= entry with the starting directory")
    return env, cwd
