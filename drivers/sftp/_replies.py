"""Checked reading of SFTP replies: the kind each request must get, fields that fit their packet.

Strategy: paramiko reads whatever a server sends. A reply of the wrong kind
(HANDLE to a STAT) is parsed as if it were the right one; a reply to a request
never sent is skipped while the wait goes on (a server sending such replies
holds the client for ever, each one within the timeout); a field longer than
what is left of its packet is padded with zeros; an entry count of four billion
is looped over. Every one of these is a server breaking the protocol, so each
is :class:`SftpProtocolError` (EPROTO) here, at once, before anything in the
reply is believed. The driver sends one request at a time, so any reply whose
id is not the request's is a lie, not a late answer.
"""

from __future__ import annotations

import errno
from typing import Any

from paramiko import sftp as packet
from paramiko.sftp_attr import SFTPAttributes

__all__ = ["REPLY_TO", "ReplyReader", "SftpProtocolError", "check_reply"]

#: The reply each request gets when it succeeds (a failure is a STATUS to any request).
REPLY_TO: dict[int, int] = {
    packet.CMD_OPEN: packet.CMD_HANDLE,
    packet.CMD_OPENDIR: packet.CMD_HANDLE,
    packet.CMD_READ: packet.CMD_DATA,
    packet.CMD_READDIR: packet.CMD_NAME,
    packet.CMD_READLINK: packet.CMD_NAME,
    packet.CMD_REALPATH: packet.CMD_NAME,
    packet.CMD_STAT: packet.CMD_ATTRS,
    packet.CMD_LSTAT: packet.CMD_ATTRS,
    packet.CMD_FSTAT: packet.CMD_ATTRS,
    packet.CMD_CLOSE: packet.CMD_STATUS,
    packet.CMD_WRITE: packet.CMD_STATUS,
    packet.CMD_SETSTAT: packet.CMD_STATUS,
    packet.CMD_FSETSTAT: packet.CMD_STATUS,
    packet.CMD_REMOVE: packet.CMD_STATUS,
    packet.CMD_MKDIR: packet.CMD_STATUS,
    packet.CMD_RMDIR: packet.CMD_STATUS,
    packet.CMD_RENAME: packet.CMD_STATUS,
    packet.CMD_SYMLINK: packet.CMD_STATUS,
}
#: Extended requests answered with data (the others answer a STATUS).
_EXTENDED_WITH_DATA = frozenset({"statvfs@openssh.com", "fstatvfs@openssh.com"})
#: Every packet type by name, for the error messages.
_NAMES = {
    code: name.removeprefix("CMD_")
    for name, code in vars(packet).items()
    if name.startswith("CMD_") and isinstance(code, int)
}
#: Bytes an entry of a NAME reply takes at least: two empty strings and attribute flags.
_MIN_NAME_ENTRY = 12
_FLAG_SIZE, _FLAG_UIDGID, _FLAG_PERMISSIONS, _FLAG_AMTIME = 1, 2, 4, 8
_FLAG_EXTENDED = 0x80000000


class SftpProtocolError(OSError):
    """The server broke the SFTP protocol (EPROTO): a reply that cannot be believed."""

    def __init__(self, text: str) -> None:
        super().__init__(errno.EPROTO, text)


def check_reply(command: int, args: tuple[Any, ...], reply: int) -> None:
    """Raise :class:`SftpProtocolError` unless ``reply`` is the kind ``command`` gets.

    ``args`` are the request's arguments (an EXTENDED request's first is its name).
    """
    expected = REPLY_TO.get(command)
    if command == packet.CMD_EXTENDED:
        name = args[0] if args else ""
        name = name.decode("ascii", "replace") if isinstance(name, bytes) else str(name)
        expected = packet.CMD_EXTENDED_REPLY if name in _EXTENDED_WITH_DATA else packet.CMD_STATUS
    if expected is not None and reply != expected:
        raise SftpProtocolError(
            f"the server answered {_NAMES.get(command, command)} with "
            f"{_NAMES.get(reply, f'reply type {reply}')}"
        )


class ReplyReader:
    """The fields of one reply, each checked to fit in what is left of the packet."""

    def __init__(self, message: Any, what: str) -> None:
        self._message = message
        self._left = len(message.get_remainder())
        self.what = what

    @property
    def left(self) -> int:
        """Bytes of the packet not read yet."""
        return self._left

    def _take(self, size: int) -> None:
        if size > self._left:
            raise SftpProtocolError(
                f"{self.what}: a field of {size} bytes in a reply with {self._left} left"
            )
        self._left -= size

    def uint32(self) -> int:
        self._take(4)
        value: int = self._message.get_int()
        return value

    def uint64(self) -> int:
        self._take(8)
        value: int = self._message.get_int64()
        return value

    def string(self) -> bytes:
        size = self.uint32()
        self._take(size)
        data: bytes = self._message.get_bytes(size)
        return data

    def count(self, smallest: int = _MIN_NAME_ENTRY) -> int:
        """A count of entries that each take at least ``smallest`` bytes of the packet."""
        number = self.uint32()
        if number * smallest > self._left:
            raise SftpProtocolError(
                f"{self.what}: {number} entries announced in a reply with {self._left} bytes left"
            )
        return number

    def attrs(self) -> SFTPAttributes:
        """SFTP v3 attributes (draft-ietf-secsh-filexfer-02, section 5)."""
        attrs = SFTPAttributes()
        flags = self.uint32()
        if flags & _FLAG_SIZE:
            attrs.st_size = self.uint64()
        if flags & _FLAG_UIDGID:
            attrs.st_uid, attrs.st_gid = self.uint32(), self.uint32()
        if flags & _FLAG_PERMISSIONS:
            attrs.st_mode = self.uint32()
        if flags & _FLAG_AMTIME:
            attrs.st_atime, attrs.st_mtime = self.uint32(), self.uint32()
        if flags & _FLAG_EXTENDED:
            for _ in range(self.count(smallest=8)):
                attrs.attr[self.string()] = self.string()
        return attrs
