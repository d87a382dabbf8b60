"""What the agent learns about a traced process from the kernel, outside its stops:
which directory a descriptor names, a descriptor's flags and offset, and whether a
new child shares its creator's working directory."""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path

from reference_agent import _memory, _ptrace
from reference_agent._ptrace import ForkEvent, ForkKind

__all__ = ["CLONE_FS", "directory_of", "flags_and_position", "shares_fs"]


def directory_of(pid: int, fd: int) -> str | None:
    """The local path descriptor ``fd`` of ``pid`` names, or None if it has none."""
    try:
        name = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None  # EBADF and the like: the kernel answers the call itself
    if not name.startswith("/") or name.endswith(" (deleted)"):
        return None  # a pipe, a socket, a removed directory
    return name


def flags_and_position(pid: int, fd: int) -> tuple[int, int]:
    """A descriptor's open flags and offset, as /proc/PID/fdinfo shows them.

    Raises:
        FileNotFoundError: ``fd`` is not open in ``pid``.
    """
    # Read raw, without a text file object: a write to a mirrored file asks this each time.
    info = os.open(f"/proc/{pid}/fdinfo/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        text = os.read(info, 4096)
    finally:
        os.close(info)
    flags = position = 0
    for line in text.splitlines():
        if line.startswith(b"flags:"):
            flags = int(line.split()[1], 8)
        elif line.startswith(b"pos:"):
            position = int(line.split()[1])
    return flags, position


#: clone(2)'s flag for one shared working directory (and root, and umask).
CLONE_FS = 0x200
_CLONE = _ptrace.syscall_number("clone")
_CLONE3 = _ptrace.syscall_number("clone3")


def shares_fs(event: ForkEvent) -> bool:
    """Whether ``event``'s child shares its creator's working directory (CLONE_FS).

    The creator is stopped at the event, still inside its clone call: its flags are its
    first argument (clone) or the first field of the structure it points to (clone3).
    fork and vfork never share it.
    """
    try:
        registers = _ptrace.get_registers(event.pid)
        if registers.nr == _CLONE:
            return bool(registers.arg(0) & CLONE_FS)
        if registers.nr == _CLONE3:
            (flags,) = struct.unpack("<Q", _memory.read_bytes(event.pid, registers.arg(0), 8))
            return bool(flags & CLONE_FS)
        return False
    except OSError:
        # Unreadable (the creator was killed meanwhile): threads do share it in practice.
        return event.kind is ForkKind.CLONE and _same_thread_group(event.pid, event.child)


def _same_thread_group(parent: int, child: int) -> bool:
    def tgid(pid: int) -> int | None:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
        return None

    parent_group = tgid(parent)
    return parent_group is not None and parent_group == tgid(child)
