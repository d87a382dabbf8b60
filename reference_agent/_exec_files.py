"""What the kernel loads to run a file: a ``#!`` line's program or an ELF ``PT_INTERP``.

The kernel opens a script's interpreter and a program's ELF interpreter
without a syscall the agent could see; the sandbox checks them by reading the
file first, as the kernel will.
"""

from __future__ import annotations

import os
import stat
import struct
from typing import Final

__all__ = ["loaded_interpreter"]

# ELF header fields the interpreter check reads.
_ELF_MAGIC: Final = b"\x7fELF"
_PT_INTERP: Final = 3


def loaded_interpreter(real: str) -> str | None:
    """What the kernel loads to run the file at ``real``: a ``#!`` line's program or PT_INTERP.

    ``real`` may be a ``/proc/PID/fd/N`` link to a memfd: it is opened through the link.

    Raises:
        OSError: a regular file the agent cannot open (the caller refuses it).
    """
    try:
        if not stat.S_ISREG(os.stat(real).st_mode):
            return None
    except OSError:
        return None  # gone: the kernel answers ENOENT
    nofollow = 0 if real.startswith("/proc/") else os.O_NOFOLLOW
    fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | nofollow)
    try:
        head = os.pread(fd, 256, 0)
        if head.startswith(b"#!"):
            words = head[2:].split(b"\n", 1)[0].split()
            return os.fsdecode(words[0]) if words else None
        if head.startswith(_ELF_MAGIC) and len(head) >= 64:
            return _elf_interpreter(fd, head)
    except struct.error:
        return None  # a truncated ELF header: the kernel refuses it (ENOEXEC)
    finally:
        os.close(fd)
    return None


def _elf_interpreter(fd: int, head: bytes) -> str | None:
    wide = head[4] == 2  # ELFCLASS64
    order = "<" if head[5] == 1 else ">"
    if wide:
        (phoff,) = struct.unpack_from(order + "Q", head, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
    else:
        (phoff,) = struct.unpack_from(order + "I", head, 28)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
    table = os.pread(fd, phentsize * min(phnum, 256), phoff)
    for index in range(min(phnum, len(table) // max(phentsize, 1))):
        entry = table[index * phentsize : (index + 1) * phentsize]
        if struct.unpack_from(order + "I", entry, 0)[0] != _PT_INTERP:
            continue
        if wide:
            (offset,) = struct.unpack_from(order + "Q", entry, 8)
            (size,) = struct.unpack_from(order + "Q", entry, 32)
        else:
            (offset,) = struct.unpack_from(order + "I", entry, 4)
            (size,) = struct.unpack_from(order + "I", entry, 16)
        return os.fsdecode(os.pread(fd, min(size, 4096), offset).split(b"\0", 1)[0])
    return None
