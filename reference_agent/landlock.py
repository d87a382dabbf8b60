"""Landlock: the kernel enforces the part of the sandbox it can express, below the agent.

Theory of operation:

Landlock (Linux 5.13+) lets a process restrict its own file access, and that of
everything it execs, to a set of trees, each with a set of access rights
("handled" rights not granted on a tree are refused beneath it). The agent
builds the ruleset before it forks the program (``ruleset_for``), and the child
applies it to itself just before ``execve`` (``Ruleset.restrict_self``), after
the tracer is attached and before the seccomp filter. From then on every open,
exec, create, remove, rename and link the program makes meets the kernel's
check at the moment the kernel resolves the path: a symlink swapped after the
agent's check, a path rewritten by a thread sharing memory, a directory
descriptor or ``/proc/self/fd`` trick all end at the same refusal.

Landlock can only *allow* trees in a default-deny set; it cannot refuse a tree
inside one it allows. So it expresses:

- ``--allow-only`` (with ``--allow-system``, the devices every program may
  open, the physical side of local mounts and the agent's own directories): the
  only trees with any handled right;
- ``--read-only`` on an allowed tree or on a tree that holds one: that tree
  gets the read rights only (execute, read a file, list a directory).

It does not express ``--deny`` (a tree inside what is allowed), nor a
``--read-only`` tree inside an allowed writable tree, nor any rule without
``--allow-only`` (everything else would have to stay allowed): those are the
agent's alone. Nor does Landlock govern stat, chmod, chown, extended attributes,
utimes, readlink or UNIX socket connects: the agent checks those (see
docs/sandbox.md for the whole division).

The handled rights follow the kernel's ABI version: 1 (the base rights), 2
(REFER: moving and linking across directories), 3 (TRUNCATE), 5 (IOCTL_DEV);
ABI 4 and 6 add network and scope rights that the sandbox does not restrict,
and ABI 7 logging flags.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ACCESS_FS",
    "READ_RIGHTS",
    "Grant",
    "Ruleset",
    "abi_version",
    "handled_rights",
    "plan",
    "ruleset_for",
]

_SYS_LANDLOCK_CREATE_RULESET: Final = 444
_SYS_LANDLOCK_ADD_RULE: Final = 445
_SYS_LANDLOCK_RESTRICT_SELF: Final = 446
_CREATE_RULESET_VERSION: Final = 1 << 0
_RULE_PATH_BENEATH: Final = 1
_PR_SET_NO_NEW_PRIVS: Final = 38

#: Filesystem access rights by name (linux/landlock.h), each with the ABI that added it.
ACCESS_FS: Final = {
    "EXECUTE": (1 << 0, 1),
    "WRITE_FILE": (1 << 1, 1),
    "READ_FILE": (1 << 2, 1),
    "READ_DIR": (1 << 3, 1),
    "REMOVE_DIR": (1 << 4, 1),
    "REMOVE_FILE": (1 << 5, 1),
    "MAKE_CHAR": (1 << 6, 1),
    "MAKE_DIR": (1 << 7, 1),
    "MAKE_REG": (1 << 8, 1),
    "MAKE_SOCK": (1 << 9, 1),
    "MAKE_FIFO": (1 << 10, 1),
    "MAKE_BLOCK": (1 << 11, 1),
    "MAKE_SYM": (1 << 12, 1),
    "REFER": (1 << 13, 2),
    "TRUNCATE": (1 << 14, 3),
    "IOCTL_DEV": (1 << 15, 5),
}
_BIT: Final = {name: bit for name, (bit, _) in ACCESS_FS.items()}
#: What a read-only tree keeps: run, read and list (and device ioctls, which change no file).
READ_RIGHTS: Final = _BIT["EXECUTE"] | _BIT["READ_FILE"] | _BIT["READ_DIR"] | _BIT["IOCTL_DEV"]
#: The only rights a rule on a file (not a directory) may grant.
_FILE_RIGHTS: Final = (
    _BIT["EXECUTE"] | _BIT["WRITE_FILE"] | _BIT["READ_FILE"] | _BIT["TRUNCATE"] | _BIT["IOCTL_DEV"]
)
#: Rights on the devices every program may open (sandbox.ALLOWED_DEVICES).
_DEVICE_RIGHTS: Final = (
    _BIT["READ_FILE"] | _BIT["WRITE_FILE"] | _BIT["TRUNCATE"] | _BIT["IOCTL_DEV"]
)

_LIBC: Final = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_syscall: Final = _LIBC.syscall
_syscall.restype = ctypes.c_long
_prctl: Final = _LIBC.prctl
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_prctl.restype = ctypes.c_int


def _errno_error(what: str) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{what}: {os.strerror(code)}")


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 when it has none (or it is disabled at boot)."""
    version = _syscall(
        _SYS_LANDLOCK_CREATE_RULESET,
        None,
        ctypes.c_size_t(0),
        ctypes.c_uint32(_CREATE_RULESET_VERSION),
    )
    return max(int(version), 0)


