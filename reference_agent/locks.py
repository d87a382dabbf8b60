"""Advisory locks on remote files, kept by the agent for the processes of one run.

Theory of operation: remote protocols have no record locks, so the agent keeps
them itself, with Linux's rules between the processes it traces:

- byte-range locks (fcntl F_SETLK/F_SETLKW/F_GETLK) belong to a process: a
  process never conflicts with itself, a new lock replaces the owner's own over
  its range (splitting or merging), and closing any descriptor of the file or
  exiting drops them all;
- open-file-description locks (F_OFD_*) live in the same byte ranges but belong
  to the open file description: dups and forks share them, and they go when
  the last descriptor of that description closes;
- flock locks are whole-file, belong to the open file description and never
  meet byte-range locks (Linux keeps the two apart).

A request that would wait is queued as a :class:`Waiter`; every release retries
the queue in arrival order and returns the waiters it granted. Deadlock
between waiting processes (byte-range locks only, as Linux) answers EDEADLK.

Other clients of the server do not see these locks: they are a promise between
the processes of one agent run, declared in :mod:`reference_agent.limits`.
This module is pure data: no syscalls, no tracees.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "F_RDLCK",
    "F_UNLCK",
    "F_WRLCK",
    "LOCK_EX",
    "LOCK_SH",
    "LOCK_UN",
    "OFFSET_MAX",
    "Conflict",
    "FileKey",
    "LockTable",
    "Owner",
    "RangeLock",
    "Waiter",
    "lock_range",
]

F_RDLCK, F_WRLCK, F_UNLCK = 0, 1, 2
LOCK_SH, LOCK_EX, LOCK_UN = 1, 2, 8
#: The last byte a lock "to end of file" covers, as Linux's OFFSET_MAX.
OFFSET_MAX = (1 << 63) - 1

#: Which file a lock is on: (the endpoint's driver, as ``id``; the server's inode number,
#: or the path on the server where the protocol has no inode numbers).
FileKey = tuple[int, int | str]


@dataclass(frozen=True, slots=True)
class Owner:
    """Who holds a lock: a process (``tgid``) or an open file description (``ident``)."""

    kind: Literal["process", "description"]
    ident: Hashable

    @property
    def pid(self) -> int:
        """The l_pid F_GETLK reports: the process, or -1 for an open file description."""
        return self.ident if self.kind == "process" and isinstance(self.ident, int) else -1


@dataclass(frozen=True, slots=True)
class RangeLock:
    """A held byte-range lock over bytes ``start`` .. ``end`` (inclusive)."""

    owner: Owner
    type: int  # F_RDLCK or F_WRLCK
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Conflict:
    """The lock a request met (F_GETLK's answer): its type, range and owner."""

    type: int
    start: int
    end: int
    owner: Owner


@dataclass(slots=True)
class Waiter:
    """A queued request: ``token`` names the stopped caller to wake (its tid)."""

    token: int
    key: FileKey
    owner: Owner
    type: int  # F_RDLCK/F_WRLCK for ranges, LOCK_SH/LOCK_EX for flock
    start: int = 0
    end: int = OFFSET_MAX
    flock: bool = False


def lock_range(start: int, length: int) -> tuple[int, int] | None:
    """Bytes ``start`` .. end (inclusive) of a request, as fcntl(2) reads l_start/l_len.

    ``start`` is already made absolute (l_whence applied). A zero length runs to the
    end of the file, whatever it becomes; a negative one covers the bytes before
    ``start``. None: the range starts before byte 0 or overflows (EINVAL).
    """
    if length > 0:
        end = start + length - 1
    elif length == 0:
        end = OFFSET_MAX
    else:
        start, end = start + length, start - 1
    if start < 0 or end > OFFSET_MAX:
        return None
    return start, end


def _conflicting(held: int, wanted: int) -> bool:
    return held == F_WRLCK or wanted == F_WRLCK


@dataclass
class LockTable:
    """Every lock and waiter of one agent run."""

    _ranges: dict[FileKey, list[RangeLock]] = field(default_factory=dict)
    _flocks: dict[FileKey, dict[Owner, int]] = field(default_factory=dict)
    waiters: list[Waiter] = field(default_factory=list)

    # -- byte ranges -------------------------------------------------------------------------

    def test_range(
        self, key: FileKey, owner: Owner, type: int, start: int, end: int
    ) -> Conflict | None:
        """The first lock of another owner that a request for ``type`` over the range meets."""
        for lock in self._ranges.get(key, ()):
            if (
                lock.owner != owner
                and lock.start <= end
                and start <= lock.end
                and _conflicting(lock.type, type)
            ):
                return Conflict(lock.type, lock.start, lock.end, lock.owner)
        return None

    def set_range(
        self, key: FileKey, owner: Owner, type: int, start: int, end: int
    ) -> Conflict | None:
        """Take (or with F_UNLCK drop) ``owner``'s lock over the range; the conflict if any."""
        if type != F_UNLCK:
            conflict = self.test_range(key, owner, type, start, end)
            if conflict is not None:
                return conflict
        kept: list[RangeLock] = []
        for lock in self._ranges.get(key, ()):
            if lock.owner != owner or lock.end < start or end < lock.start:
                kept.append(lock)
                continue
            if lock.start < start:  # the part before the new range stays as it was
                kept.append(RangeLock(owner, lock.type, lock.start, start - 1))
            if end < lock.end:
                kept.append(RangeLock(owner, lock.type, end + 1, lock.end))
        if type != F_UNLCK:
            kept.append(RangeLock(owner, type, start, end))
            kept = _merged(kept, owner, type)
        self._store(key, kept)
        return None

    def held_ranges(self, key: FileKey) -> list[RangeLock]:
        """The byte-range locks on ``key``, by start (for tests and diagnostics)."""
        return sorted(self._ranges.get(key, ()), key=lambda lock: (lock.start, lock.end))

    def _store(self, key: FileKey, locks: list[RangeLock]) -> None:
        if locks:
            self._ranges[key] = locks
        else:
            self._ranges.pop(key, None)

    # -- flock -------------------------------------------------------------------------------

    def set_flock(self, key: FileKey, owner: Owner, operation: int) -> Owner | None:
        """LOCK_SH, LOCK_EX or LOCK_UN for ``owner``; the owner in the way, if any.

        A conversion that has to wait gives up the old lock first, as Linux does.
        """
        holders = self._flocks.setdefault(key, {})
        if operation == LOCK_UN:
            holders.pop(owner, None)
        else:
            for other, held in holders.items():
                if other != owner and (held == LOCK_EX or operation == LOCK_EX):
                    holders.pop(owner, None)
                    if not holders:
                        del self._flocks[key]
                    return other
            holders[owner] = operation
        if not holders:
            del self._flocks[key]
        return None

    def flock_of(self, key: FileKey, owner: Owner) -> int | None:
        return self._flocks.get(key, {}).get(owner)

    def is_empty(self) -> bool:
        """Whether no lock is held and none is asked for, on any file."""
        return not (self._ranges or self._flocks or self.waiters)

    def has_locks(self, key: FileKey) -> bool:
        """Whether any lock is held on ``key`` (close need not look further if not)."""
        return key in self._ranges or key in self._flocks

    # -- files changing names -----------------------------------------------------------------

    def rekey(self, move: Callable[[FileKey], FileKey | None]) -> None:
        """Keep every lock and waiter on ``key`` under ``move(key)`` instead (None: where it
        is). For files known by name: a rename moves their locks, an unlink sets them apart."""
        for key in list(self._ranges):
            moved = move(key)
            if moved is not None and moved != key:
                self._ranges.setdefault(moved, []).extend(self._ranges.pop(key))
        for key in list(self._flocks):
            moved = move(key)
            if moved is not None and moved != key:
                self._flocks.setdefault(moved, {}).update(self._flocks.pop(key))
        for waiter in self.waiters:
            moved = move(waiter.key)
            if moved is not None:
                waiter.key = moved

    # -- owners going away -------------------------------------------------------------------

    def release(self, owner: Owner, key: FileKey | None = None) -> list[Waiter]:
        """Drop every lock of ``owner`` (on ``key`` only, if given) and its queued requests.

        Returns:
            The waiters this release lets through, already granted, in arrival order.
        """
        for file in [key] if key is not None else list(self._ranges):
            kept = [lock for lock in self._ranges.get(file, ()) if lock.owner != owner]
            self._store(file, kept)
        for file in [key] if key is not None else list(self._flocks):
            holders = self._flocks.get(file)
            if holders is not None:
                holders.pop(owner, None)
                if not holders:
                    del self._flocks[file]
        if key is None:
            self.waiters = [w for w in self.waiters if w.owner != owner]
        return self.grant_waiters()

    def cancel(self, token: int) -> None:
        """Forget the queued request of ``token`` (a caller that died waiting)."""
        self.waiters = [w for w in self.waiters if w.token != token]

    # -- waiting -----------------------------------------------------------------------------

    def blocked_by(self, waiter: Waiter) -> Owner | None:
        """Who is in the way of ``waiter`` now (None: it could be granted)."""
        if waiter.flock:
            holders = self._flocks.get(waiter.key, {})
            for other, held in holders.items():
                if other != waiter.owner and (held == LOCK_EX or waiter.type == LOCK_EX):
                    return other
            return None
        conflict = self.test_range(waiter.key, waiter.owner, waiter.type, waiter.start, waiter.end)
        return None if conflict is None else conflict.owner

    def would_deadlock(self, owner: Owner, blocker: Owner) -> bool:
        """Whether ``owner`` waiting for ``blocker`` closes a cycle of waiting processes."""
        seen: set[Owner] = set()
        current: Owner | None = blocker
        while current is not None and current not in seen:
            if current == owner:
                return True
            seen.add(current)
            queued = next((w for w in self.waiters if w.owner == current and not w.flock), None)
            current = None if queued is None else self.blocked_by(queued)
        return False

    def enqueue(self, waiter: Waiter) -> None:
        self.waiters.append(waiter)

    def grant_waiters(self) -> list[Waiter]:
        """Grant, in arrival order, every queued request nothing is in the way of any more."""
        granted: list[Waiter] = []
        progress = True
        while progress:
            progress = False
            for waiter in list(self.waiters):
                if self.blocked_by(waiter) is not None:
                    continue
                if waiter.flock:
                    self.set_flock(waiter.key, waiter.owner, waiter.type)
                else:
                    self.set_range(waiter.key, waiter.owner, waiter.type, waiter.start, waiter.end)
                self.waiters.remove(waiter)
                granted.append(waiter)
                progress = True
        return granted


def _merged(locks: list[RangeLock], owner: Owner, type: int) -> list[RangeLock]:
    """``locks`` with ``owner``'s touching or overlapping locks of ``type`` joined into one."""
    mine = sorted(
        (lock for lock in locks if lock.owner == owner and lock.type == type),
        key=lambda lock: lock.start,
    )
    others = [lock for lock in locks if not (lock.owner == owner and lock.type == type)]
    joined: list[RangeLock] = []
    for lock in mine:
        if joined and lock.start <= joined[-1].end + 1:
            last = joined[-1]
            joined[-1] = RangeLock(owner, type, last.start, max(last.end, lock.end))
        else:
            joined.append(lock)
    return others + joined
