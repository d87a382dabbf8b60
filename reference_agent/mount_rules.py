"""Mount rules: as root, the kernel also enforces ``--deny`` and ``--read-only`` trees.

Theory of operation:

Landlock cannot refuse a tree inside what it allows (``landlock.py``), so
``--deny`` and ``--read-only`` are the agent's alone there, and a race the agent
cannot see (a path rewritten by a process sharing memory after the check, a
directory swapped for a symlink before a ``link``) reaches the file. When the
agent runs as root, the program's child gives itself a private mount
namespace just before its ``execve`` and, in it:

- bind-mounts each ``--read-only`` tree onto itself and remounts it read-only:
  every change below it (write, create, remove, rename, link, chmod, chown,
  utimes, xattrs) is EROFS from the kernel, whatever path led there;
- mounts an empty, read-only, mode-000 tmpfs over each denied directory, and
  ``/dev/null`` (read-only) over each denied file: what a race reaches there is
  empty.

The program cannot undo them: in sandbox mode the agent refuses ``mount``,
``umount2``, the new mount API, ``setns``, ``chroot`` and ``pivot_root``. The
agent itself stays in the original namespace and refuses the same paths by name
first, so the program sees the same answers as without the mounts; the mounts
only meet what got past the agent. Propagation is made private before anything
is mounted, so nothing reaches the machine's own mount table. Paths that do not
exist when the run starts carry no mount.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["MountPlan", "mount_plan"]

_CLONE_NEWNS: Final = 0x00020000
_MS_RDONLY: Final = 1
_MS_NOSUID: Final = 2
_MS_NODEV: Final = 4
_MS_NOEXEC: Final = 8
_MS_REMOUNT: Final = 32
_MS_BIND: Final = 4096
_MS_REC: Final = 16384
_MS_PRIVATE: Final = 1 << 18
_CAP_SYS_ADMIN: Final = 21

_LIBC: Final = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_mount: Final = _LIBC.mount
_mount.argtypes = (
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
)
_mount.restype = ctypes.c_int
_unshare: Final = _LIBC.unshare
_unshare.argtypes = (ctypes.c_int,)
_unshare.restype = ctypes.c_int


@dataclass(frozen=True, slots=True)
class _Mount:
    source: bytes | None
    target: bytes
    fstype: bytes | None
    flags: int
    data: bytes | None


class MountPlan:
    """The mounts for one run, built in the agent, applied by the program's child before exec."""

    __slots__ = ("mounts",)

    def __init__(self, mounts: Sequence[_Mount]) -> None:
        self.mounts = tuple(mounts)

    def apply(self) -> None:
        """Enter a private mount namespace and make the mounts (in the forked child).

        Raises:
            OSError: the kernel refused one; the child must not exec then.
        """
        if _unshare(_CLONE_NEWNS) != 0:
            _raise("unshare(CLONE_NEWNS)")
        if _mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
            _raise("making / private")
        for mount in self.mounts:
            if _mount(mount.source, mount.target, mount.fstype, mount.flags, mount.data) != 0:
                _raise(f"mount on {os.fsdecode(mount.target)}")


def _raise(what: str) -> None:
    code = ctypes.get_errno()
    raise OSError(code, f"{what}: {os.strerror(code)}")


def _real_forms(paths: Sequence[str]) -> list[str]:
    """Each rule path's real form once (the rules hold both the given and the real form)."""
    found: list[str] = []
    for path in paths:
        real = os.path.realpath(path)
        if real not in found and os.path.lexists(real):
            found.append(real)
    return found


def _read_only(target: bytes, source: bytes) -> list[_Mount]:
    return [
        _Mount(source, target, None, _MS_BIND | _MS_REC, None),
        _Mount(None, target, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY, None),
    ]


def _may_mount() -> bool:
    """Whether this process has CAP_SYS_ADMIN (root in a container may not)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1)
    except (OSError, ValueError):
        pass
    return False


def mount_plan(deny: Sequence[str], read_only: Sequence[str]) -> MountPlan | None:
    """The mounts that back ``deny`` and ``read_only`` with the kernel.

    Returns:
        None when there are none, or this process may not mount (not root, or root
        without CAP_SYS_ADMIN): the agent's checks then stand alone.
    """
    if not (deny or read_only) or os.geteuid() != 0 or not _may_mount():
        return None
    mounts: list[_Mount] = []
    for path in _real_forms(read_only):
        mounts += _read_only(os.fsencode(path), os.fsencode(path))
    for path in _real_forms(deny):
        target = os.fsencode(path)
        if stat.S_ISDIR(os.stat(path).st_mode):
            flags = _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
            mounts.append(_Mount(b"aviary-denied", target, b"tmpfs", flags, b"mode=000,size=4k"))
        else:
            mounts += _read_only(target, b"/dev/null")
    return MountPlan(mounts) if mounts else None
