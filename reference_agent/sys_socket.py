"""Handlers for the names of unix-domain sockets: bind and connect.

A unix socket's name is a path, resolved like any other through the namespace.
A remote server cannot hold a socket, so a name that leads to a remote mount is
refused: bind answers EOPNOTSUPP (said once per name), connect answers ENOENT
when nothing has that name and ECONNREFUSED when something does (nothing can be
listening on a remote name). The socket is never made in, or looked for in, the
local directory the kernel happens to hold. Names under a local mount are
rewritten to the local path; abstract names and other families run natively.
"""

from __future__ import annotations

import errno
import os
import struct

from reference_agent._abi import AT_FDCWD
from reference_agent._loop import Rewrite
from reference_agent.agent import Agent
from reference_agent.call import NATIVE, Call, Outcome
from reference_agent.namespace import LocalTarget, Refused, RemoteTarget

AF_UNIX = 1
#: sizeof(sockaddr_un.sun_path): the longest name with its NUL.
SUN_PATH_MAX = 108
_FAMILY = struct.Struct("<H")


def _unix_name(call: Call, address_index: int, length_index: int) -> bytes | None:
    """The path name of a sockaddr_un argument; None for other families and abstract names."""
    address, length = call.arg(address_index), call.arg(length_index) & 0xFFFFFFFF
    if address == 0 or length <= _FAMILY.size or length > _FAMILY.size + SUN_PATH_MAX:
        return None  # the kernel's own EINVAL/EFAULT
    raw = call.read(address, length)
    (family,) = _FAMILY.unpack_from(raw)
    path = raw[_FAMILY.size :]
    if family != AF_UNIX or path[:1] == b"\0":
        return None
    return path.split(b"\0", 1)[0]


def _named(agent: Agent, call: Call, binding: bool) -> Outcome:
    name = _unix_name(call, 1, 2)
    if not name:
        return None
    resolved = agent.resolve(call, AT_FDCWD, os.fsdecode(name))
    target = resolved.target
    if target is NATIVE:
        return None
    if isinstance(target, Refused):
        return -target.errno
    if isinstance(target, LocalTarget):
        local = os.fsencode(target.path)
        if len(local) >= SUN_PATH_MAX:
            return -errno.ENAMETOOLONG
        sockaddr = _FAMILY.pack(AF_UNIX) + local + b"\0"
        address = call.scratch_bytes(sockaddr)
        return Rewrite(call.registers.replace(args=(None, address, len(sockaddr))))
    if binding:
        if isinstance(target, RemoteTarget):
            try:
                agent.driver_for(call, target).lstat(target.path)
                return -errno.EADDRINUSE  # as Linux: the name is taken
            except FileNotFoundError:
                pass
        return agent.hole(call, f"remote path {resolved.logical} (a socket name)", errno.EOPNOTSUPP)
    if isinstance(target, RemoteTarget):
        agent.driver_for(call, target).lstat(target.path)  # ENOENT when nothing has that name
    return -errno.ECONNREFUSED


def sys_bind(agent: Agent, call: Call) -> Outcome:
    """Bind implements Linux syscall bind(2) for unix socket names in the namespace."""
    return _named(agent, call, binding=True)


def sys_connect(agent: Agent, call: Call) -> Outcome:
    """Connect implements Linux syscall connect(2) for unix socket names in the namespace."""
    return _named(agent, call, binding=False)
