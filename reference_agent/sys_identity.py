"""Handlers for identity: the id calls, uname's node name, and the owner in stat results.

They are in the table only for runs with identity options (``Entry.needs``), so
a plain run traps none of them. The answers come from ``agent.options.identity``.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable

from reference_agent._loop import Park, Rewrite
from reference_agent.agent import Agent
from reference_agent.call import Call, Outcome
from reference_agent.identity import UTS_FIELD, Identity

__all__ = [
    "OWNER_CALLS",
    "sys_getgid",
    "sys_getgroups",
    "sys_getresgid",
    "sys_getresuid",
    "sys_getuid",
    "sys_uname",
    "with_fake_owner",
]

_ID = struct.Struct("<I")
_OWNER = struct.Struct("<II")
#: Offset of the node name in struct utsname (after sysname).
_NODENAME_OFFSET = UTS_FIELD
#: Where each stat-family call's buffer is: (argument index, offset of st_uid, of st_gid).
#: struct stat: dev ino nlink (8 each) mode (4) uid gid; struct statx: mask blksize (4 each)
#: attributes (8) nlink (4) uid gid.
OWNER_CALLS: dict[str, tuple[int, int, int]] = {
    "stat": (1, 28, 32),
    "lstat": (1, 28, 32),
    "fstat": (1, 28, 32),
    "newfstatat": (2, 28, 32),
    "statx": (4, 20, 24),
}

Handler = Callable[[Agent, Call], Outcome]


def _identity(agent: Agent) -> Identity:
    identity = agent.options.identity
    assert identity is not None, "identity handlers are trapped only with an identity"
    return identity


def sys_getuid(agent: Agent, call: Call) -> Outcome:
    """Getuid implements Linux syscalls getuid(2) and geteuid(2) with the fake uid."""
    return _identity(agent).uid


def sys_getgid(agent: Agent, call: Call) -> Outcome:
    """Getgid implements Linux syscalls getgid(2) and getegid(2) with the fake gid."""
    return _identity(agent).gid


def _write_ids(call: Call, value: int) -> int:
    for index in range(3):
        call.write(call.arg(index), _ID.pack(value))
    return 0


def sys_getresuid(agent: Agent, call: Call) -> Outcome:
    """Getresuid implements Linux syscall getresuid(2): real, effective, saved all fake."""
    uid = _identity(agent).uid
    return None if uid is None else _write_ids(call, uid)


def sys_getresgid(agent: Agent, call: Call) -> Outcome:
    """Getresgid implements Linux syscall getresgid(2): real, effective, saved all fake."""
    gid = _identity(agent).gid
    return None if gid is None else _write_ids(call, gid)


def sys_getgroups(agent: Agent, call: Call) -> Outcome:
    """Getgroups implements Linux syscall getgroups(2): the fake gid is the only group."""
    gid = _identity(agent).gid
    if gid is None:
        return None
    size = call.fd(0)
    if size == 0:
        return 1
    if size < 0:
        return -errno.EINVAL
    call.write(call.arg(1), _ID.pack(gid))
    return 1


def sys_uname(agent: Agent, call: Call) -> Outcome:
    """Uname implements Linux syscall uname(2): native, then the fake node name."""
    hostname = _identity(agent).hostname
    if hostname is None:
        return None
    buffer = call.arg(0)
    name = hostname.encode()[: UTS_FIELD - 1].ljust(UTS_FIELD, b"\0")

    def renamed(result: int) -> int | None:
        if result == 0:
            call.write(buffer + _NODENAME_OFFSET, name)
        return None

    return Rewrite(call.registers, renamed)


def with_fake_owner(handler: Handler) -> Handler:
    """The stat-family ``handler``, with the owner fields of its result as the fake user's.

    Remote results (emulated) always show the fake owner; local ones (native, after
    the kernel wrote them) only where the file belongs to the real user.
    """

    def owned(agent: Agent, call: Call) -> Outcome:
        identity = _identity(agent)
        index, uid_at, gid_at = OWNER_CALLS[call.name]
        assert gid_at == uid_at + _ID.size  # one read and one write cover both
        owner_at = call.arg(index) + uid_at

        def patch(remote: bool) -> None:
            uid, gid = _OWNER.unpack(call.read(owner_at, _OWNER.size))
            shown = identity.owner(uid, gid, remote=remote)
            if shown != (uid, gid):
                call.write(owner_at, _OWNER.pack(*shown))

        outcome = handler(agent, call)
        if isinstance(outcome, Park):  # the stat family never waits; nothing to show yet
            return outcome
        if isinstance(outcome, int):
            if outcome == 0:
                patch(remote=call.on_remote_mount)
            return outcome
        registers = call.registers if outcome is None else outcome.registers
        earlier = None if outcome is None else outcome.on_exit

        def after(result: int) -> int | None:
            replaced = earlier(result) if earlier is not None else None
            if (result if replaced is None else replaced) == 0:
                patch(remote=False)
            return replaced

        return Rewrite(registers, after)

    owned.__doc__ = handler.__doc__
    owned.__name__ = getattr(handler, "__name__", "owned")
    return owned
