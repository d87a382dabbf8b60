"""The sans-I/O core of an FTP control connection.

Theory of operation
-------------------
The server speaks first: a connection starts in GREETING and becomes READY
with the 220 greeting (a 120 "ready in N minutes" comes first from a busy
server; a 421 refuses us). In READY the client may send exactly one
:class:`Command`; the connection then waits in AWAIT_REPLY. FTP does not
pipeline: most servers read the next command only after answering the last,
and a transfer command's replies come in two steps, so one command is in
flight at any time and this core refuses a second.

The reply to a command decides the next state (:data:`REPLY_TRANSITIONS`): a
preliminary 1yz reply (150 "opening data connection") moves a transfer into
TRANSFER, where the client moves the bytes over the data connection and then
waits for the final reply; any other reply ends the command and returns to
READY. 421 ("service not available, closing control connection") may come at
any time and leaves the connection CLOSED, as does the reply to QUIT. A reply
that cannot be parsed, or a hang-up in the middle of one, leaves it BROKEN.

Replies follow RFC 959 section 4.2: one line ``NNN text``, or several lines
from ``NNN-text`` to a last line that starts with the same ``NNN`` and a
space. Lines in between may start with anything (MLST and STAT put listings
there), so only the code of the first line ends a multi-line reply.

This module does no I/O. The caller feeds bytes in with ``receive_data``,
takes events out with ``next_event`` (``NEED_DATA`` when more bytes are
needed) and turns commands into bytes with ``send``.
"""

from __future__ import annotations

import errno
from enum import Enum

from drivers.ftp._events import (
    NEED_DATA,
    Command,
    LocalProtocolError,
    NeedData,
    RemoteProtocolError,
    Reply,
    ReplyKind,
)

__all__ = [
    "AWAIT_REPLY",
    "BROKEN",
    "CLOSED",
    "GREETING",
    "MAX_REPLY_BYTES",
    "MAX_REPLY_LINE",
    "READY",
    "REPLY_TRANSITIONS",
    "TRANSFER",
    "FtpConnection",
    "State",
]


class State(Enum):
    GREETING = "GREETING"  # connected; waiting for the server's 220
    READY = "READY"  # may send a command
    AWAIT_REPLY = "AWAIT_REPLY"  # a command is in flight
    TRANSFER = "TRANSFER"  # a transfer got its 1yz: data moves, the final reply is due
    CLOSED = "CLOSED"  # QUIT answered, or 421: the server is gone
    BROKEN = "BROKEN"  # out of step with the server: reconnect


GREETING = State.GREETING
READY = State.READY
AWAIT_REPLY = State.AWAIT_REPLY
TRANSFER = State.TRANSFER
CLOSED = State.CLOSED
BROKEN = State.BROKEN

P, C, I, T, F = (  # noqa: E741 - the five reply kinds, as RFC 959 numbers them
    ReplyKind.PRELIMINARY,
    ReplyKind.COMPLETION,
    ReplyKind.INTERMEDIATE,
    ReplyKind.TRANSIENT,
    ReplyKind.PERMANENT,
)

#: Where a reply of each kind leads from each state that expects one.
REPLY_TRANSITIONS: dict[tuple[State, ReplyKind], State] = {
    (GREETING, P): GREETING,  # 120: ready in a few minutes; the 220 follows
    (GREETING, C): READY,
    (GREETING, T): CLOSED,
    (GREETING, F): CLOSED,
    (AWAIT_REPLY, P): TRANSFER,
    (AWAIT_REPLY, C): READY,
    (AWAIT_REPLY, I): READY,
    (AWAIT_REPLY, T): READY,
    (AWAIT_REPLY, F): READY,
    # pure-ftpd ends a transfer the client closed early with its statistics line under
    # the 150 code ("150 0.000 seconds (measured here)"), and sends nothing after it.
    (TRANSFER, P): READY,
    (TRANSFER, C): READY,
    (TRANSFER, T): READY,
    (TRANSFER, F): READY,
}

#: Which client events are legal in which state, and where they lead.
SEND_TRANSITIONS: dict[tuple[State, type], State] = {
    (READY, Command): AWAIT_REPLY,
}

#: A reply line longer than this is a broken server, not a long file name.
MAX_REPLY_LINE = 64 * 1024
#: A whole reply (a STAT listing of a large directory) longer than this is refused.
MAX_REPLY_BYTES = 64 * 1024 * 1024
_SERVICE_CLOSING = 421


