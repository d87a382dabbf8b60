"""A broken agent: ``aviary run`` with one seeded bug, to show the agent way catches it.

    .venv/bin/python tests/broken_agent.py BUG run [OPTIONS] -- PROGRAM ARGS...

BUG is one of :data:`BUGS`. The conformance suite runs it through
``--agent-command "python tests/broken_agent.py BUG run"``; each bug must fail the
property named beside it in tests/test_conformance_through.py.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Any

from reference_agent import sys_file, sys_path, sys_read_write
from reference_agent._abi import AT_FDCWD
from reference_agent.agent import Agent, Call, Outcome
from reference_agent.files import RemoteFile


def _offset_past_eof() -> None:
    # Offsets: a read advances the offset by what was asked, not by what was read.
    original = sys_read_write._read_into

    def read_into(
        call: Call, remote: RemoteFile, buffers: list[tuple[int, int]], offset: int
    ) -> int:
        count = original(call, remote, buffers, offset)
        asked = sum(length for _, length in buffers)
        remote.offset += asked - count  # _sequential adds count: the total is what was asked
        return count

    sys_read_write._read_into = read_into


def _append_ignored() -> None:
    # Append: O_APPEND is forgotten, writes go to the current offset.
    original = sys_read_write._sequential

    def sequential(
        agent: Agent, call: Call, buffers: list[tuple[int, int]], writing: bool
    ) -> Outcome:
        remote = agent.remote_file(call, call.fd(0))
        if remote is not None:
            remote.flags &= ~os.O_APPEND
        return original(agent, call, buffers, writing)

    sys_read_write._sequential = sequential


def _seek_end_ignores_offset() -> None:
    # Seek: SEEK_END lands on the end whatever the offset given.
    original = sys_read_write.sys_lseek

    def lseek(agent: Agent, call: Call) -> Outcome:
        result = original(agent, call)
        remote = agent.remote_file(call, call.fd(0))
        if (
            remote is not None
            and call.fd(2) == os.SEEK_END
            and isinstance(result, int)
            and result >= 0
        ):
            remote.offset = remote.driver.fstat(remote.handle).st_size
            return remote.offset
        return result

    sys_read_write.sys_lseek = lseek


def _missing_is_eio() -> None:
    # Errno: a missing file is reported as an I/O error.
    original = sys_file._open

    def open_(
        agent: Agent, call: Call, dirfd: int, path_index: int, flags: int, mode: int
    ) -> Outcome:
        try:
            return original(agent, call, dirfd, path_index, flags, mode)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise OSError(errno.EIO, "seeded: ENOENT reported as EIO") from None
            raise

    sys_file._open = open_


def _chmod_does_nothing() -> None:
    # Modes: chmod answers success and changes nothing.
    def fchmodat(agent: Agent, call: Call) -> Outcome:
        resolved = agent.resolve(call, call.fd(0), call.string(1))
        return 0 if type(resolved.target).__name__ == "RemoteTarget" else None

    sys_path.sys_fchmodat = fchmodat


def _listing_drops_dotfiles() -> None:
    # Listing: names that start with a dot are left out of getdents64.
    original = sys_file.sys_getdents64

    def getdents64(agent: Agent, call: Call) -> Outcome:
        remote = agent.remote_file(call, call.fd(0))
        if remote is not None and remote.is_dir and remote.listing is None:
            listing = remote.driver.readdir(remote.remote_path)
            remote.listing = [entry for entry in listing if not entry.name.startswith(".")]
        return original(agent, call)

    sys_file.sys_getdents64 = getdents64


def _cache_misses_own_writes() -> None:
    # --cache cto: a write leaves the open's read buffer as it was (stale bytes read back).
    from reference_agent import read_cache

    def wrote(self: read_cache.ReadBuffer, offset: int, data: bytes | memoryview) -> None:
        if self.size is not None and data:
            self.size = max(self.size, offset + len(data))

    read_cache.ReadBuffer.wrote = wrote  # type: ignore[method-assign]


def _filled_misses_own_writes() -> None:
    # --cache cto: a placeholder filled for the kernel's reads keeps the bytes it was
    # filled with after a write through another descriptor.
    from reference_agent import files

    files.RemoteFile.follow = lambda self, change: None  # type: ignore[method-assign]


def _dirfd_file_walks_below() -> None:
    # Descriptors: a name below a file's descriptor is looked up below the file's name
    # (ENOENT once that name is unlinked, where Linux says ENOTDIR).
    original = Agent.resolve

    def resolve(self: Agent, call: Call, dirfd: int, path: str) -> Any:
        remote = self.remote_file(call, dirfd) if dirfd >= 0 else None
        if remote is not None and path and not path.startswith("/") and not remote.is_dir:
            return original(self, call, AT_FDCWD, f"{remote.logical}/{path}")
        return original(self, call, dirfd, path)

    Agent.resolve = resolve  # type: ignore[method-assign]


def _read_only_create_refused() -> None:
    # Read-only protocol: open(O_CREAT) of an existing file is refused with EROFS, where a
    # read-only file system opens it for reading.
    from drivers.http import HttpDriver

    original = HttpDriver.open

    def open_(self: HttpDriver, path: str, flags: int, mode: int = 0o666) -> Any:
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, "seeded: O_CREAT refused", path)
        return original(self, path, flags, mode)

    HttpDriver.open = open_  # type: ignore[method-assign]


#: Seeded bug -> what installs it, before the agent builds its syscall table.
BUGS: dict[str, Callable[[], None]] = {
    "offset_past_eof": _offset_past_eof,
    "append_ignored": _append_ignored,
    "seek_end_ignores_offset": _seek_end_ignores_offset,
    "missing_is_eio": _missing_is_eio,
    "chmod_does_nothing": _chmod_does_nothing,
    "listing_drops_dotfiles": _listing_drops_dotfiles,
    "cache_misses_own_writes": _cache_misses_own_writes,
    "filled_misses_own_writes": _filled_misses_own_writes,
    "dirfd_file_walks_below": _dirfd_file_walks_below,
    "read_only_create_refused": _read_only_create_refused,
}


def main(argv: list[str]) -> Any:
    if not argv or argv[0] not in BUGS:
        print(f"usage: broken_agent.py {{{','.join(BUGS)}}} run ...", file=sys.stderr)
        return 2
    BUGS[argv[0]]()
    from harness.cli import main as aviary_main

    return aviary_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
