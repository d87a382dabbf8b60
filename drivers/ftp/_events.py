"""Events of the FTP control connection, and the errors of its core.

The client sends :class:`Command` (a verb and its argument, one line); the
server answers with :class:`Reply` (a three-digit code and one or more lines
of text, RFC 959 section 4.2). A transfer command (RETR, STOR, LIST, ...) gets
a preliminary 1yz reply, then a final one once the data connection is done.

Errors follow h11: :class:`LocalProtocolError` means we misused the
protocol (a line break in a path, a command while another awaits its reply),
:class:`RemoteProtocolError` means the server did (a malformed reply line, a
hang-up mid-reply); both carry the errno the driver should report.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from drivers._sansio import (
    NEED_DATA,
    LocalProtocolError,
    NeedData,
    ProtocolError,
    RemoteProtocolError,
)

__all__ = [
    "NEED_DATA",
    "Command",
    "Event",
    "LocalProtocolError",
    "NeedData",
    "ProtocolError",
    "RemoteProtocolError",
    "Reply",
    "ReplyKind",
]


class ReplyKind(Enum):
    """The first digit of a reply code (RFC 959 section 4.2.1)."""

    PRELIMINARY = 1  # 1yz: action started, expect another reply
    COMPLETION = 2  # 2yz: done
    INTERMEDIATE = 3  # 3yz: send the next command of the sequence (PASS after USER, RNTO)
    TRANSIENT = 4  # 4yz: not done, may work later (421 closes the connection)
    PERMANENT = 5  # 5yz: not done


@dataclass(frozen=True, slots=True)
class Command:
    """One command line: ``verb`` and an optional argument (a path, a number)."""

    verb: str
    argument: str | None = None

    @property
    def line(self) -> str:
        return self.verb if self.argument is None else f"{self.verb} {self.argument}"

    def __repr__(self) -> str:
        # Never print a password into a log or a test failure.
        shown = "****" if self.verb == "PASS" else self.argument
        return f"Command({self.verb!r}, {shown!r})"


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole server reply: its code and its lines (the code stripped from the first and last)."""

    code: int
    lines: tuple[str, ...]

    @property
    def kind(self) -> ReplyKind:
        return ReplyKind(self.code // 100)

    @property
    def ok(self) -> bool:
        """Completion (2yz) or intermediate (3yz): the command did what was asked so far."""
        return self.kind in (ReplyKind.COMPLETION, ReplyKind.INTERMEDIATE)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def first(self) -> str:
        return self.lines[0] if self.lines else ""

    def body(self) -> tuple[str, ...]:
        """The lines between the first and the last of a multi-line reply (FEAT, MLST, STAT)."""
        return self.lines[1:-1] if len(self.lines) > 2 else ()

    def __str__(self) -> str:
        return f"{self.code} {self.first}"


Event = Command | Reply
