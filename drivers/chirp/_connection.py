"""The sans-I/O core of a Chirp client connection.

Theory of operation
-------------------
A connection starts in CONNECTED and must authenticate before it may send
requests. Authentication is a negotiation: the client offers a method name,
the server answers ``yes`` or ``no``; after ``yes`` comes a method-specific
exchange (``address`` and ``hostname``: one ``yes``/``no`` line; ``unix``: a
challenge path that the client must create, then ``yes``/``no``), and on
success the server confirms with three lines ``yes``, the method, and the
subject it now knows us as. A failed method returns the connection to
CONNECTED so the next method can be offered.

In READY the client sends request lines (plus payloads) and may pipeline
them: every request pushes the shape of its reply (:class:`Reply`) on a
queue, and replies are parsed strictly in order. ``putfile`` is the one
two-phase request: the server's ``0`` go-ahead must arrive before the
payload is sent, so nothing may be pipelined behind it.

Bulk data is not copied more than it must be. A request may name a buffer
(``Request.into``) for its BYTES payload: once the result line is parsed, the
payload goes there, and while it is incomplete :meth:`receive_buffer` offers
the rest of it, so the I/O shell can ``recv_into`` it straight from the socket
(:meth:`received_into` then says how much came). :meth:`send_parts` gives a
request's line and payload as separate pieces for one ``sendmsg``.

This module does no I/O. The caller feeds bytes in with ``receive_data``,
takes events out with ``next_event`` (``NEED_DATA`` when more bytes are
needed) and turns events into bytes with ``send``.
"""

from __future__ import annotations

import re
from collections import deque
from enum import Enum

from drivers.chirp._events import (
    NEED_DATA,
    AuthAgreed,
    Authenticated,
    AuthOffer,
    AuthRefused,
    ChallengeAnswer,
    ContinuePut,
    Data,
    DataInto,
    Done,
    Event,
    Failure,
    ListReply,
    LocalProtocolError,
    LongListReply,
    NeedData,
    PutData,
    RemoteProtocolError,
    Reply,
    Request,
    StatFSReply,
    StatReply,
    UnixChallenge,
)
from drivers.chirp.codec import parse_stat_line, parse_statfs_line

__all__ = ["ChirpConnection", "State"]


class State(Enum):
    CONNECTED = "CONNECTED"  # may offer an auth method
    AWAIT_AGREEMENT = "AWAIT_AGREEMENT"  # offered; waiting for yes/no
    AWAIT_METHOD = "AWAIT_METHOD"  # agreed; waiting for the method's first line
    CHALLENGED = "CHALLENGED"  # unix: we owe a ChallengeAnswer
    AWAIT_VERDICT = "AWAIT_VERDICT"  # unix: answered; waiting for yes/no
    AWAIT_IDENTITY = "AWAIT_IDENTITY"  # waiting for "yes", method, subject
    READY = "READY"  # authenticated: requests may be sent
    PUT_WAIT_GO = "PUT_WAIT_GO"  # putfile sent; waiting for the go-ahead
    PUT_SEND = "PUT_SEND"  # we owe the putfile payload
    PUT_WAIT_FINAL = "PUT_WAIT_FINAL"  # payload sent; waiting for the final count
    BROKEN = "BROKEN"  # the stream is out of step: reconnect


CONNECTED = State.CONNECTED
AWAIT_AGREEMENT = State.AWAIT_AGREEMENT
AWAIT_METHOD = State.AWAIT_METHOD
CHALLENGED = State.CHALLENGED
AWAIT_VERDICT = State.AWAIT_VERDICT
AWAIT_IDENTITY = State.AWAIT_IDENTITY
READY = State.READY
PUT_WAIT_GO = State.PUT_WAIT_GO
PUT_SEND = State.PUT_SEND
PUT_WAIT_FINAL = State.PUT_WAIT_FINAL
BROKEN = State.BROKEN

# Which client events are legal in which state, and where they lead. ``send``
# follows this table and nothing else: an answer to a challenge that the server
# did not create goes back to CONNECTED (the next method is offered), and a
# putfile request waits for the server's go-ahead before its payload.
SEND_TRANSITIONS: dict[tuple[State, str], State] = {
    (CONNECTED, "auth-offer"): AWAIT_AGREEMENT,
    (CHALLENGED, "challenge-created"): AWAIT_VERDICT,
    (CHALLENGED, "challenge-missing"): CONNECTED,
    (READY, "request"): READY,
    (READY, "put-request"): PUT_WAIT_GO,
    (PUT_SEND, "put-data"): PUT_WAIT_FINAL,
}