def handled_rights(abi: int) -> int:
    """Every filesystem right that ABI ``abi`` knows: the ruleset handles them all."""
    return sum(bit for bit, since in ACCESS_FS.values() if since <= abi)


@dataclass(frozen=True, slots=True)
class Grant:
    """One rule: ``access`` (a mask of ``ACCESS_FS`` bits) on ``path`` and everything beneath."""

    path: str
    access: int


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(root == "/" or path == root or path.startswith(root + "/") for root in roots)


def plan(
    allowed: Sequence[str] | None,
    read_only: Sequence[str],
    devices: Sequence[str],
    abi: int,
) -> tuple[Grant, ...] | None:
    """The rules that enforce an ``--allow-only`` sandbox; None when there is no such rule.

    Args:
        allowed: the allowed trees, every form (as given and real), the agent's
            directories included; None without ``--allow-only``.
        read_only: the ``--read-only`` trees.
        devices: device files every program may read and write.
        abi: the kernel's Landlock ABI version (>= 1).

    Returns:
        One grant per existing allowed tree and device; trees that do not exist
        (yet) cannot hold a rule and are left out: creating them is refused.
    """
    if allowed is None:
        return None
    handled = handled_rights(abi)
    grants: dict[str, int] = {}
    for root in allowed:
        access = READ_RIGHTS if _under(root, read_only) else handled
        grants[root] = grants.get(root, 0) | access
    for device in devices:
        grants[device] = grants.get(device, 0) | _DEVICE_RIGHTS
    found = []
    for path, access in grants.items():
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        if not stat.S_ISDIR(mode):
            access &= _FILE_RIGHTS
        found.append(Grant(path, access & handled))
    return tuple(found)


class Ruleset:
    """A Landlock ruleset built in the agent, applied by the program's child before its exec.

    The ruleset descriptor is close-on-exec: the program never holds it.
    """

    __slots__ = ("abi", "fd", "grants")

    def __init__(self, grants: Sequence[Grant], abi: int) -> None:
        """Create the ruleset and add ``grants``.

        Raises:
            OSError: the kernel refused the ruleset or a rule.
        """
        self.abi = abi
        self.grants = tuple(grants)
        attr = struct.pack("<Q", handled_rights(abi))  # handled_access_fs only
        buffer = ctypes.create_string_buffer(attr, len(attr))
        fd = _syscall(
            _SYS_LANDLOCK_CREATE_RULESET, buffer, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0)
        )
        if fd < 0:
            raise _errno_error("landlock_create_ruleset")
        self.fd = int(fd)
        try:
            for grant in self.grants:
                self._add(grant)
        except BaseException:
            self.close()
            raise

    def _add(self, grant: Grant) -> None:
        parent = os.open(grant.path, os.O_PATH | os.O_CLOEXEC)
        try:
            rule = struct.pack("<Qi", grant.access, parent)  # packed path_beneath_attr
            buffer = ctypes.create_string_buffer(rule, len(rule))
            if (
                _syscall(
                    _SYS_LANDLOCK_ADD_RULE,
                    ctypes.c_int(self.fd),
                    ctypes.c_int(_RULE_PATH_BENEATH),
                    buffer,
                    ctypes.c_uint32(0),
                )
                != 0
            ):
                raise _errno_error(f"landlock_add_rule {grant.path}")
        finally:
            os.close(parent)

    def restrict_self(self) -> None:
        """Apply the ruleset to the calling thread and what it execs (in the forked child).

        No allocation and no import: safe between fork and exec.

        Raises:
            OSError: from prctl or landlock_restrict_self.
        """
        if _prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise _errno_error("prctl(PR_SET_NO_NEW_PRIVS)")
        if _syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(self.fd), ctypes.c_uint32(0)) != 0:
            raise _errno_error("landlock_restrict_self")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def ruleset_for(
    allowed: Sequence[str] | None,
    read_only: Sequence[str],
    devices: Sequence[str],
    report: Callable[[str], None],
) -> Ruleset | None:
    """The ruleset for a sandbox, or None when Landlock cannot express it or is missing.

    A kernel without Landlock is said on ``report`` once, and the run goes on with the
    agent's checks alone (they enforce the same rules, without the kernel's backing
    against races).

    Raises:
        OSError: the kernel has Landlock but refused the ruleset (the run must not go on
            believing it is enforced).
    """
    if allowed is None:
        return None
    abi = abi_version()
    if abi < 1:
        report(
            f"aviary: sandbox: this kernel has no Landlock ({errno.errorcode.get(ctypes.get_errno(), '?')}); "
            "--allow-only is enforced by the agent's checks alone"
        )
        return None
    grants = plan(allowed, read_only, devices, abi)
    return Ruleset(grants or (), abi)
