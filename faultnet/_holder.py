"""The namespace holder: runs as ``unshare -Urnm --kill-child -- python -m faultnet._holder``.

Theory of operation
-------------------
It is the root of a private user namespace, and its own network namespace
is the NAT router's. It forks two children that each unshare one more
network namespace (the client's and the server's) and then sleep; it prints
one JSON line with the three PIDs, through whose ``/proc/PID/ns/net`` the
kernel back-end configures and enters them, and waits for its stdin to
close. Then it exits, and its children die with it (``PR_SET_PDEATHSIG``),
so the namespaces vanish even if the process that started it was killed:
its stdin closes when that process dies. Until then it reads commands from
stdin: ``renew server`` replaces the server's namespace with a new one (a
whole server host crashing and coming back).

Nothing here touches the host's network; only the standard library is used
because it runs before anything else is set up.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _spawn_netns_holder(libc: ctypes.CDLL) -> int:
    """Fork a child that lives in a new network namespace until its parent dies."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no Python-level cleanup, it only sleeps
        try:
            os.close(ready_r)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() == 1:  # the parent already died
                os._exit(1)
            if libc.unshare(CLONE_NEWNET) != 0:
                os._exit(2)
            os.write(ready_w, b"1")
            os.close(ready_w)
            while True:
                signal.pause()
        finally:
            os._exit(3)
    os.close(ready_w)
    ok = os.read(ready_r, 1)
    os.close(ready_r)
    if ok != b"1":
        raise OSError(f"the namespace holder {pid} could not unshare its network namespace")
    return pid


def main() -> int:
    libc = _libc()
    roles = {"client": _spawn_netns_holder(libc), "server": _spawn_netns_holder(libc)}
    print(json.dumps({"router": os.getpid(), **roles}))
    sys.stdout.flush()
    # One command per line until the kernel back-end closes stdin (or dies):
    # "renew ROLE" ends ROLE's namespace (a host that crashed) and makes a new,
    # empty one (the host rebooted); the answer is the new PID, as JSON.
    for line in sys.stdin:
        command, _, role = line.strip().partition(" ")
        if command == "renew" and role in roles:
            os.kill(roles[role], signal.SIGKILL)
            os.waitpid(roles[role], 0)
            roles[role] = _spawn_netns_holder(libc)
            print(json.dumps({role: roles[role]}))
            sys.stdout.flush()
    for pid in roles.values():
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
