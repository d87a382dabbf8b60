"""How the kernel walks ".." on a mount: through what a symlink points at, not its name.

Logical paths are collapsed by name ("d/../a" is "a"), but the kernel walks them: "d/.."
exists only if d is a directory one can enter, and if d is a symlink, ".." is the parent
of what it points at. Without this walk ``open("missing/../a", O_CREAT)`` on a remote
mount would make "a" where Linux answers ENOENT, "file/../a" would be found where Linux
answers ENOTDIR, and ``open("link/../x", O_CREAT)`` (or "../x" in a working directory
entered through a link) would make x beside the link instead of beside its target: a
write in the wrong directory. The same holds for a local directory mounted elsewhere: its
rewritten path is collapsed too.

Only the components a later ".." steps out of are looked up (one lstat each, a readlink
for a link); what follows the last ".." is left to the server, which follows links itself.
A link's relative target is walked in place of the link; an absolute one from the
program's root, in its namespace (as the kernel, and Parrot, do). :func:`physical_path`
looks up every component: a working directory is kept in that form, so that "../x" in it
needs no walk at all.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Callable

from drivers import Driver
from reference_agent.namespace import LocalTarget, RemoteTarget, Target, logical_path

__all__ = ["MAX_LINKS", "physical_dotdots", "physical_path"]

#: Links followed in one walk before it is ELOOP (the kernel's MAXSYMLINKS).
MAX_LINKS = 40

Resolve = Callable[[str], Target]
DriverFor = Callable[[RemoteTarget], Driver]


def physical_dotdots(path: str, base: str, resolve: Resolve, driver_for: DriverFor) -> str | int:
    """``path`` relative to ``base`` (a logical directory) as the kernel walks its "..".

    Args:
        path: the path as the program gave it.
        base: the logical directory it is relative to (taken as already walked).
        resolve: the namespace's lookup of a logical path.
        driver_for: the driver of a remote target.

    Returns:
        The logical path, collapsed; or the errno the kernel would answer (ENOENT, ENOTDIR,
        ELOOP) where a component that ".." steps out of is missing, no directory, or a
        link too many.
    """
    return _walk(path, base, resolve, driver_for, every=False)


def physical_path(logical: str, resolve: Resolve, driver_for: DriverFor) -> str | int:
    """``logical`` with every remote symlink in it followed: the directory's own path."""
    return _walk(logical, "/", resolve, driver_for, every=True)


def _walk(path: str, base: str, resolve: Resolve, driver_for: DriverFor, every: bool) -> str | int:
    current = "/" if path.startswith("/") else logical_path(base)
    pending = path.split("/")
    links = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = posixpath.dirname(current) or "/"
            continue
        candidate = posixpath.join(current, part)
        if not every and ".." not in pending:
            # Nothing later steps back out: the rest is the server's to walk.
            return logical_path("/".join([part, *pending]), current)
        looked = _look_up(candidate, resolve, driver_for)
        if isinstance(looked, int):
            return looked
        if looked is None:
            current = candidate
            continue
        links += 1
        if links > MAX_LINKS:
            return errno.ELOOP
        if looked.startswith("/"):
            current = "/"
        pending = looked.split("/") + pending
    return current


def _look_up(candidate: str, resolve: Resolve, driver_for: DriverFor) -> str | int | None:
    """What the walk meets at ``candidate``: None for a directory it may enter, a link's
    target, or an errno (ENOENT, ENOTDIR). Plain local paths are the kernel's to walk."""
    target = resolve(candidate)
    try:
        if isinstance(target, RemoteTarget):
            driver = driver_for(target)
            st = driver.lstat(target.path)
            if st.is_lnk():
                return driver.readlink(target.path)
            return None if st.is_dir() else errno.ENOTDIR
        if isinstance(target, LocalTarget) and target.path != candidate:
            # A local directory mounted elsewhere: its rewritten path is collapsed too.
            return None if stat.S_ISDIR(os.stat(target.path).st_mode) else errno.ENOTDIR
    except FileNotFoundError:
        return errno.ENOENT
    except NotADirectoryError:
        return errno.ENOTDIR
    return None
