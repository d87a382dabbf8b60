"""What every sans-I/O protocol core shares (chirp, ftp, http/webdav).

Each core is a state machine fed bytes with ``receive_data`` and asked for
events with ``next_event``; it never touches a socket (h11's design). They
answer :data:`NEED_DATA` when the buffered bytes do not yet hold a whole
event, and raise :class:`ProtocolError` when the conversation cannot go on:
:class:`LocalProtocolError` when we asked for something the protocol does not
allow, :class:`RemoteProtocolError` when the server broke it. ``errno_hint``
is what the driver reports to the program (EPROTO unless the core knows better).
"""

from __future__ import annotations

import errno
from enum import Enum
from typing import Literal

__all__ = ["NEED_DATA", "LocalProtocolError", "NeedData", "ProtocolError", "RemoteProtocolError"]


class _Sentinel(Enum):
    NEED_DATA = "NEED_DATA"


#: Returned by ``next_event`` when the buffered bytes do not hold a whole event.
NEED_DATA: Literal[_Sentinel.NEED_DATA] = _Sentinel.NEED_DATA
NeedData = Literal[_Sentinel.NEED_DATA]


class ProtocolError(Exception):
    """The conversation cannot go on; ``errno_hint`` is what to report."""

    def __init__(self, message: str, errno_hint: int = errno.EPROTO) -> None:
        super().__init__(message)
        self.errno_hint = errno_hint


class LocalProtocolError(ProtocolError):
    """We tried something the protocol does not allow in this state (or at all)."""


class RemoteProtocolError(ProtocolError):
    """The server sent something the protocol does not allow, or hung up mid-reply."""
