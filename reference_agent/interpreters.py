"""Programs whose interpreter the namespace moves: exec them through the namespace's loader.

Strategy: the kernel opens two files for an ``execve`` without a syscall the
agent could see: the ELF interpreter (``PT_INTERP``, the dynamic loader
``/lib64/ld-linux-x86-64.so.2``) and a script's ``#!`` interpreter. It opens
them by their real paths, so a namespace that maps ``/`` onto a package, or
``/lib64`` elsewhere, would still run the host's loader with the package's
libc (a mismatch that crashes where the two differ). When the namespace moves
an interpreter, the agent does what the kernel would, one level at a time,
with the interpreter found through the namespace:

- ``#!INTERP ARG`` script: exec INTERP with ``[INTERP, ARG, SCRIPT, argv[1:]...]``;
- ELF with a moved loader: exec the loader itself with
  ``[LOADER, --argv0, argv[0], PROGRAM, argv[1:]...]``, which opens PROGRAM
  (by its logical name, through the agent) and runs it as the kernel would
  have (``--argv0`` needs glibc 2.33; an older loader shows PROGRAM as argv[0]).

The price, only where an interpreter moved: ``/proc/self/exe`` names the
loader, not the program. Where nothing moved the kernel does it all, as before.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

from reference_agent.namespace import LocalTarget, Namespace, Refused

__all__ = ["ExecPlan", "Interpreter", "interpreter_of", "plan_exec"]

#: Interpreters of interpreters followed (a #! script run by a #! script...), as the kernel's 4.
MAX_INTERPRETERS = 4
_PT_INTERP = 3
_ELF64_PHDR = 56
#: The loader option that sets the program's argv[0] (glibc 2.33 and later).
_ARGV0_OPTION = b"--argv0"

#: An argv entry: a string already in the tracee (its address) or a new one.
Arg = int | str


@dataclass(frozen=True, slots=True)
class Interpreter:
    """What the kernel loads to run a file: its ELF loader or its ``#!`` line."""

    kind: Literal["elf", "script"]
    path: str
    arg: str | None = None  # a #! line's one optional argument


@dataclass(frozen=True, slots=True)
class ExecPlan:
    """The exec to make instead: this local file, with this argv."""

    file: str
    argv: list[Arg]


def interpreter_of(path: str) -> Interpreter | None:
    """The interpreter the kernel would load for local file ``path``, if any (64-bit ELF, #!)."""
    try:
        with open(path, "rb") as program:
            head = program.read(256)
            if head.startswith(b"#!"):
                line = head[2:].split(b"\n", 1)[0].strip()
                words = line.split(None, 1)  # the kernel's split: blanks, then one argument
                if not words or not words[0].startswith(b"/"):
                    return None
                name, arg = words[0], words[1].strip() if len(words) > 1 else b""
                return Interpreter("script", os.fsdecode(name), os.fsdecode(arg) if arg else None)
            if not head.startswith(b"\x7fELF") or head[4] != 2:
                return None
            (phoff,) = struct.unpack_from("<Q", head, 32)
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
            for index in range(min(phnum, 64)):
                program.seek(phoff + index * phentsize)
                header = program.read(_ELF64_PHDR)
                if len(header) < _ELF64_PHDR:
                    return None
                if struct.unpack_from("<I", header, 0)[0] == _PT_INTERP:
                    offset, size = struct.unpack_from("<Q", header, 8)[0], header[32:40]
                    program.seek(offset)
                    raw = program.read(min(struct.unpack("<Q", size)[0], 4096))
                    return Interpreter("elf", os.fsdecode(raw.split(b"\0", 1)[0]))
    except (OSError, struct.error, IndexError):
        return None
    return None


@cache
def _loader_takes_argv0(loader: str) -> bool:
    try:
        with open(loader, "rb") as image:
            return _ARGV0_OPTION in image.read()
    except OSError:
        return False


def plan_exec(
    namespace: Namespace, local: str, name: Arg, argv: Sequence[Arg]
) -> ExecPlan | int | None:
    """How to exec local file ``local`` so that its interpreters come through ``namespace``.

    Args:
        namespace: the run's mounts.
        local: the local file the program asked to run (after the namespace).
        name: the path as the program gave it: the loader or a script's interpreter
            opens it by that name, through the agent.
        argv: the program's arguments.

    Returns:
        None when the kernel's own exec is right (no interpreter moved); a
        negative errno when an interpreter is refused (hidden or denied); else
        the exec to make instead.
    """
    file, args, changed = local, list[Arg](argv), False
    for _ in range(MAX_INTERPRETERS):
        found = interpreter_of(file)
        if found is None:
            break
        target = namespace.resolve(found.path)
        if isinstance(target, Refused):
            return -target.errno
        if not isinstance(target, LocalTarget):
            return None  # a remote interpreter: left to the kernel, as without a namespace
        if found.kind == "elf":
            if target.path != found.path:
                argv0 = ["--argv0", args[0]] if args and _loader_takes_argv0(target.path) else []
                args = [target.path, *argv0, name, *args[1:]]  # the loader opens it by name
                file, changed = target.path, True
            break
        args = [found.path, *([found.arg] if found.arg else []), name, *args[1:]]
        name = found.path
        changed = changed or target.path != found.path
        file = target.path
    if not changed:
        return None
    if not os.access(file, os.X_OK):
        return -errno.EACCES
    return ExecPlan(file, args)
