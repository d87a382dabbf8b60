"""The sans-I/O core of an HTTP/1.1 client connection.

Theory of operation
-------------------
A connection carries one request/response cycle at a time (no pipelining:
file servers gain little from it and a lost connection is easier to reason
about). Each side has a state; ``send`` moves ours, ``next_event`` moves
theirs, as h11 does in ``_state.py``::

    ours:   IDLE --Request--> SEND_BODY --EndOfMessage--> DONE
    theirs: IDLE --(our Request)--> SEND_RESPONSE --Response--> SEND_BODY
            --EndOfMessage--> DONE

An InformationalResponse (1xx) keeps them in SEND_RESPONSE. When both sides
are DONE and both allowed the connection to persist, ``start_next_cycle``
returns them to IDLE; otherwise (``reusable`` is false: HTTP/1.0 without
keep-alive, ``Connection: close``, a body delimited by the close) the shell
closes the socket and opens a new one for the next request. A server that closes the connection
while we are IDLE produces ``ConnectionClosed``; one that closes it in the
middle of a response is a :class:`RemoteProtocolError` (ECONNRESET).

How long a response body is (RFC 9112 section 6.3), decided once its head
is in: no body for a HEAD request and for 1xx, 204 and 304; chunked when
``Transfer-Encoding`` ends in ``chunked``; ``Content-Length`` bytes when that
is given; otherwise everything up to the server's close (and the connection
cannot be reused).

This module does no I/O: feed bytes with ``receive_data`` (``b""`` for end of
file), take events with ``next_event``, turn events into bytes with ``send``.
"""

from __future__ import annotations

import errno
import re
from enum import Enum

from drivers._http._events import (
    NEED_DATA,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Headers,
    InformationalResponse,
    LocalProtocolError,
    NeedData,
    RemoteProtocolError,
    Request,
    Response,
    header_value,
    header_values,
)

__all__ = ["MAX_HEAD_BYTES", "HttpConnection", "State"]


class State(Enum):
    IDLE = "IDLE"
    SEND_BODY = "SEND_BODY"
    SEND_RESPONSE = "SEND_RESPONSE"
    DONE = "DONE"
    CLOSED = "CLOSED"
    ERROR = "ERROR"


IDLE = State.IDLE
SEND_BODY = State.SEND_BODY
SEND_RESPONSE = State.SEND_RESPONSE
DONE = State.DONE
CLOSED = State.CLOSED
ERROR = State.ERROR

# Our side: which event is legal in which state, and where it leads.
CLIENT_TRANSITIONS: dict[tuple[State, type], State] = {
    (IDLE, Request): SEND_BODY,
    (SEND_BODY, Data): SEND_BODY,
    (SEND_BODY, EndOfMessage): DONE,
}
# Their side, driven by what we parse.
SERVER_TRANSITIONS: dict[tuple[State, type], State] = {
    (SEND_RESPONSE, InformationalResponse): SEND_RESPONSE,
    (SEND_RESPONSE, Response): SEND_BODY,
    (SEND_BODY, Data): SEND_BODY,
    (SEND_BODY, EndOfMessage): DONE,
    (IDLE, ConnectionClosed): CLOSED,
    (DONE, ConnectionClosed): CLOSED,
}

#: A response head (status line + headers) longer than this is a broken server.
MAX_HEAD_BYTES = 64 * 1024
_STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) ([0-9]{3})(?: ([^\r\n]*))?")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")


