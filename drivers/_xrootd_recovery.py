"""Recovery for the XRootD driver: the bindings' reconnect settings, and reopening files.

Strategy: the bindings (XrdCl) reconnect by themselves, but with settings
meant for a batch system: a broken stream is retried at the start of each
120 s connection window, a stream that failed its retries is declared dead
for 30 minutes, a silent stream is declared broken after 60 s, and timeouts
are checked every 15 s. :func:`configure_bindings`
sets them from the driver's timeout and recovery budget, so a reconnect is
tried about every ``timeout`` seconds for no longer than the budget; the
settings are the process's (the bindings have one environment), the last
driver made sets them.

The bindings would also reopen a file by path after a reconnect, silently,
whatever file the path names by then; :func:`without_own_recovery` turns that
off for every file the driver opens, so the request that broke fails
(ETIMEDOUT, ECONNRESET) and the driver decides. :func:`reopen` opens the
path again, for update when the handle writes, never with create or truncate
(and with kXR_force when the server still holds the lost session's handle
open for writing, as it does until it notices that connection died, which
after a silent drop can take long), and compares the file's id (the server's
inode and device) with the one it had when first opened: the same id, the
handle carries on and the broken request is sent again (reads and writes at
explicit offsets do the same thing twice); another id or none, ESTALE.
"""

from __future__ import annotations

import ctypes
import errno
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "OpenFile",
    "SharedFile",
    "configure_bindings",
    "file_id",
    "reopen",
    "without_own_recovery",
]


@dataclass(slots=True)
class SharedFile:
    """One server handle, shared by every handle this driver opened on the same path.

    Why: the server lets one handle at a time have a file open for writing, and then
    refuses every other open of it, even for reading (kXR_FileLocked). A program that
    reads a file it holds open for writing is ordinary; its handles share one.
    """

    file: Any  # XRootD.client.File
    path: str  # the name it has now (renames through this driver move it)
    writable: bool
    refs: int = 1
    identity: str | None = None  # the server's id of the file, to recognise it when reopening
    broken: bool = False  # its connection broke: reopen before the next request


@dataclass(slots=True)
class OpenFile:
    """One handle the driver gave out: its path and flags at open, and its server handle."""

    path: str
    flags: int
    shared: SharedFile | None  # None: a directory opened read-only (fstat and close only)


def configure_bindings(client: Any, timeout: float, budget: float) -> None:
    """Reconnect about every ``timeout`` seconds, for at most ``budget`` seconds."""
    window = max(1, math.ceil(timeout))
    client.EnvPutInt("TimeoutResolution", 1)
    client.EnvPutInt("ConnectionWindow", window)
    client.EnvPutInt("ConnectionRetry", max(1, math.ceil(budget / window)))
    client.EnvPutInt("StreamErrorWindow", window)
    # A stream with a request outstanding and nothing received for half the timeout is
    # broken (a silent drop) and replaced: were it the whole timeout, the request would
    # expire first, no request would be outstanding, and a blackholed stream would stay.
    client.EnvPutInt("StreamTimeout", max(1, window // 2))


def without_own_recovery(file: Any) -> Any:
    """``file`` (an unopened ``XRootD.client.File``), never reopened by the bindings."""
    for name in ("ReadRecovery", "WriteRecovery"):
        result = file.set_property(name, "false")
        # The bindings return the bool without taking a reference for it: give it the one
        # it will lose, or each call brings True nearer to being freed (a crash at exit).
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(result))
    return file


def file_id(file: Any) -> str | None:
    """The server's id of an open file, from what the open returned (no round trip)."""
    status, info = file.stat(False)
    return str(info.id) if status.ok and info is not None else None


def reopen(
    client: Any,
    old: Any,
    url: str,
    update: bool,
    expected: str | None,
    seconds: int,
    errno_for_status: Callable[[Any], int],
) -> Any:
    """A new open file at ``url``, checked to be the file whose id was ``expected``.

    ``old`` is closed first: the bindings may have reopened it by themselves after
    reconnecting, and the server lets one handle at a time write a file.

    Raises:
        OSError: ESTALE when the path is gone or names another file; a broken
            connection's error while the server cannot be reached.
    """
    from XRootD.client.flags import OpenFlags

    if old.is_open():
        old.close(timeout=seconds)  # its own failure changes nothing: a new handle follows
    mode = OpenFlags.UPDATE if update else OpenFlags.READ
    file = without_own_recovery(client.File())
    status, _ = file.open(url, mode, timeout=seconds)
    if not status.ok and errno_for_status(status) == errno.EBUSY:
        # The server still holds the lost session's handle open for writing (it has not
        # noticed that connection die) and refuses a second writer: that writer is us.
        file = without_own_recovery(client.File())
        status, _ = file.open(url, mode | OpenFlags.FORCE, timeout=seconds)
    if not status.ok:
        code = errno_for_status(status)
        if code in (errno.ENOENT, errno.EISDIR, errno.ENOTDIR):
            raise OSError(errno.ESTALE, f"{url} is gone since the connection was lost", url)
        raise OSError(code or errno.EIO, str(status.message).strip(), url)
    found = file_id(file)
    if expected is None or found != expected:
        file.close(timeout=seconds)
        raise OSError(
            errno.ESTALE,
            f"{url} names another file (id {found}, not {expected}) since the connection was lost",
            url,
        )
    return file
