"""Open SFTP handles after a reconnect: reopened by path, kept only when it is the same file.

Strategy: a server's handle dies with its connection. SFTP v3 stat has no
inode, so "the path still names the file that was open" cannot be asked of
the server; the driver recognises the file by what the program last saw of
it instead. Each handle keeps a witness: the first :data:`WITNESS` bytes of
its last acknowledged read or write and their offset. After a reconnect the
handle is reopened by path (without O_CREAT, O_EXCL or O_TRUNC: the file
must already be there and must not be emptied) and the witness is read back:

- the same bytes at the same offset: the same file, the handle carries on
  (and the request that broke is sent again: a read or a write at an
  explicit offset does the same thing twice);
- the path is gone, cannot be opened, or holds other bytes there: ESTALE,
  and the handle stays stale until it is closed.

A handle that has seen no data has nothing to compare and is reopened by
path. The check is a content check, not an identity check: another file with
the same bytes at that offset passes it, and another writer that rewrote
those bytes during the outage fails it (ESTALE, the safe side). A write-only
handle reads its witness through a second, read-only handle (one more open
and close); a file it cannot read is not recognised: ESTALE. Appending
handles are reopened but their write in flight is not replayed (the server
chooses an append's offset: a replay could append twice).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Protocol

from paramiko.sftp import CMD_CLOSE, CMD_DATA, CMD_HANDLE, CMD_OPEN, CMD_READ, int64
from paramiko.sftp_attr import SFTPAttributes

__all__ = ["WITNESS", "Reopenable", "reopen", "witness_after_truncate"]

#: Bytes of the last read or write kept to recognise the file after a reconnect.
WITNESS = 64

Call = Callable[..., tuple[int, Any]]


class Reopenable(Protocol):
    """The part of an open-file entry that recovery reads and renews."""

    path: str
    flags: int
    remote: bytes
    generation: int
    witness: tuple[int, bytes] | None


def reopen(
    entry: Reopenable, call: Call, sftp_flags: Callable[[int], int], generation: int, where: str
) -> None:
    """Open ``entry.path`` on the current connection and check its witness.

    Args:
        entry: the stale handle's entry; renewed in place when the file is the same.
        call: one request and its reply on the current connection (the driver's ``call``).
        sftp_flags: open(2) flags -> SFTP open flags.
        generation: the current connection's number.
        where: names the server in the error.

    Raises:
        OSError: ESTALE when the path no longer names the file; a broken connection's
            error (ECONNRESET, ETIMEDOUT...) when the reopen itself could not be sent.
    """
    from drivers.sftp import SftpStatus  # the package's name for it, whichever module holds it

    flags = entry.flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC)
    path = os.fsencode(entry.path)
    try:
        reply, message = call(CMD_OPEN, path, sftp_flags(flags), SFTPAttributes(), path=entry.path)
    except SftpStatus as status:
        raise _stale(entry, where, f"it cannot be opened again ({status.strerror})") from None
    assert reply == CMD_HANDLE, reply
    remote: bytes = message.get_binary()
    if entry.witness is not None and not _holds(entry, remote, call, sftp_flags):
        with suppress(SftpStatus):  # the handle is abandoned either way
            call(CMD_CLOSE, remote, path=entry.path)
        offset = entry.witness[0]
        raise _stale(entry, where, f"it no longer holds what was read or written at {offset}")
    entry.remote, entry.generation = remote, generation


def _holds(entry: Reopenable, remote: bytes, call: Call, sftp_flags: Callable[[int], int]) -> bool:
    """Whether the reopened file holds the witness's bytes at the witness's offset."""
    from drivers.sftp import SftpStatus

    assert entry.witness is not None
    offset, expected = entry.witness
    reader = remote
    if entry.flags & os.O_ACCMODE == os.O_WRONLY:  # a write-only handle cannot read: ask another
        try:
            _, message = call(
                CMD_OPEN, os.fsencode(entry.path), sftp_flags(os.O_RDONLY), SFTPAttributes(),
                path=entry.path,
            )  # fmt: skip
        except SftpStatus:
            return False  # unreadable: the file cannot be recognised, so it is not kept
        reader = message.get_binary()
    try:
        kind, data = call(CMD_READ, reader, int64(offset), len(expected), path=entry.path)
        seen = data.get_string() if kind == CMD_DATA else b""
    except SftpStatus:
        seen = b""  # EOF: shorter than what was acknowledged there
    finally:
        if reader != remote:
            with suppress(SftpStatus):
                call(CMD_CLOSE, reader, path=entry.path)
    return bool(seen == expected)


def witness_after_truncate(
    witness: tuple[int, bytes] | None, length: int
) -> tuple[int, bytes] | None:
    """What of ``witness`` survives a truncate to ``length`` bytes (None: nothing)."""
    if witness is None:
        return None
    offset, data = witness
    kept = data[: max(0, length - offset)]
    return (offset, kept) if kept else None


def _stale(entry: Reopenable, where: str, why: str) -> OSError:
    return OSError(
        errno.ESTALE,
        f"{where}: the connection was lost and {entry.path} is not the file that was open: {why}",
        entry.path,
    )
