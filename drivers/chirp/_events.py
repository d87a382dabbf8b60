"""Events of the Chirp client protocol, and the errors of its core.

The client sends :class:`AuthOffer`, :class:`ChallengeAnswer`,
:class:`Request` and :class:`PutData`; it receives :class:`AuthRefused`,
:class:`AuthAgreed`, :class:`UnixChallenge`, :class:`Authenticated` and, for
requests, a :class:`Failure` or one success event whose shape the request
declared (:class:`Done`, :class:`Data`, :class:`StatReply`, ...).

Errors follow h11: :class:`LocalProtocolError` means we misused the
protocol, :class:`RemoteProtocolError` means the server did; both carry the
errno the driver should report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from drivers._interface import StatFS, StatResult
from drivers._sansio import (
    NEED_DATA,
    LocalProtocolError,
    NeedData,
    ProtocolError,
    RemoteProtocolError,
)

__all__ = [
    "NEED_DATA",
    "AuthAgreed",
    "AuthOffer",
    "AuthRefused",
    "Authenticated",
    "ChallengeAnswer",
    "ContinuePut",
    "Data",
    "DataInto",
    "Done",
    "Event",
    "Failure",
    "ListReply",
    "LocalProtocolError",
    "LongListReply",
    "NeedData",
    "ProtocolError",
    "PutData",
    "RemoteProtocolError",
    "Reply",
    "Request",
    "StatFSReply",
    "StatReply",
    "UnixChallenge",
]


class Reply(Enum):
    """What follows the result line of a request, when the result is >= 0."""

    SIMPLE = "SIMPLE"  # nothing
    BYTES = "BYTES"  # exactly <result> raw bytes
    STAT = "STAT"  # one stat line
    STATFS = "STATFS"  # one statfs line
    LINES = "LINES"  # lines up to an empty line (getdir, getacl)
    LONGDIR = "LONGDIR"  # name line + stat line pairs up to an empty line
    PUT = "PUT"  # go-ahead, then our payload, then a second result line


# -- sent by the client -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthOffer:
    method: str


@dataclass(frozen=True, slots=True)
class ChallengeAnswer:
    """Our answer to a unix challenge: did we create the file?"""

    created: bool


@dataclass(frozen=True, slots=True)
class Request:
    """One request line (without its LF), optional payload, and its reply shape."""

    line: str
    reply: Reply = Reply.SIMPLE
    payload: bytes | memoryview = field(default=b"", repr=False)
    #: For BYTES replies: announcing more than this is a protocol error.
    limit: int | None = None
    #: For BYTES replies: receive the payload here (it must fit), answered by :class:`DataInto`.
    into: memoryview | None = field(default=None, repr=False, compare=False)

    @property
    def verb(self) -> str:
        return self.line.split(" ", 1)[0]

    def __repr__(self) -> str:
        extra = f", payload=<{len(self.payload)} bytes>" if self.payload else ""
        return f"Request({self.line!r}, {self.reply.name}{extra})"


@dataclass(frozen=True, slots=True)
class PutData:
    """The payload of a putfile, sent after the server's go-ahead."""

    data: bytes = field(repr=False)


# -- received by the client ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthRefused:
    method: str


@dataclass(frozen=True, slots=True)
class AuthAgreed:
    method: str


@dataclass(frozen=True, slots=True)
class UnixChallenge:
    """The server wants us to create this file to prove our uid."""

    path: str


@dataclass(frozen=True, slots=True)
class Authenticated:
    method: str
    subject: str


@dataclass(frozen=True, slots=True)
class Failure:
    """A negative result code."""

    code: int


@dataclass(frozen=True, slots=True)
class Done:
    value: int


@dataclass(frozen=True, slots=True)
class ContinuePut:
    """The server's go-ahead for a putfile payload."""


@dataclass(frozen=True, slots=True)
class Data:
    value: int
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class DataInto:
    """A BYTES reply whose ``value`` bytes were received into the request's ``into`` buffer."""

    value: int


@dataclass(frozen=True, slots=True)
class StatReply:
    value: int
    stat: StatResult


@dataclass(frozen=True, slots=True)
class StatFSReply:
    value: int
    statfs: StatFS


@dataclass(frozen=True, slots=True)
class ListReply:
    lines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LongListReply:
    """getlongdir: (name, lstat) pairs; the stat is None where the server sent zeros."""

    entries: tuple[tuple[str, StatResult | None], ...]


Event = (
    AuthOffer
    | ChallengeAnswer
    | Request
    | PutData
    | AuthRefused
    | AuthAgreed
    | UnixChallenge
    | Authenticated
    | Failure
    | Done
    | ContinuePut
    | Data
    | DataInto
    | StatReply
    | StatFSReply
    | ListReply
    | LongListReply
)
