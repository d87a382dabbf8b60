"""Events of the HTTP/1.1 client core, and the errors it raises.

The client sends a :class:`Request`, then zero or more :class:`Data` and one
:class:`EndOfMessage`; it receives zero or more :class:`InformationalResponse`
(1xx), one :class:`Response`, zero or more :class:`Data` and one
:class:`EndOfMessage`, or :class:`ConnectionClosed` when the server hung up
between messages. The shapes follow h11's events, reduced to what a client of
file servers needs.

Header names are kept lower-case, values as the server sent them (latin-1
decoded, surrounding whitespace stripped), in order, duplicates kept.

Errors follow h11: :class:`LocalProtocolError` means we misused the protocol,
:class:`RemoteProtocolError` means the server did; both carry the errno the
driver should report (``errno_hint``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drivers._sansio import (
    NEED_DATA,
    LocalProtocolError,
    NeedData,
    ProtocolError,
    RemoteProtocolError,
)

__all__ = [
    "NEED_DATA",
    "ConnectionClosed",
    "Data",
    "EndOfMessage",
    "Event",
    "Headers",
    "InformationalResponse",
    "LocalProtocolError",
    "NeedData",
    "ProtocolError",
    "RemoteProtocolError",
    "Request",
    "Response",
    "header_value",
    "header_values",
    "normalize_headers",
]


#: (lower-case name, value) pairs in the order they were sent.
Headers = tuple[tuple[str, str], ...]

#: Characters that may not appear in a header name or value we send (CR, LF, NUL):
#: letting them through would let a file name inject headers.
_FORBIDDEN_IN_HEADERS = ("\r", "\n", "\0")


def normalize_headers(headers: object) -> Headers:
    """Lower-case names, check for CR/LF/NUL, and freeze into a tuple.

    Raises:
        LocalProtocolError: a name or value would break the message framing.
    """
    result: list[tuple[str, str]] = []
    assert isinstance(headers, (tuple, list)), headers
    for name, value in headers:
        name, value = str(name), str(value)
        if not name or any(c in name for c in (*_FORBIDDEN_IN_HEADERS, ":", " ")):
            raise LocalProtocolError(f"illegal header name {name!r}")
        if any(c in value for c in _FORBIDDEN_IN_HEADERS):
            raise LocalProtocolError(f"illegal character in header {name}: {value!r}")
        result.append((name.lower(), value.strip()))
    return tuple(result)


def header_values(headers: Headers, name: str) -> list[str]:
    """Every value of header ``name`` (lower-case), comma lists split."""
    values: list[str] = []
    for key, value in headers:
        if key == name:
            values += [part.strip() for part in value.split(",") if part.strip()]
    return values


def header_value(headers: Headers, name: str) -> str | None:
    """The value of a header that may appear once (the last one wins), or None."""
    found = None
    for key, value in headers:
        if key == name:
            found = value
    return found


# -- sent by the client ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """A request head: method, target (already percent-encoded) and headers.

    The client core adds nothing by itself: the I/O shell supplies Host and the
    body's framing (Content-Length or Transfer-Encoding: chunked).
    """

    method: str
    target: str
    headers: Headers = ()

    def __post_init__(self) -> None:
        if not self.method.isalpha() or not self.method.isupper():
            raise LocalProtocolError(f"illegal method {self.method!r}")
        if not self.target or any(c in self.target for c in (" ", *_FORBIDDEN_IN_HEADERS)):
            raise LocalProtocolError(f"illegal request target {self.target!r}")
        object.__setattr__(self, "headers", normalize_headers(self.headers))


# -- received by the client -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InformationalResponse:
    """A 1xx response head (100 Continue, 102 Processing): the real one follows."""

    status: int
    reason: str
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class Response:
    """A final response head."""

    status: int
    reason: str
    headers: Headers = ()
    http_version: str = "1.1"

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name.lower())


# -- both ways ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Data:
    """A piece of a message body."""

    data: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"Data(<{len(self.data)} bytes>)"


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    """The body is complete; ``headers`` are the chunked trailers, if any."""

    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection between messages (a clean end)."""


Event = Request | InformationalResponse | Response | Data | EndOfMessage | ConnectionClosed
