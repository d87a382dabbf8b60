"""Recovery decisions for the Chirp driver: pure data and functions, no I/O.

Theory of operation
-------------------
The seeds' SP5 deployment lost its Chirp connection to a NAT that forgot idle
flows without sending RST. The cure, as in cctools' ``chirp_reli.c``, is to
notice quickly, reconnect, reopen every open file by path and check that each
path still names the file that was open. This module holds the parts of that
cure that are decisions rather than I/O, so the shell in ``_driver.py`` stays
a shell and the decisions can be tested without a network:

* :func:`tune_socket` (from ``drivers._network``) gives a socket a deadline for every wait the kernel
  makes on our behalf (``TCP_USER_TIMEOUT`` for unacknowledged data,
  keepalive for an idle connection), derived from the driver's timeout. A
  blackholed connection then dies in about one timeout, not the kernel's
  15-minute retransmission default, and never hangs in ``recv``.
* :data:`BROKEN_CONNECTION` says which errors mean "the connection broke,
  the request may or may not have been applied": only those start recovery.
* :func:`backoff_delays` is the reconnect schedule within the budget.
* :class:`OpenFile` remembers what a handle was opened as; :func:`reopen_flags`
  and :func:`same_file` decide how to reopen it and whether the file found
  by path is the file that was open (else the handle becomes ESTALE).
* :data:`APPLIED_IF_REPLAYED` says, per non-idempotent verb, which error on a
  replayed request means "our first attempt already did it".
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers import _network
from drivers._interface import StatResult
from drivers._network import (
    APPLIED_IF_REPLAYED,
    BROKEN_CONNECTION,
    RECONNECTABLE,
    backoff_delays,
    tune_socket,
)

__all__ = [
    "APPLIED_IF_REPLAYED",
    "BROKEN_CONNECTION",
    "DEFAULT_RECOVERY",
    "RECONNECTABLE",
    "RECOVERY_ENV",
    "SETTLE_SECONDS",
    "OpenFile",
    "backoff_delays",
    "recovery_budget",
    "reopen_flags",
    "same_file",
    "stale_reason",
    "tune_socket",
]

#: How old an mtime must be before "same mtime, other size" proves another file:
#: Chirp's mtimes are whole seconds, so a write in the same second as our stat
#: leaves the mtime alone (one second, plus one for the clocks' rounding).
SETTLE_SECONDS = 2.0
#: Seconds a driver keeps trying to reconnect after a connection broke.
DEFAULT_RECOVERY = 60.0
#: Environment variable overriding the budget (seconds; 0 disables recovery).
RECOVERY_ENV = "AVIARY_CHIRP_RECOVERY"


def recovery_budget(explicit: float | None) -> float:
    """The recovery budget in seconds: the argument, else the environment, else the default.

    Raises:
        ValueError: the environment holds something that is not a number >= 0.
    """
    return _network.recovery_budget(explicit, RECOVERY_ENV, DEFAULT_RECOVERY)


@dataclass(slots=True)
class OpenFile:
    """What we remember of an open handle: enough to reopen it and recognise it."""

    path: str
    flags: int
    letters: str  # the open letters sent the first time (r, w, c, t, a, x, s)
    mode: int
    fd: int  # the server's descriptor on the connection of ``generation``
    generation: int
    inode: int
    dev: int
    size: int  # size and mtime from the last stat reply on this handle
    mtime_ns: int
    settled: bool = False  # the mtime was already old when we saw it (see stale_reason)
    dirty: bool = False  # written or truncated by us since that stat
    stale: str | None = None  # why the handle answers ESTALE, once it does
    opened: StatResult | None = None  # the open reply's attributes (for stat_at_open)
    #: The driver's operation count when ``opened`` was last true for certain: an fstat
    #: with no operation in between answers it.
    opened_at: int = -1
    opened_when: float = 0.0  # when the open replied (monotonic seconds)

    def observed(self, st: StatResult, now: float) -> None:
        """Record a stat reply about this handle's file, received at ``now`` (epoch seconds)."""
        self.size, self.mtime_ns, self.dirty = st.st_size, st.st_mtime_ns, False
        self.settled = now - st.st_mtime_ns / 1e9 >= SETTLE_SECONDS


def reopen_flags(letters: str) -> str:
    """The open letters for a reopen: never create, truncate or insist on creating.

    The file existed when we opened it; creating it again would turn a file
    deleted during the outage into an empty impostor, and truncating would
    destroy what we wrote before the fault.
    """
    return "".join(letter for letter in letters if letter not in "ctx")


def stale_reason(old: OpenFile, new: StatResult) -> str | None:
    """Why the file now at ``old.path`` is not the file that was open, or None if it is.

    Same inode and device are required. The size must match too where it
    cannot have changed: we have not written it since our last stat, its
    mtime is the same, and that mtime was already ``SETTLE_SECONDS`` old when
    we saw it, so any later write would have moved it (Chirp's mtimes are
    whole seconds). A server clock running behind ours can still fool this
    into a false ESTALE for a file another client extended; never into
    accepting a different file, which the inode check decides.
    """
    if new.st_ino != old.inode or (old.dev and new.st_dev and new.st_dev != old.dev):
        return f"{old.path} is now inode {new.st_ino}, was {old.inode}"
    unchanged_mtime = old.settled and new.st_mtime_ns == old.mtime_ns
    if not old.dirty and unchanged_mtime and new.st_size != old.size:
        return f"{old.path} changed size {old.size} -> {new.st_size} with the same mtime"
    return None


def same_file(old: OpenFile, new: StatResult) -> bool:
    """Whether ``new`` (the stat of a reopen by path) is the file ``old`` had open."""
    return stale_reason(old, new) is None
