"""The identity a traced program tree sees: user and group ids, user name, host name.

A batch task often expects the identity it has at its home site (the seeds'
Objectivity case: a database that checks the owner of its files). Parrot's
``-U -G -u -N`` give it one; so does :class:`Identity` here:

- the id calls (``getuid`` ... ``getgroups``) answer the fake ids
  (:mod:`reference_agent.sys_identity`), trapped only when ids are asked for, so
  a run without identity options keeps the minimal filter;
- ``uname`` reports the fake node name, and ``/proc/sys/kernel/hostname`` reads it;
- stat results show the fake owner on remote files, and on local files owned
  by the real user;
- a user name needs a passwd entry (``whoami`` is ``getpwuid(geteuid())``), so,
  as Parrot does, the agent serves a synthetic ``/etc/passwd`` (and
  ``/etc/group``) through the namespace: the host's file with the fake entry first.
"""

from __future__ import annotations

import os
import pwd
import re
from dataclasses import dataclass, field
from pathlib import Path

from reference_agent.namespace import Mount

__all__ = ["HOSTNAME_FEATURE", "IDENTITY_FEATURE", "Identity", "IdentityError", "parse_id"]

#: Run features (see ``table.trapped_numbers``): the id calls and stat owners; uname.
IDENTITY_FEATURE = "identity"
HOSTNAME_FEATURE = "hostname"
#: Largest id a program can hold: (uid_t)-1 means "unchanged" to chown and setresuid.
MAX_ID = 0xFFFFFFFE
#: struct utsname fields are 65 bytes, the NUL included.
UTS_FIELD = 65
_USER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$")
_HOST_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,62})$")


class IdentityError(ValueError):
    """A bad identity option; the message names the option."""


def parse_id(option: str, text: str) -> int:
    """A uid or gid given on the command line.

    Raises:
        IdentityError: not a number from 0 to 4294967294.
    """
    if not text.isdigit() or int(text) > MAX_ID:
        raise IdentityError(f"{option} {text}: not a number from 0 to {MAX_ID}")
    return int(text)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the program is told it is; None leaves that part real.

    Raises:
        IdentityError: a user or host name a passwd file or uname could not hold.
    """

    uid: int | None = None
    gid: int | None = None
    user: str | None = None
    hostname: str | None = None
    real_uid: int = field(default_factory=os.getuid)
    real_gid: int = field(default_factory=os.getgid)

    def __post_init__(self) -> None:
        if self.user is not None and not _USER_NAME.match(self.user):
            raise IdentityError(f"--user {self.user!r}: not a valid user name")
        if self.hostname is not None and not _HOST_NAME.match(self.hostname):
            raise IdentityError(
                f"--hostname {self.hostname!r}: not a valid host name (letters, digits, . and -, "
                f"at most {UTS_FIELD - 1})"
            )
        for option, value in (("--uid", self.uid), ("--gid", self.gid)):
            if value is not None and not 0 <= value <= MAX_ID:
                raise IdentityError(f"{option} {value}: not a number from 0 to {MAX_ID}")

    @property
    def features(self) -> frozenset[str]:
        """The run features this identity needs trapped."""
        wanted = set()
        if self.uid is not None or self.gid is not None:
            wanted.add(IDENTITY_FEATURE)
        if self.hostname is not None:
            wanted.add(HOSTNAME_FEATURE)
        return frozenset(wanted)

    @property
    def effective_uid(self) -> int:
        return self.real_uid if self.uid is None else self.uid

    @property
    def effective_gid(self) -> int:
        return self.real_gid if self.gid is None else self.gid

    def owner(self, uid: int, gid: int, *, remote: bool) -> tuple[int, int]:
        """The owner a stat result shows: remote files and the real user's files are the fake user's."""
        if self.uid is not None and (remote or uid == self.real_uid):
            uid = self.uid
        if self.gid is not None and (remote or gid == self.real_gid):
            gid = self.gid
        return uid, gid

    def mounts(self, directory: Path) -> list[Mount]:
        """Write the synthetic files into ``directory``; the mounts that serve them.

        Args:
            directory: a private directory of the run (removed with it).

        Returns:
            Mounts of ``/etc/passwd`` and ``/etc/group`` (when a user name is given)
            and ``/proc/sys/kernel/hostname`` (when a host name is given).
        """
        files: dict[str, str] = {}
        if self.user is not None:
            files["/etc/passwd"] = self._passwd(_read_lines("/etc/passwd"))
            files["/etc/group"] = self._group(_read_lines("/etc/group"))
        if self.hostname is not None:
            files["/proc/sys/kernel/hostname"] = self.hostname + "\n"
        mounts = []
        for logical, text in files.items():
            physical = directory / ("identity-" + logical.strip("/").replace("/", "-"))
            physical.write_text(text)
            physical.chmod(0o644)
            mounts.append(Mount(logical, str(physical), source="identity"))
        return mounts

    def _passwd(self, lines: list[str]) -> str:
        assert self.user is not None
        uid, gid = self.effective_uid, self.effective_gid
        try:
            real = pwd.getpwuid(self.real_uid)
            home, shell = real.pw_dir, real.pw_shell
        except KeyError:
            home, shell = os.environ.get("HOME", "/"), "/bin/sh"
        entry = f"{self.user}:x:{uid}:{gid}:{self.user}:{home}:{shell}"
        # Ours first: getpwuid and getpwnam take the first match.
        kept = [line for line in lines if not _names_or_numbers(line, self.user, uid)]
        return "\n".join([entry, *kept]) + "\n"

    def _group(self, lines: list[str]) -> str:
        assert self.user is not None
        if self.gid is None:
            return "\n".join(lines) + "\n"  # the real group keeps its real name
        entry = f"{self.user}:x:{self.gid}:{self.user}"
        kept = [line for line in lines if not _names_or_numbers(line, self.user, self.gid)]
        return "\n".join([entry, *kept]) + "\n"


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []


def _names_or_numbers(line: str, name: str, number: int) -> bool:
    """A passwd or group line for ``name`` or for id ``number``."""
    fields = line.split(":")
    return len(fields) > 2 and (fields[0] == name or fields[2] == str(number))
