"""Where a run starts: its first program and working directory, found in the namespace.

The first ``execve`` happens before the tracer loop answers anything, and a
process starts in a real directory, so both are resolved here, before the
start, the way the agent resolves any path: a program looked up in ``PATH``
through the mounts (a package's ``/usr/bin/python3``, not the host's), and a
starting directory that a mount redirects started in its physical place.
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Mapping

from reference_agent.namespace import LocalTarget, Namespace, Refused, RemoteTarget, logical_path

__all__ = ["find_program", "physical_directory"]


def physical_directory(namespace: Namespace, logical: str) -> str | None:
    """The local directory to start in for logical ``logical``; None if it is not local."""
    target = namespace.resolve(logical)
    return target.path if isinstance(target, LocalTarget) else None


def find_program(
    namespace: Namespace, program: str, env: Mapping[str, str], cwd: str
) -> tuple[str, str] | None:
    """The (logical, local) path of the program ``execvp`` would run, seen through the mounts.

    Args:
        namespace: the run's mount table.
        program: ``argv[0]``; looked up in ``env``'s PATH if it has no slash.
        env: the program's environment.
        cwd: the logical starting directory (for relative names).

    Returns:
        The first candidate that is an executable local file; None if one is
        remote (the kernel cannot exec it: left to the usual search).

    Raises:
        FileNotFoundError, PermissionError: no candidate can run, with ``program`` named.
    """
    if "/" in program:
        candidates = [program]
    else:
        candidates = [
            posixpath.join(d or ".", program) for d in env.get("PATH", os.defpath).split(":")
        ]
    refused = False
    for candidate in candidates:
        logical = logical_path(candidate, cwd)
        target = namespace.resolve(logical)
        if isinstance(target, RemoteTarget):
            return None
        if isinstance(target, Refused):
            refused = refused or target.errno == errno.EACCES
            continue
        if not isinstance(target, LocalTarget):
            continue  # /chirp itself holds no programs
        if os.path.isfile(target.path):
            if os.access(target.path, os.X_OK):
                return logical, target.path
            refused = True
    if refused:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
