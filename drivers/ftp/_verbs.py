"""The FTP verbs this client speaks, declared once, and the small reply grammars.

Strategy: like pyftpdlib's ``proto_cmds`` (pyftpdlib/handlers.py), each verb
is declared once in :data:`VERBS` with what it takes and what it does: whether
it needs an argument, whether it opens a data connection and in which
direction, and which reply codes mean success. The I/O shell looks a verb up
here instead of scattering those facts over its call sites, and
:func:`command` refuses, before anything is sent, a verb we never declared, a
missing argument, or an argument that the line-based protocol cannot carry
(CR or LF in a path: RFC 959 has no escape for them).

The rest of the module parses the replies that carry data on the control
connection: FEAT's feature list (RFC 2389), PASV's and EPSV's ports (RFC 959,
RFC 2428), MDTM's and MFMT's timestamps (RFC 3659 section 2.3).
"""

from __future__ import annotations

import calendar
import errno
import re
import time
from dataclasses import dataclass
from enum import Enum

from drivers.ftp._events import Command, LocalProtocolError, Reply

__all__ = [
    "FTP_PORT",
    "VERBS",
    "Direction",
    "Features",
    "VerbSpec",
    "command",
    "format_timeval",
    "parse_epsv",
    "parse_features",
    "parse_pasv",
    "parse_timeval",
]

FTP_PORT = 21


class Direction(Enum):
    """Which way a verb's data connection carries bytes (None: no data connection)."""

    DOWNLOAD = "download"  # server -> client: RETR, LIST, MLSD, NLST
    UPLOAD = "upload"  # client -> server: STOR, APPE


@dataclass(frozen=True, slots=True)
class VerbSpec:
    """What one verb takes and does."""

    arg: bool | None  # True: required, False: none, None: optional
    data: Direction | None
    success: frozenset[int]
    help: str


def _verb(
    arg: bool | None, success: tuple[int, ...], help_: str, data: Direction | None = None
) -> VerbSpec:
    return VerbSpec(arg, data, frozenset(success), help_)


DOWN, UP = Direction.DOWNLOAD, Direction.UPLOAD

#: Every verb the driver sends, as pyftpdlib's proto_cmds declares them on the server side.
VERBS: dict[str, VerbSpec] = {
    "USER": _verb(True, (230, 331, 332), "Syntax: USER <SP> user-name (set username)."),
    "PASS": _verb(None, (202, 230), "Syntax: PASS [<SP> password] (set user password)."),
    "FEAT": _verb(False, (211,), "Syntax: FEAT (list all new features supported)."),
    "OPTS": _verb(True, (200,), "Syntax: OPTS <SP> cmd [<SP> option] (set option for command)."),
    "TYPE": _verb(True, (200,), "Syntax: TYPE <SP> [A | I] (set transfer type)."),
    "PASV": _verb(False, (227,), "Syntax: PASV (open passive data connection)."),
    "EPSV": _verb(None, (229,), 'Syntax: EPSV [<SP> proto/"ALL"] (extended passive mode).'),
    "NOOP": _verb(False, (200,), "Syntax: NOOP (just do nothing)."),
    "QUIT": _verb(False, (221,), "Syntax: QUIT (quit current session)."),
    "CWD": _verb(True, (250,), "Syntax: CWD [<SP> dir-name] (change working directory)."),
    "SIZE": _verb(True, (213,), "Syntax: SIZE <SP> file-name (get file size)."),
    "MDTM": _verb(True, (213,), "Syntax: MDTM [<SP> path] (file last modification time)."),
    "MFMT": _verb(
        True, (213,), "Syntax: MFMT <SP> timeval <SP> path (file update last modification time)."
    ),
    "MLST": _verb(None, (250,), "Syntax: MLST [<SP> path] (show information about path)."),
    "STAT": _verb(
        None, (211, 212, 213), "Syntax: STAT [<SP> path name] (server stats [list files])."
    ),
    "MKD": _verb(True, (257,), "Syntax: MKD <SP> path (create directory)."),
    "RMD": _verb(True, (250,), "Syntax: RMD <SP> dir-name (remove directory)."),
    "DELE": _verb(True, (250,), "Syntax: DELE <SP> file-name (delete file)."),
    "RNFR": _verb(True, (350,), "Syntax: RNFR <SP> file-name (rename (source name))."),
    "RNTO": _verb(True, (250,), "Syntax: RNTO <SP> file-name (rename (destination name))."),
    "SITE": _verb(True, (200,), "Syntax: SITE <SP> site-command (execute SITE command)."),
    "REST": _verb(True, (350,), "Syntax: REST <SP> offset (set file offset)."),
    "RETR": _verb(True, (226, 250), "Syntax: RETR <SP> file-name (retrieve a file).", DOWN),
    "STOR": _verb(True, (226, 250), "Syntax: STOR <SP> file-name (store a file).", UP),
    "APPE": _verb(True, (226, 250), "Syntax: APPE <SP> file-name (append data to file).", UP),
    "LIST": _verb(None, (226, 250), "Syntax: LIST [<SP> path] (list files).", DOWN),
    "MLSD": _verb(None, (226, 250), "Syntax: MLSD [<SP> path] (list directory).", DOWN),
}


