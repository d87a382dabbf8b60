"""The real file a traced program's path names, resolved the way the kernel will resolve it.

The namespace (``namespace/``) works on logical paths, lexically. A sandbox
cannot: ``/tmp/link`` may be a symlink into a denied directory,
``/proc/self/root/etc/x`` and ``/dev/fd/3`` are the same files as ``/etc/x``
and descriptor 3, and ``a/../b`` after a symlink is the parent of the link's
target, not of the link. This module walks a path one component at a time
with ``lstat``/``readlink`` in the agent, in the program's view:

- ``/proc/self`` and ``/proc/thread-self`` mean the *program's* process and
  thread, not the agent's;
- magic links under ``/proc/PID/`` (``fd/N``, ``cwd``, ``root``, ``exe``)
  are followed through the path ``readlink`` gives for them; a link to an
  object with no path (``pipe:[12]``, ``socket:[7]``, an anonymous inode or
  a memfd) ends the walk at that object;
- ``..`` after a symlink goes to the parent of the symlink's target (the
  prefix walked so far has no symlinks left, so removing its last component
  is the physical parent);
- a component that does not exist ends the resolution: the rest is joined
  lexically (the kernel would fail there, or create the last component);
- any other failure to look a component up (ENAMETOOLONG for a path longer
  than the agent can name, EACCES, a magic link that cannot be read) ends the
  walk with that errno: what the agent cannot see, it cannot allow.

The walk assumes the program has the agent's root directory and mount
namespace, which holds while the sandbox refuses ``chroot``, ``setns`` and
mounting. It does not open anything, so it never blocks on a FIFO.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import stat
from collections import deque
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_SYMLINKS", "Walk", "thread_group", "walk"]

#: Symlinks followed in one resolution before the kernel says ELOOP (fs/namei.c MAXSYMLINKS).
MAX_SYMLINKS: Final = 40
#: What readlink of a /proc magic link says for an object that has no path.
_OBJECT_LINK: Final = re.compile(r"^(?:[a-z_]+:\[[^\]]*\]|anon_inode:.*|/memfd:.*)$")
_DELETED: Final = " (deleted)"
_PROC_PID: Final = re.compile(r"^/proc/\d+(?:/task/\d+)?/")
#: lstat errors that mean "not there" (the kernel fails or creates there); any other is refused.
_ABSENT: Final = (errno.ENOENT, errno.ENOTDIR)


@dataclass(frozen=True, slots=True)
class Walk:
    """Where a path leads.

    ``real`` is the absolute, symlink-free path of the file (or of where it
    would be created), or None when the path ends at an object with no path
    (a pipe, a socket, a memfd). ``visited`` lists every path looked up on the
    way, in order: each directory passed through, each symlink read, and the
    end. ``error`` is ELOOP when the symlinks loop, as the kernel would answer.

    ``object_link`` is the ``/proc/PID/fd/N`` (or ``exe``, ``cwd``...) link the
    walk ended at when it names an object with no path, so that the agent can
    still open the object itself (to read a memfd's ``#!`` line).

    ``pinned`` is a path the kernel may be given instead, to open the same file
    with no symlink left to follow (``openat2`` with ``RESOLVE_NO_SYMLINKS``):
    the symlink-free prefix that exists, then the rest of the path as given
    from the first missing component on (so that ``missing/..`` still fails
    as it would have). None when the walk went through a ``/proc`` magic link,
    whose object a path cannot name for sure (a deleted or renamed file).
    """

    real: str | None
    visited: tuple[str, ...]
    error: int | None = None
    pinned: str | None = None
    object_link: str | None = None


def thread_group(tid: int) -> int:
    """The process (thread group) thread ``tid`` belongs to; ``tid`` itself if it is gone."""
    try:
        with open(f"/proc/{tid}/status") as status:
            for line in status:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return tid


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def walk(
    path: str,
    *,
    base: str,
    follow: bool,
    tid: int,
    root: str = "/",
) -> Walk:
    """Resolve ``path`` as the kernel would for thread ``tid`` of the traced program.

    Args:
        path: the path argument as the program gave it.
        base: the absolute real directory a relative path starts from (its cwd or dirfd).
        follow: whether a symlink in the last component is followed (False for
            lstat, O_NOFOLLOW, unlink...); a trailing slash always follows.
        tid: the program's thread, for ``/proc/self`` (its process) and ``/proc/thread-self``.
        root: the directory ``/`` and ``..`` stop at (``openat2``'s RESOLVE_IN_ROOT).

    Returns:
        The resolution; see :class:`Walk`.
    """
    root = posixpath.normpath(root)
    pending = deque(_components(path))
    if path.endswith("/"):
        follow = True
    current = root if path.startswith("/") else posixpath.normpath(base)
    visited: list[str] = []
    links = 0
    exists = True
    magic = False
    pinned: str | None = None
    while pending:
        name = pending.popleft()
        if name == "..":
            if current != root:
                current = posixpath.dirname(current)
            continue
        if current == "/proc" and name == "self":
            name = str(thread_group(tid))
        elif current == "/proc" and name == "thread-self":
            name = f"{thread_group(tid)}/task/{tid}"
        candidate = posixpath.join(current, name)
        visited.append(candidate)
        if not exists:
            current = candidate
            continue
        try:
            mode = os.lstat(candidate).st_mode
        except OSError as exc:
            if exc.errno not in _ABSENT:
                return Walk(None, tuple(visited), exc.errno or errno.EACCES)
            exists = False  # the kernel fails here, or creates the last component
            pinned = posixpath.join(candidate, *pending)
            current = candidate
            continue
        if not stat.S_ISLNK(mode) or (not pending and not follow):
            current = candidate
            continue
        links += 1
        if links > MAX_SYMLINKS:
            return Walk(None, tuple(visited), errno.ELOOP)
        try:
            target = os.readlink(candidate)
        except OSError as exc:
            if exc.errno not in _ABSENT:
                return Walk(None, tuple(visited), exc.errno or errno.EACCES)
            exists = False  # gone since the lstat
            current = candidate
            continue
        if _PROC_PID.match(candidate + "/"):
            if _OBJECT_LINK.match(target):
                return Walk(None, tuple(visited), object_link=candidate)
            if target.endswith(_DELETED):
                target = target.removesuffix(_DELETED)
                magic = True  # the name may now belong to another file: no pin
        pending.extendleft(reversed(_components(target)))
        if target.startswith("/"):
            current = root
    if magic or (not exists and pinned is None):
        return Walk(current, tuple(visited))
    pinned = pinned or current
    return Walk(current, tuple(visited), pinned=pinned + "/" if path.endswith("/") else pinned)