def send_kind(event: Event) -> str:
    """The name :data:`SEND_TRANSITIONS` knows ``event`` by."""
    if isinstance(event, AuthOffer):
        return "auth-offer"
    if isinstance(event, ChallengeAnswer):
        return "challenge-created" if event.created else "challenge-missing"
    if isinstance(event, PutData):
        return "put-data"
    if isinstance(event, Request):
        return "put-request" if event.reply is Reply.PUT else "request"
    return type(event).__name__  # a reply: never sent, so never in the table


_RESULT = re.compile(rb"\s*([-+]?\d+)")
#: Bytes read ahead of a payload that has its own buffer: its result line ("16777216\n"
#: or an error) and the payload's first bytes, so the rest goes straight to the buffer.
_HEAD_READ = 32
#: A reply line longer than this is a lying or broken server, not a file name.
MAX_REPLY_LINE = 64 * 1024
#: A listed name (NAME_MAX is 255 bytes) longer than this means the server lies.
MAX_LISTED_NAME = 4096
#: A listing larger than this (about a million names) is refused, not held in memory.
MAX_LISTING_BYTES = 64 * 1024 * 1024


class ChirpConnection:
    """The client side of one Chirp connection, without I/O."""

    def __init__(self) -> None:
        self.state: State = CONNECTED
        self.method: str | None = None
        self.subject: str | None = None
        self._buffer = bytearray()
        self._eof = False
        self._pending: deque[Request] = deque()
        # Partial state of a list reply being received line by line.
        self._lines: list[str] | None = None
        self._entry_name: str | None = None
        self._entries: list[tuple[str, object]] = []
        self._listed_bytes = 0
        # The payload being received into a request's own buffer: the buffer and how
        # many of the announced bytes are in it so far.
        self._sink: memoryview | None = None
        self._sink_filled = 0
        # What receive_buffer handed out: the sink's rest, the head buffer, or nothing.
        self._receiving: memoryview | None = None
        self._head = memoryview(bytearray(_HEAD_READ))

    # -- input ------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the socket; ``b""`` means the server closed it."""
        if data:
            self._buffer += data
        else:
            self._eof = True

    def receive_buffer(self) -> memoryview | None:
        """Where the next bytes from the socket may go directly (then :meth:`received_into`).

        The rest of a payload that has a buffer of its own; before such a payload, a
        few bytes only, enough for its result line, so that the payload itself is not
        read into the connection's buffer and copied out again. None: the connection
        wants the bytes through :meth:`receive_data`.
        """
        if self._sink is not None and not self._buffer:
            self._receiving = self._sink[self._sink_filled :]
        elif self._sink is None and self._pending and self._pending[0].into is not None:
            self._receiving = self._head
        else:
            self._receiving = None
        return self._receiving

    def received_into(self, count: int) -> None:
        """``count`` bytes arrived in the view :meth:`receive_buffer` gave; 0: the server closed."""
        into, self._receiving = self._receiving, None
        if into is None or count > len(into):
            raise LocalProtocolError("received_into without a matching receive_buffer")
        if count == 0:
            self._eof = True
        elif into is self._head:
            self._buffer += into[:count]
        else:
            self._sink_filled += count

    @property
    def pending(self) -> int:
        """Requests sent whose replies have not been returned yet."""
        return len(self._pending)

    # -- output -----------------------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """Return the bytes for ``event`` and advance the state.

        Raises:
            LocalProtocolError: ``event`` is not legal now, or too long a line.
        """
        return b"".join(self.send_parts(event))

    def send_parts(self, event: Event) -> list[bytes | memoryview]:
        """Like :meth:`send`, as pieces to send in order: a payload is not copied.

        Raises:
            LocalProtocolError: ``event`` is not legal now, or too long a line.
        """
        key = (self.state, send_kind(event))
        if key not in SEND_TRANSITIONS:
            raise LocalProtocolError(
                f"cannot send {type(event).__name__} in state {self.state.name}"
            )
        if isinstance(event, Request) and event.reply is Reply.PUT and self._pending:
            raise LocalProtocolError("putfile cannot be pipelined behind other requests")
        self.state = SEND_TRANSITIONS[key]
        if isinstance(event, AuthOffer):
            self.method = event.method
            return [event.method.encode() + b"\n"]
        if isinstance(event, ChallengeAnswer):
            return [b"yes\n" if event.created else b"no\n"]
        if isinstance(event, PutData):
            return [event.data]
        assert isinstance(event, Request)  # the table admits nothing else
        self._pending.append(event)
        head = event.line.encode("ascii") + b"\n"
        return [head, event.payload] if event.payload else [head]

    # -- events -----------------------------------------------------------------------

    def next_event(self) -> Event | NeedData:
        """The next whole event from the buffered bytes, or ``NEED_DATA``.

        Raises:
            RemoteProtocolError: the server broke the protocol or hung up mid-reply.
        """
        try:
            event = self._next_event()
        except RemoteProtocolError:
            self.state = BROKEN
            raise
        if event is NEED_DATA and self._eof:
            self.state = BROKEN
            raise RemoteProtocolError("server closed the connection", errno_hint=104)  # ECONNRESET
        return event

    def _next_event(self) -> Event | NeedData:
        state = self.state
        if state is AWAIT_AGREEMENT:
            return self._read_agreement()
        if state is AWAIT_METHOD:
            return self._read_method_line()
        if state is AWAIT_VERDICT:
            return self._read_verdict()
        if state is AWAIT_IDENTITY:
            return self._read_identity()
        if state in (READY, PUT_WAIT_GO, PUT_WAIT_FINAL) and self._pending:
            return self._read_reply(self._pending[0])
        if state is BROKEN:
            raise RemoteProtocolError("connection is broken", errno_hint=104)
        return NEED_DATA

    # -- authentication readers ------------------------------------------------------------

    def _read_agreement(self) -> Event | NeedData:
        line = self._take_line()
        if line is None:
            return NEED_DATA
        assert self.method is not None
        if line == "yes":
            self.state = AWAIT_METHOD
            return AuthAgreed(self.method)
        if line == "no":
            self.state = CONNECTED
            return AuthRefused(self.method)
        raise RemoteProtocolError(f"expected yes/no to auth method, got {line!r}")

    def _read_method_line(self) -> Event | NeedData:
        line = self._take_line()
        if line is None:
            return NEED_DATA
        assert self.method is not None
        if self.method == "unix":
            self.state = CHALLENGED
            return UnixChallenge(line)
        if line == "yes":
            self.state = AWAIT_IDENTITY
            return self._read_identity()
        self.state = CONNECTED
        return AuthRefused(self.method)

    def _read_verdict(self) -> Event | NeedData:
        line = self._take_line()
        if line is None:
            return NEED_DATA
        assert self.method is not None
        if line == "yes":
            self.state = AWAIT_IDENTITY
            return self._read_identity()
        self.state = CONNECTED
        return AuthRefused(self.method)

    def _read_identity(self) -> Event | NeedData:
        lines = self._peek_lines(3)
        if lines is None:
            return NEED_DATA
        verdict, method, subject = lines
        if verdict != "yes":
            raise RemoteProtocolError(f"expected 'yes' before the identity, got {verdict!r}")
        self.method, self.subject = method, subject
        self.state = READY
        return Authenticated(method, subject)

    # -- reply readers ---------------------------------------------------------------------

    def _read_reply(self, request: Request) -> Event | NeedData:
        if self._sink is not None:
            return self._fill_sink()
        if self._lines is not None:
            return self._continue_list(request)
        if request.reply is Reply.PUT:
            return self._read_put()
        found = self._find_line(0)
        if found is None:
            return NEED_DATA
        line, pos = found
        value = _parse_result(line)
        shape = request.reply
        if value < 0 or shape is Reply.SIMPLE:
            self._consume(pos)
            self._pending.popleft()
            return Failure(value) if value < 0 else Done(value)
        if shape is Reply.BYTES:
            if request.limit is not None and value > request.limit:
                raise RemoteProtocolError(
                    f"{request.verb}: server announced {value} bytes, at most {request.limit} asked"
                )
            if request.into is not None:
                if value > len(request.into):
                    raise RemoteProtocolError(
                        f"{request.verb}: server announced {value} bytes, "
                        f"the buffer holds {len(request.into)}"
                    )
                self._consume(pos)
                self._sink, self._sink_filled = request.into[:value], 0
                return self._fill_sink()
            if len(self._buffer) < pos + value:
                return NEED_DATA
            with memoryview(self._buffer) as view:  # released before the buffer shrinks
                data = bytes(view[pos : pos + value])
            self._consume(pos + value)
            self._pending.popleft()
            return Data(value, data)
        if shape in (Reply.STAT, Reply.STATFS):
            detail = self._find_line(pos)
            if detail is None:
                return NEED_DATA
            self._consume(detail[1])
            self._pending.popleft()
            try:
                if shape is Reply.STAT:
                    return StatReply(value, parse_stat_line(detail[0]))
                return StatFSReply(value, parse_statfs_line(detail[0]))
            except ValueError as exc:
                raise RemoteProtocolError(str(exc)) from None
        # LINES and LONGDIR arrive line by line; keep what has come so far.
        self._consume(pos)
        self._lines = []
        self._entries = []
        self._entry_name = None
        self._listed_bytes = 0
        return self._continue_list(request)

    def _continue_list(self, request: Request) -> Event | NeedData:
        assert self._lines is not None
        while True:
            line = self._take_line()
            if line is None:
                return NEED_DATA
            self._listed_bytes += len(line) + 1
            if self._listed_bytes > MAX_LISTING_BYTES:
                raise RemoteProtocolError(
                    f"{request.verb}: listing longer than {MAX_LISTING_BYTES} bytes"
                )
            if request.reply is Reply.LINES:
                if line == "":
                    lines, self._lines = tuple(self._lines), None
                    self._pending.popleft()
                    return ListReply(lines)
                self._lines.append(line)
                continue
            # LONGDIR: alternate name and stat lines; an empty name ends the list.
            if self._entry_name is None:
                if line == "":
                    entries = tuple(self._entries)
                    self._lines, self._entries = None, []
                    self._pending.popleft()
                    return LongListReply(entries)  # type: ignore[arg-type]
                self._entry_name = line
                continue
            try:
                st = parse_stat_line(line)
            except ValueError:
                # Names go unencoded, so a name holding a newline arrives as
                # several lines: the name goes on until a stat line parses.
                self._entry_name += "\n" + line
                if len(self._entry_name) > MAX_LISTED_NAME:
                    raise RemoteProtocolError(
                        f"getlongdir: no stat line after {self._entry_name[:80]!r}..."
                    ) from None
                continue
            self._entries.append((self._entry_name, None if st.st_mode == 0 else st))
            self._entry_name = None

    def _fill_sink(self) -> Event | NeedData:
        """Move buffered bytes into the payload's buffer; DataInto once it is whole."""
        sink = self._sink
        assert sink is not None
        if self._buffer:
            take = min(len(self._buffer), len(sink) - self._sink_filled)
            with memoryview(self._buffer) as view:
                sink[self._sink_filled : self._sink_filled + take] = view[:take]
            self._consume(take)
            self._sink_filled += take
        if self._sink_filled < len(sink):
            return NEED_DATA
        self._sink = None
        self._pending.popleft()
        return DataInto(len(sink))

    def _read_put(self) -> Event | NeedData:
        line = self._take_line()
        if line is None:
            return NEED_DATA
        value = _parse_result(line)
        if self.state is PUT_WAIT_GO:
            if value < 0:
                self._pending.popleft()
                self.state = READY
                return Failure(value)
            self.state = PUT_SEND
            return ContinuePut()
        self._pending.popleft()
        self.state = READY
        return Failure(value) if value < 0 else Done(value)

    # -- buffer plumbing --------------------------------------------------------------------

    # Strategy: readers look ahead with offsets and consume from the front of
    # the buffer only once a whole unit (a result line and its payload) is
    # there, so a 16 MiB pread arriving in 64 KiB pieces is never re-copied.

    def _find_line(self, pos: int) -> tuple[str, int] | None:
        end = self._buffer.find(b"\n", pos)
        if end < 0:
            if len(self._buffer) - pos > MAX_REPLY_LINE:
                raise RemoteProtocolError(f"reply line longer than {MAX_REPLY_LINE} bytes")
            return None
        raw = bytes(self._buffer[pos:end]).replace(b"\r", b"")
        return raw.decode("utf-8", "surrogateescape"), end + 1

    def _consume(self, pos: int) -> None:
        del self._buffer[:pos]

    def _take_line(self) -> str | None:
        found = self._find_line(0)
        if found is None:
            return None
        self._consume(found[1])
        return found[0]

    def _peek_lines(self, count: int) -> list[str] | None:
        lines: list[str] = []
        pos = 0
        for _ in range(count):
            found = self._find_line(pos)
            if found is None:
                return None
            lines.append(found[0])
            pos = found[1]
        self._consume(pos)
        return lines


def _parse_result(line: str) -> int:
    match = _RESULT.match(line.encode("utf-8", "surrogateescape"))
    if not match:
        raise RemoteProtocolError(f"expected a result number, got {line!r}")
    return int(match.group(1))
