"""Plumbing shared by the ``sys_*`` handler families: path dispatch and rewrites."""

from __future__ import annotations

import errno
from collections.abc import Callable

from drivers import Driver
from reference_agent._loop import Rewrite
from reference_agent.agent import Agent
from reference_agent.call import NATIVE, Call, Outcome, Resolved
from reference_agent.namespace import LocalTarget, Refused, RemoteTarget, ServiceDirectory

__all__ = [
    "RemoteOp",
    "last_component",
    "must_be_directory",
    "path_call",
    "rewrite_args",
    "service_directory_answer",
]

#: The emulation of a path call on a remote target: (driver, target, resolved) -> result.
RemoteOp = Callable[[Driver, RemoteTarget, Resolved], Outcome]


def last_component(path: str) -> str:
    """What ends ``path`` as the kernel sees it: ".", "..", "/" (a trailing slash) or "".

    Logical paths are collapsed ("a/b/." is "a/b"), so the calls that the kernel
    treats differently for these endings look at the path as the program gave it.
    """
    stripped = path.rstrip("/")
    last = stripped.rpartition("/")[2]
    if last in (".", "..") or (not stripped and path):
        return last or "."  # "/" alone ends like "/."
    return "/" if path.endswith("/") else ""


def must_be_directory(driver: Driver, target: RemoteTarget, path: str) -> int | None:
    """ENOTDIR for "file/" (a trailing slash names a directory, as the kernel insists)."""
    if last_component(path) != "/":
        return None
    try:
        return None if driver.stat(target.path).is_dir() else -errno.ENOTDIR
    except FileNotFoundError:
        return None  # a name to be made ("newdir/"): the call itself decides


def rewrite_args(call: Call, replacements: dict[int, str]) -> Rewrite:
    """The same call with some path arguments replaced by local paths."""
    args: list[int | None] = [None] * 6
    for index, path in replacements.items():
        args[index] = call.scratch_string(path)
    return Rewrite(call.registers.replace(args=args))


def service_directory_answer(call: Call) -> int:
    """``/chirp`` itself: a directory one may look at but not change."""
    return -errno.EROFS


def path_call(
    agent: Agent,
    call: Call,
    dirfd: int,
    path_index: int,
    remote: RemoteOp,
    *,
    service: Callable[[Call, Resolved], int] | None = None,
    path: str | None = None,
) -> Outcome:
    """Dispatch a call on one path argument: native, rewritten, refused or remote."""
    text = call.string(path_index) if path is None else path
    if text == "":
        return None  # the kernel's own ENOENT (or AT_EMPTY_PATH, handled by the caller)
    resolved = agent.resolve(call, dirfd, text)
    target = resolved.target
    if target is NATIVE:
        return None
    if isinstance(target, Refused):
        return -target.errno
    if isinstance(target, LocalTarget):
        assert resolved.rewrite is not None
        return rewrite_args(call, {path_index: resolved.rewrite})
    if isinstance(target, ServiceDirectory):
        return service(call, resolved) if service is not None else service_directory_answer(call)
    assert isinstance(target, RemoteTarget)
    driver = agent.driver_for(call, target)
    refusal = must_be_directory(driver, target, text)
    if refusal is not None:
        return refusal
    return remote(driver, target, resolved)
