"""What the kernel checks before it walks ".." on a mount.

Logical paths are collapsed by name ("d/../a" is "a"), but the kernel walks them:
"d/.." exists only if d is a directory one can enter. Without this check
``open("missing/../a", O_CREAT)`` on a remote mount would make "a" where Linux
answers ENOENT (and "file/../a" would be found where Linux answers ENOTDIR). The same
holds for a local directory mounted elsewhere: its rewritten path is collapsed too.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from drivers import Driver
from reference_agent.namespace import LocalTarget, RemoteTarget, Target, logical_path

__all__ = ["dotdot_refusal"]


def dotdot_refusal(
    path: str,
    base: str,
    resolve: Callable[[str], Target],
    driver_for: Callable[[RemoteTarget], Driver],
) -> int | None:
    """ENOENT or ENOTDIR if a remote component that ".." steps out of is no directory.

    Args:
        path: the path as the program gave it.
        base: the logical directory it is relative to.
        resolve: the namespace's lookup of a logical path.
        driver_for: the driver of a remote target.

    Returns:
        The errno the kernel would answer, or None when every such component is a
        directory (or is plain local: the kernel walks the path as given).
    """
    parts = path.split("/")
    checked: set[str] = set()
    for index, part in enumerate(parts):
        if part != ".." or index == 0:
            continue
        prefix = logical_path("/".join(parts[:index]) or "/", base)
        if prefix in checked or base == prefix or base.startswith(prefix.rstrip("/") + "/"):
            continue  # the directory one is in, or one of its parents: walked already
        checked.add(prefix)
        target = resolve(prefix)
        try:
            if isinstance(target, RemoteTarget):
                is_dir = driver_for(target).stat(target.path).is_dir()
            elif isinstance(target, LocalTarget) and target.path != prefix:
                is_dir = stat.S_ISDIR(os.stat(target.path).st_mode)  # the rewrite is collapsed
            else:
                continue  # the kernel walks the path as given
        except FileNotFoundError:
            return errno.ENOENT
        except NotADirectoryError:
            return errno.ENOTDIR
        if not is_dir:
            return errno.ENOTDIR
    return None