def command(verb: str, argument: str | None = None) -> Command:
    """A checked :class:`Command`.

    Raises:
        LocalProtocolError: an undeclared verb, a missing or extra argument, or
            an argument holding CR or LF (errno EINVAL: the name cannot be said).
    """
    spec = VERBS.get(verb)
    if spec is None:
        raise LocalProtocolError(f"verb {verb!r} is not in the verb table", errno.EINVAL)
    if spec.arg is True and not argument:
        raise LocalProtocolError(f"{verb} needs an argument", errno.EINVAL)
    if spec.arg is False and argument is not None:
        raise LocalProtocolError(f"{verb} takes no argument", errno.EINVAL)
    if argument is not None and ("\r" in argument or "\n" in argument):
        raise LocalProtocolError(
            f"{verb}: FTP cannot carry a line break inside a path: {argument!r}", errno.EINVAL
        )
    return Command(verb, argument)


# -- FEAT -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Features:
    """What FEAT advertised: verbs (upper case) and, for MLST, the facts and which are on."""

    verbs: frozenset[str]
    mlst_facts: tuple[str, ...] = ()
    mlst_enabled: frozenset[str] = frozenset()

    def has(self, verb: str) -> bool:
        return verb.upper() in self.verbs


def parse_features(reply: Reply) -> Features:
    """Parse a FEAT reply; a server without FEAT (5yz) has no extensions."""
    if reply.code != 211:
        return Features(frozenset())
    verbs: set[str] = set()
    facts: list[str] = []
    enabled: set[str] = set()
    for raw in reply.body():
        line = raw.strip()
        if not line:
            continue
        name, _, rest = line.partition(" ")
        verbs.add(name.upper())
        if name.upper() == "MLST":
            for fact in filter(None, rest.split(";")):
                plain = fact.rstrip("*").lower()
                facts.append(plain)
                if fact.endswith("*"):
                    enabled.add(plain)
    return Features(frozenset(verbs), tuple(facts), frozenset(enabled))


# -- passive mode -----------------------------------------------------------------------------

_PASV = re.compile(r"(\d+),\s*(\d+),\s*(\d+),\s*(\d+),\s*(\d+),\s*(\d+)")
_EPSV = re.compile(r"\((.)\1\1(\d+)\1\)")


def parse_pasv(reply: Reply) -> int:
    """The port of a 227 reply; its address is ignored (we connect to the control peer).

    Raises:
        ValueError: no h1,h2,h3,h4,p1,p2 in the reply.
    """
    match = _PASV.search(reply.text)
    if reply.code != 227 or match is None:
        raise ValueError(f"not a PASV reply: {reply}")
    p1, p2 = int(match.group(5)), int(match.group(6))
    return p1 * 256 + p2


def parse_epsv(reply: Reply) -> int:
    """The port of a 229 reply, ``(|||port|)``.

    Raises:
        ValueError: no port in the reply.
    """
    match = _EPSV.search(reply.text)
    if reply.code != 229 or match is None:
        raise ValueError(f"not an EPSV reply: {reply}")
    return int(match.group(2))


# -- timestamps -------------------------------------------------------------------------------

_TIMEVAL = re.compile(r"(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(?:\.(\d{1,9}))?")


def parse_timeval(text: str) -> int:
    """RFC 3659 ``YYYYMMDDHHMMSS[.sss]`` (UTC) as nanoseconds since the epoch.

    Raises:
        ValueError: not a time-val.
    """
    match = _TIMEVAL.search(text)
    if match is None:
        raise ValueError(f"not an FTP time-val: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    fraction = match.group(7) or ""
    return seconds * 1_000_000_000 + int(fraction.ljust(9, "0") or 0)


def format_timeval(ns: int) -> str:
    """Nanoseconds since the epoch as a whole-second ``YYYYMMDDHHMMSS`` (what MFMT takes)."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(ns // 1_000_000_000))