class FtpConnection:
    """The client side of one FTP control connection, without I/O."""

    def __init__(self) -> None:
        self.state: State = GREETING
        self.last_command: Command | None = None
        self._buffer = bytearray()
        self._eof = False
        # A multi-line reply being gathered: its code and lines so far, where to look next.
        self._code: int | None = None
        self._lines: list[str] = []
        self._scan = 0

    # -- input ----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the control socket; ``b""`` means the server closed it."""
        if data:
            self._buffer += data
        else:
            self._eof = True

    # -- output ---------------------------------------------------------------------------

    def send(self, event: Command) -> bytes:
        """Return the bytes of ``event`` and advance the state.

        Raises:
            LocalProtocolError: a command while another is in flight, or after the end.
        """
        key = (self.state, type(event))
        if key not in SEND_TRANSITIONS:
            raise LocalProtocolError(
                f"cannot send {event.verb} in state {self.state.name}",
                errno.ECONNRESET if self.state in (CLOSED, BROKEN) else errno.EPROTO,
            )
        self.state = SEND_TRANSITIONS[key]
        self.last_command = event
        # RFC 2640: paths are UTF-8; bytes that are not (surrogate escapes) go as they came.
        return event.line.encode("utf-8", "surrogateescape") + b"\r\n"

    # -- events ---------------------------------------------------------------------------

    def next_event(self) -> Reply | NeedData:
        """The next whole reply from the buffered bytes, or ``NEED_DATA``.

        Raises:
            RemoteProtocolError: a malformed reply, or a hang-up in the middle of one.
        """
        if self.state is BROKEN:
            raise RemoteProtocolError("connection is broken", errno.ECONNRESET)
        try:
            reply = self._read_reply()
        except RemoteProtocolError:
            self.state = BROKEN
            raise
        if reply is NEED_DATA:
            if self._eof:
                self.state = BROKEN
                raise RemoteProtocolError("server closed the connection", errno.ECONNRESET)
            return NEED_DATA
        self._advance(reply)
        return reply

    def _advance(self, reply: Reply) -> None:
        if reply.code == _SERVICE_CLOSING or (
            self.last_command is not None and self.last_command.verb == "QUIT"
        ):
            self.state = CLOSED
            return
        if self.state not in (GREETING, AWAIT_REPLY, TRANSFER):
            self.state = BROKEN
            raise RemoteProtocolError(f"unsolicited reply {reply}", errno.EPROTO)
        following = REPLY_TRANSITIONS.get((self.state, reply.kind))
        if following is None:
            self.state = BROKEN
            raise RemoteProtocolError(
                f"reply {reply} makes no sense after {self.last_command!r}", errno.EPROTO
            )
        self.state = following

    # -- reply parsing --------------------------------------------------------------------

    # Strategy: a multi-line reply is gathered line by line, keeping the lines
    # already seen (self._lines) so that a listing arriving in many small
    # segments is scanned once, not once per segment.

    def _read_reply(self) -> Reply | NeedData:
        while True:
            line = self._take_line()
            if line is None:
                return NEED_DATA
            if self._code is None:
                code, separator, text = _split_first_line(line)
                if separator == " ":
                    return Reply(code, (text,))
                self._code, self._lines = code, [text]
                continue
            if len(line) >= 4 and line[:3] == str(self._code) and line[3] == " ":
                code, self._code = self._code, None
                lines, self._lines = (*self._lines, line[4:]), []
                return Reply(code, lines)
            # RFC 959 lets servers indent body lines; a line "NNN-..." inside stays text.
            self._lines.append(line)
            if sum(map(len, self._lines)) > MAX_REPLY_BYTES:
                raise RemoteProtocolError(f"reply longer than {MAX_REPLY_BYTES} bytes")

    def _take_line(self) -> str | None:
        end = self._buffer.find(b"\n", self._scan)
        if end < 0:
            self._scan = len(self._buffer)
            if self._scan > MAX_REPLY_LINE:
                raise RemoteProtocolError(f"reply line longer than {MAX_REPLY_LINE} bytes")
            return None
        raw = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        self._scan = 0
        return raw.removesuffix(b"\r").decode("utf-8", "surrogateescape")


def _split_first_line(line: str) -> tuple[int, str, str]:
    """``"250-Start of list"`` -> (250, "-", "Start of list").

    Raises:
        RemoteProtocolError: the line does not start with a reply code.
    """
    if len(line) < 3 or not line[:3].isdigit() or line[0] not in "12345":
        raise RemoteProtocolError(f"expected a reply code, got {line[:80]!r}")
    separator = line[3] if len(line) > 3 else " "
    if separator not in " -":
        raise RemoteProtocolError(f"malformed reply line {line[:80]!r}")
    return int(line[:3]), separator, line[4:]