class HttpConnection:
    """The client side of one HTTP/1.1 connection, without I/O."""

    def __init__(self) -> None:
        self.our_state: State = IDLE
        self.their_state: State = IDLE
        self._buffer = bytearray()
        self._eof = False
        self._request: Request | None = None
        self._we_allow_reuse = True
        self._they_allow_reuse = True
        self._chunked_out = False
        # The body reader of the response in progress: ("length", remaining),
        # ("chunked", remaining in this chunk or -1 between chunks), ("close", 0).
        self._framing: str = ""
        self._remaining = 0

    # -- input -----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the socket; ``b""`` means the server closed it."""
        if data:
            if self._eof:
                raise RuntimeError("receive_data after end of file")
            self._buffer += data
        else:
            self._eof = True

    @property
    def reusable(self) -> bool:
        """Whether a next request may go on this connection after this cycle."""
        return self._we_allow_reuse and self._they_allow_reuse and not self._eof

    # -- output ----------------------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """Return the bytes for ``event`` and advance our state.

        Raises:
            LocalProtocolError: ``event`` is not legal now.
        """
        key = (self.our_state, type(event))
        if key not in CLIENT_TRANSITIONS:
            raise LocalProtocolError(
                f"cannot send {type(event).__name__} in state {self.our_state.name}"
            )
        self.our_state = CLIENT_TRANSITIONS[key]
        if isinstance(event, Request):
            return self._send_request(event)
        if isinstance(event, Data):
            if self._chunked_out:
                return b"%x\r\n%b\r\n" % (len(event.data), event.data) if event.data else b""
            return event.data
        assert isinstance(event, EndOfMessage)
        return b"0\r\n\r\n" if self._chunked_out else b""

    def _send_request(self, request: Request) -> bytes:
        if header_value(request.headers, "host") is None:
            raise LocalProtocolError("an HTTP/1.1 request needs a Host header")
        self._request = request
        self._we_allow_reuse = "close" not in [
            v.lower() for v in header_values(request.headers, "connection")
        ]
        self._chunked_out = "chunked" in [
            v.lower() for v in header_values(request.headers, "transfer-encoding")
        ]
        self.their_state = SEND_RESPONSE
        lines = [f"{request.method} {request.target} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in request.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")

    def start_next_cycle(self) -> None:
        """Both sides are DONE and the connection persists: go back to IDLE.

        Raises:
            LocalProtocolError: the cycle is not finished, or the connection must close.
        """
        if self.our_state is not DONE or self.their_state is not DONE:
            raise LocalProtocolError(
                f"cycle not finished (ours {self.our_state.name}, theirs {self.their_state.name})"
            )
        if not self.reusable:
            raise LocalProtocolError("this connection must be closed")
        self.our_state = self.their_state = IDLE
        self._request = None

    # -- events ----------------------------------------------------------------------

    def next_event(self) -> Event | NeedData:
        """The next whole event from the buffered bytes, or ``NEED_DATA``.

        Raises:
            RemoteProtocolError: the server broke HTTP or hung up mid-response.
        """
        try:
            event = self._next_event()
        except RemoteProtocolError:
            self.their_state = ERROR
            raise
        if event is NEED_DATA:
            return event
        key = (self.their_state, type(event))
        if key not in SERVER_TRANSITIONS:
            self.their_state = ERROR
            raise RemoteProtocolError(f"unexpected {type(event).__name__}")
        self.their_state = SERVER_TRANSITIONS[key]
        return event

    def _next_event(self) -> Event | NeedData:
        state = self.their_state
        if state is SEND_RESPONSE:
            return self._read_head()
        if state is SEND_BODY:
            return self._read_body()
        if state in (IDLE, DONE):
            if self._buffer:
                raise RemoteProtocolError("the server sent bytes nobody asked for")
            if self._eof:
                return ConnectionClosed()
            return NEED_DATA
        if state is ERROR:
            raise RemoteProtocolError("connection is broken", errno.ECONNRESET)
        return NEED_DATA

    def _hung_up(self) -> RemoteProtocolError:
        return RemoteProtocolError("server closed the connection mid-response", errno.ECONNRESET)

    # -- the response head -----------------------------------------------------------

    def _read_head(self) -> Event | NeedData:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise RemoteProtocolError("response head too long")
            if self._eof:
                raise self._hung_up()
            return NEED_DATA
        head = bytes(self._buffer[:end])
        del self._buffer[: end + 4]
        status_line, *header_lines = head.split(b"\r\n")
        match = _STATUS_LINE.fullmatch(status_line)
        if match is None:
            raise RemoteProtocolError(f"bad status line {status_line[:100]!r}")
        version, status = match.group(1).decode(), int(match.group(2))
        reason = (match.group(3) or b"").decode("latin-1")
        headers = _parse_header_lines(header_lines)
        if status < 200:
            return InformationalResponse(status, reason, headers)
        self._they_allow_reuse = _persists(version, headers)
        self._choose_framing(status, headers)
        return Response(status, reason, headers, version)

    def _choose_framing(self, status: int, headers: Headers) -> None:
        assert self._request is not None
        if self._request.method == "HEAD" or status in (204, 304):
            self._framing, self._remaining = "length", 0
            return
        codings = [v.lower() for v in header_values(headers, "transfer-encoding")]
        if codings:
            if codings[-1] != "chunked":
                raise RemoteProtocolError(f"unsupported transfer coding {codings}")
            self._framing, self._remaining = "chunked", -1
            return
        lengths = set(header_values(headers, "content-length"))
        if lengths:
            if len(lengths) != 1 or not next(iter(lengths)).isdigit():
                raise RemoteProtocolError(f"bad Content-Length {sorted(lengths)}")
            self._framing, self._remaining = "length", int(next(iter(lengths)))
            return
        self._framing, self._remaining = "close", 0
        self._they_allow_reuse = False

    # -- the response body -----------------------------------------------------------

    def _read_body(self) -> Event | NeedData:
        if self._framing == "length":
            return self._read_length_body()
        if self._framing == "chunked":
            return self._read_chunked_body()
        if self._buffer:
            return self._take(len(self._buffer))
        return EndOfMessage() if self._eof else NEED_DATA

    def _take(self, count: int) -> Data:
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return Data(data)

    def _read_length_body(self) -> Event | NeedData:
        if self._remaining == 0:
            return EndOfMessage()
        if self._buffer:
            data = self._take(min(self._remaining, len(self._buffer)))
            self._remaining -= len(data.data)
            return data
        if self._eof:
            raise self._hung_up()
        return NEED_DATA

    def _read_chunked_body(self) -> Event | NeedData:
        while True:
            if self._remaining > 0:
                if not self._buffer:
                    if self._eof:
                        raise self._hung_up()
                    return NEED_DATA
                data = self._take(min(self._remaining, len(self._buffer)))
                self._remaining -= len(data.data)
                if self._remaining == 0:
                    self._remaining = -2  # the CRLF after the chunk's data is owed
                return data
            if self._remaining == -2:
                if len(self._buffer) < 2:
                    return self._need_more()
                if self._buffer[:2] != b"\r\n":
                    raise RemoteProtocolError("chunk data not followed by CRLF")
                del self._buffer[:2]
                self._remaining = -1
            line_end = self._buffer.find(b"\r\n")
            if line_end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    raise RemoteProtocolError("chunk size line too long")
                return self._need_more()
            match = _CHUNK_SIZE.fullmatch(bytes(self._buffer[:line_end]))
            if match is None:
                raise RemoteProtocolError(f"bad chunk size line {bytes(self._buffer[:40])!r}")
            size = int(match.group(1), 16)
            if size > 0:
                del self._buffer[: line_end + 2]
                self._remaining = size
                continue
            # The last chunk: trailers (usually none) up to an empty line.
            if self._buffer[line_end + 2 : line_end + 4] == b"\r\n":
                del self._buffer[: line_end + 4]
                return EndOfMessage()
            trailer_end = self._buffer.find(b"\r\n\r\n", line_end)
            if trailer_end < 0:
                return self._need_more()
            trailer_lines = bytes(self._buffer[line_end + 2 : trailer_end]).split(b"\r\n")
            del self._buffer[: trailer_end + 4]
            return EndOfMessage(_parse_header_lines(trailer_lines))

    def _need_more(self) -> NeedData:
        if self._eof:
            raise self._hung_up()
        return NEED_DATA


def _parse_header_lines(lines: list[bytes]) -> Headers:
    headers: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise RemoteProtocolError("obsolete header line folding")
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise RemoteProtocolError(f"bad header line {line[:100]!r}")
        headers.append((name.decode("latin-1").lower(), value.strip().decode("latin-1")))
    return tuple(headers)


def _persists(version: str, headers: Headers) -> bool:
    tokens = [v.lower() for v in header_values(headers, "connection")]
    if version == "1.0":
        return "keep-alive" in tokens
    return "close" not in tokens
